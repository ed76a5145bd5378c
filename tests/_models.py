"""Small models covering every layer rule, for the engine contract tests (float64-friendly)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class SeqClassifier(nn.Module):
    """Embedding + LayerNorm + Linear over a sequence, mean-pooled, then a head."""

    def __init__(
        self, vocab: int = 11, dim: int = 6, classes: int = 3, padding_idx: int | None = 0
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=padding_idx)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 5)
        self.head = nn.Linear(5, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        h = torch.tanh(self.proj(self.norm(self.embed(tokens))))
        return self.head(h.mean(1))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(4, 4, kernel_size=3, stride=2, dilation=2, groups=2, bias=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean(-1))


class SmallCNN(nn.Module):
    """Conv + GroupNorm + strided conv + Linear, in-place ReLU included."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.norm1 = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(3, 6)
        self.fc = nn.Linear(6 * 3 * 3, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu_(self.norm1(self.conv1(x)))
        h = torch.relu(self.norm2(self.conv2(h)))
        return self.fc(h.flatten(1))


class RecurrentClassifier(nn.Module):
    """An RNN/GRU/LSTM classifier reading ``h_n`` (the usual pattern) or the outputs.

    ``batch_first=False`` layers get a transposed input: the model's input stays batch-first.
    """

    def __init__(
        self,
        cell: type[nn.Module] = nn.LSTM,
        *,
        read: str = "h_n",
        batch_first: bool = True,
        **options: object,
    ) -> None:
        super().__init__()
        self.read, self.batch_first = read, batch_first
        self.rnn = cell(3, 4, batch_first=batch_first, **options)
        dirs = 2 if options.get("bidirectional") else 1
        self.head = nn.Linear(4 * dirs, 3)

    def forward(self, x: Tensor) -> Tensor:
        out, state = self.rnn(x if self.batch_first else x.transpose(0, 1))
        if self.read == "h_n":
            h_n = state[0] if isinstance(state, tuple) else state
            feats = h_n[-1] if h_n.shape[0] == 1 or self.head.in_features == 4 else None
            if feats is None:  # bidirectional: the last layer's two directions
                feats = torch.cat([h_n[-2], h_n[-1]], dim=-1)
            return self.head(feats)
        out = out if self.batch_first else out.transpose(0, 1)
        return self.head(out.mean(1))


class EncoderClassifier(nn.Module):
    """Embedding + a 2-layer nn.TransformerEncoder (attention, MLP, LayerNorm) + a head."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(11, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)
        h = self.encoder(h if self.batch_first else h.transpose(0, 1))
        return self.head((h if self.batch_first else h.transpose(0, 1)).mean(1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 3))


def frozen_mlp() -> nn.Module:
    model = mlp()
    model[0].weight.requires_grad_(False)  # a frozen weight next to a trainable bias
    for p in model[2].parameters():
        p.requires_grad_(False)  # a fully frozen layer
    return model


Case = tuple[str, Callable[[], nn.Module], Callable[[int, torch.Generator], tuple[Tensor, Tensor]]]


def _classes(n: int, k: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, k, (n,), generator=g)


CASES: list[Case] = [
    ("mlp", mlp, lambda b, g: (torch.randn(b, 5, generator=g), _classes(b, 3, g))),
    (
        "cnn-groupnorm",
        SmallCNN,
        lambda b, g: (torch.randn(b, 3, 6, 6, generator=g), _classes(b, 4, g)),
    ),
    ("conv1d", Conv1dNet, lambda b, g: (torch.randn(b, 2, 12, generator=g), _classes(b, 3, g))),
    (
        "embedding-layernorm-seq",
        SeqClassifier,
        # Tokens include the padding index 0 and repeats within a sample.
        lambda b, g: (torch.randint(0, 11, (b, 7), generator=g), _classes(b, 3, g)),
    ),
    ("frozen", frozen_mlp, lambda b, g: (torch.randn(b, 5, generator=g), _classes(b, 3, g))),
    *[
        (name, make, lambda b, g: (torch.randint(0, 11, (b, 7), generator=g), _classes(b, 3, g)))
        for name, make in [
            ("transformer-encoder", EncoderClassifier),
            ("transformer-encoder-seq-first", lambda: EncoderClassifier(batch_first=False)),
        ]
    ],
    *[
        (name, make, lambda b, g: (torch.randn(b, 5, 3, generator=g), _classes(b, 3, g)))
        for name, make in [
            ("lstm-h_n", lambda: RecurrentClassifier(nn.LSTM)),
            ("gru-output", lambda: RecurrentClassifier(nn.GRU, read="output")),
            (
                "rnn-relu-2layer-bidirectional",
                lambda: RecurrentClassifier(
                    nn.RNN, nonlinearity="relu", num_layers=2, bidirectional=True
                ),
            ),
            (
                "lstm-seq-first-2layer",
                lambda: RecurrentClassifier(nn.LSTM, batch_first=False, num_layers=2),
            ),
        ]
    ],
]

#: The cases whose models torch.func's vmap cannot run (torch's RNN kernels have no batching
#: rule): the functorch engine refuses them.
NO_VMAP = {"lstm-h_n", "gru-output", "rnn-relu-2layer-bidirectional", "lstm-seq-first-2layer"}


def loss_for(reduction: str) -> nn.Module:
    return nn.CrossEntropyLoss(reduction=reduction)
