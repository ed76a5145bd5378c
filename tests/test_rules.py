"""Every per-layer rule, its variants and the engine's special paths, against the reference."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from _compare import assert_stats_close, check
from adabatch.stats import GradStatsTracker, compute_stats
from adabatch.stats.rules import LAYER_RULES, find_rule

# A bias right before a training-mode BatchNorm has layer-level terms that sum to exactly 0
# (BatchNorm's backward removes the batch mean): its ḡ^(l) is round-off, so its layerwise
# ratio Q_l/‖ḡ^(l)‖² projects onto a round-off direction and differs between engines.
# test_layerwise_inner.py checks BatchNorm approximation without such a bias on every field.
ILL_CONDITIONED_UNDER_BN = ("layer_ratio_sum",)


class Head(nn.Module):
    """Pools any (b, C, ...) feature map into 3 logits."""

    def __init__(self, body: nn.Module, channels: int):
        super().__init__()
        self.body = body
        self.fc = nn.Linear(channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        # tanh before pooling: a normalised map averages to 0, which would zero the gradients
        return self.fc(torch.tanh(h).flatten(2).mean(-1) if h.dim() > 2 else h)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), bias=False),
        nn.Conv2d(4, 6, 3, groups=2, padding=2, dilation=2),
        nn.Conv2d(3, 4, 3, padding="same"),
        nn.Conv2d(3, 4, 4, padding="same"),  # even kernel: asymmetric padding
        nn.Conv2d(3, 4, 3, padding="valid"),
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(3, 4, 3, padding=2, padding_mode="circular"),
        nn.Conv2d(3, 4, 1),
    ],
    ids=[
        "stride",
        "rect-dilation-nobias",
        "groups",
        "same",
        "same-even",
        "valid",
        "reflect",
        "circular",
        "1x1",
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv2d_variants(conv: nn.Conv2d) -> None:
    c_in = conv.in_channels
    check(Head(conv, conv.out_channels), torch.randn(5, c_in, 7, 8))


def test_conv1d_and_conv3d() -> None:
    check(Head(nn.Conv1d(2, 3, 3, stride=2, padding=1), 3), torch.randn(4, 2, 9))
    check(Head(nn.Conv3d(2, 3, 2, padding=1), 3), torch.randn(3, 2, 4, 3, 3))


def test_linear_over_extra_dimensions() -> None:
    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))

        def forward(self, x: Tensor) -> Tensor:
            return self.body(x).mean(dim=(1, 2))

    check(Pool(), torch.randn(3, 2, 6, 4))  # (b, h, w, d): two extra dimensions
    check(Pool(), torch.randn(3, 1, 1, 4))  # T = 1 takes the ghost path


@pytest.mark.parametrize("budget", [64, 10**9], ids=["chunked", "one-block"])
def test_sequence_linear_materialised_and_chunked(budget: int) -> None:
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(6, 5)
            self.head = nn.Linear(5, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(torch.tanh(self.proj(x)).mean(1))

    x = torch.randn(6, 4, 6)
    model = Seq().double()
    y = torch.randint(0, 3, (6,))
    ref = copy.deepcopy(model)
    expected = compute_stats(
        ref,
        nn.CrossEntropyLoss(),
        x.double(),
        y,
        engine="reference",
        inner_products=True,
        coordinates=True,
    )
    with GradStatsTracker(
        model, inner_products=True, coordinates=True, max_block_bytes=budget
    ) as tr:
        nn.CrossEntropyLoss()(model(x.double()), y).backward()
        assert_stats_close(tr.pop(), expected)


def test_sequence_linear_gram_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """S2 alone on a wide layer with a short sequence and no room to materialise: Gram route."""
    from adabatch.stats.rules.linear import LinearRule

    calls = []
    original = LinearRule._gram_sq_norm
    monkeypatch.setattr(
        LinearRule, "_gram_sq_norm", staticmethod(lambda *a: calls.append(1) or original(*a))
    )

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(32, 32)

        def forward(self, x: Tensor) -> Tensor:
            return self.proj(x).mean(1)[:, :3]

    model = Seq().double()
    x = torch.randn(5, 2, 32, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    expected = compute_stats(copy.deepcopy(model), nn.CrossEntropyLoss(), x, y, engine="reference")
    with GradStatsTracker(model, max_block_bytes=64) as tr:
        nn.CrossEntropyLoss()(model(x), y).backward()
        assert_stats_close(tr.pop(), expected)
    assert calls == [1]


@pytest.mark.parametrize(
    "embedding",
    [
        nn.Embedding(9, 4),
        nn.Embedding(9, 4, padding_idx=2),
        nn.Embedding(9, 4, max_norm=1.0),
        nn.Embedding(9, 4, sparse=True),
    ],
    ids=["plain", "padding_idx", "max_norm", "sparse"],
)
def test_embedding_variants(embedding: nn.Embedding) -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = embedding
            self.fc = nn.Linear(4, 3)

        def forward(self, tokens: Tensor) -> Tensor:
            return self.fc(self.emb(tokens).mean(1))

    tokens = torch.tensor([[2, 2, 5, 1], [0, 3, 3, 3], [8, 2, 7, 7]])  # repeats and padding
    stats = check(Bag(), tokens)
    grad = stats.grad_sum["emb.weight"]
    assert grad.is_sparse == embedding.sparse
    if embedding.padding_idx is not None:
        assert float(grad.to_dense()[embedding.padding_idx].abs().sum()) == 0.0


def test_embedding_one_token_per_sample() -> None:
    class Lookup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(6, 3)

        def forward(self, ids: Tensor) -> Tensor:
            return self.emb(ids)

    check(Lookup(), torch.tensor([1, 4, 1, 0]))


def test_embedding_scale_grad_by_freq_is_refused() -> None:
    model = nn.Sequential(nn.Embedding(5, 2, scale_grad_by_freq=True))
    with pytest.raises(TypeError, match="scale_grad_by_freq=False"):
        GradStatsTracker(model)


@pytest.mark.parametrize(
    "norm, shape",
    [
        (nn.LayerNorm(4), (5, 3, 4)),
        (nn.LayerNorm((3, 4)), (5, 3, 4)),
        (nn.GroupNorm(2, 4), (5, 4, 3, 3)),
        (nn.GroupNorm(4, 4), (5, 4, 6)),
        (nn.InstanceNorm2d(4, affine=True), (5, 4, 3, 3)),
    ],
    ids=["layernorm", "layernorm-2d", "groupnorm", "groupnorm-1d", "instancenorm"],
)
def test_norm_layers(norm: nn.Module, shape: tuple[int, ...]) -> None:
    with torch.no_grad():  # non-trivial affine parameters
        for p in norm.parameters():
            p.add_(torch.randn_like(p))
    channels = shape[-1] if isinstance(norm, nn.LayerNorm) else shape[1]
    if isinstance(norm, nn.LayerNorm):
        model = nn.Sequential(norm, nn.Flatten(), nn.Linear(int(torch.tensor(shape[1:]).prod()), 3))
        check(model, torch.randn(*shape))
    else:
        check(Head(norm, channels), torch.randn(*shape))


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="nn.RMSNorm needs torch >= 2.4")
def test_rmsnorm() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.Linear(6, 3))
    check(model, torch.randn(5, 4))


def test_instancenorm_with_running_statistics_in_eval_mode() -> None:
    norm = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    model = Head(nn.Sequential(nn.Conv2d(3, 4, 3), norm), 4).eval()
    check(model, torch.randn(5, 3, 5, 5))


def test_groupnorm_inside_the_network_owns_its_input_gradient() -> None:
    """GroupNorm's rule returns the input gradient: the layers before it must still be exact."""
    model = Head(
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.GroupNorm(2, 4),
            nn.Tanh(),
            nn.Conv2d(4, 6, 1),
            nn.GroupNorm(3, 6),
        ),
        6,
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    check(model, torch.randn(5, 3, 6, 6))
    frozen = copy.deepcopy(model)
    frozen.body[1].weight.requires_grad_(False)  # γ frozen: β alone is tracked, γ still scales
    check(frozen, torch.randn(5, 3, 6, 6))


def test_batchnorm_eval_mode_is_exact() -> None:
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    model = Head(nn.Sequential(nn.Conv2d(3, 4, 3), bn), 4).eval()
    check(model, torch.randn(5, 3, 5, 5))


def test_batchnorm_training_mode_needs_opt_in() -> None:
    model = Head(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 4).double()
    x = torch.randn(5, 3, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    for engine in ("hooks", "reference", "functorch"):
        with pytest.raises(ValueError, match="GroupNorm"):
            compute_stats(copy.deepcopy(model), nn.CrossEntropyLoss(), x, y, engine=engine)


@pytest.mark.parametrize("bn", [nn.BatchNorm2d(4), nn.BatchNorm2d(4, track_running_stats=False)])
def test_batchnorm_approximation_matches_layer_level_reference(bn: nn.Module) -> None:
    model = Head(nn.Sequential(nn.Conv2d(3, 4, 3), bn, nn.ReLU(), nn.Conv2d(4, 4, 1)), 4)
    stats = check(
        model, torch.randn(6, 3, 5, 5), batchnorm="approximate", skip=ILL_CONDITIONED_UNDER_BN
    )
    assert stats.num_samples == 6


def test_batchnorm1d_approximation_on_flat_features() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    check(model, torch.randn(6, 4), batchnorm="approximate", skip=ILL_CONDITIONED_UNDER_BN)


def test_batchnorm_switched_to_train_after_attach_is_caught() -> None:
    model = Head(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 4).eval()
    tracker = GradStatsTracker(model)
    model.train()
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        model(torch.randn(2, 3, 5, 5))
    assert all(p.requires_grad for p in model.parameters())
    tracker.remove()


def test_tied_weights_take_norms_of_the_summed_contributions() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.mix = nn.Linear(4, 4)
            self.out = nn.Linear(4, 7, bias=False)
            self.out.weight = self.emb.weight  # tied input/output embedding

        def forward(self, tokens: Tensor) -> Tensor:
            h = self.emb(tokens)
            h = self.mix(torch.tanh(self.mix(h)))  # the same Linear applied twice
            return self.out(h.mean(1))

    check(Tied(), torch.randint(0, 7, (5, 3)), torch.randint(0, 7, (5,)))


class LayerScale(nn.Module):
    """A learned per-channel scale: a parameter of its own and no rule."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, dim))
        self.inner = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * torch.tanh(self.inner(x))


def test_module_without_rule_uses_functorch_fallback() -> None:
    model = nn.Sequential(nn.Linear(3, 4), LayerScale(4), nn.Linear(4, 3))
    with pytest.warns(UserWarning, match="LayerScale"):
        check(model, torch.randn(5, 3))


def test_fallback_can_be_an_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), LayerScale(4))
    with pytest.raises(TypeError, match=r"LayerScale.*no per-sample rule"):
        GradStatsTracker(model, fallback="error")


def test_multihead_attention_is_exact() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(Attn(), torch.randn(4, 5, 4))


def test_parameter_used_outside_its_module_is_an_error_not_a_wrong_number() -> None:
    class Sneaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)

        def forward(self, x: Tensor) -> Tensor:
            return F.linear(self.a(x), self.b.weight)  # b's forward never runs

    model = Sneaky()
    tracker = GradStatsTracker(model)
    with pytest.raises(
        RuntimeError, match=r"'b\.weight' received a gradient that no per-sample rule saw"
    ):
        model(torch.randn(2, 3)).sum().backward()
    tracker.remove()


def test_subclass_that_overrides_forward_gets_no_rule() -> None:
    class Scaled(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return 2.0 * super().forward(x)

    class Plain(nn.Linear):
        pass

    assert find_rule(Scaled(2, 2)) is None
    assert find_rule(Plain(2, 2)) is LAYER_RULES[nn.Linear]
    with pytest.warns(UserWarning, match="Scaled"):
        check(nn.Sequential(Scaled(3, 4), nn.Tanh(), Plain(4, 3)), torch.randn(5, 3))


def test_inplace_ops_after_layers_and_in_place_input_changes() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 9, 3)
    )
    check(model, torch.randn(4, 3, 5, 5))

    class Clobber(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: Tensor) -> Tensor:
            h = x * 1.0
            out = self.fc(h)
            h.add_(1.0)  # changes the saved input after the layer ran
            return out + h

    model = Clobber()
    tracker = GradStatsTracker(model)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        model(torch.randn(2, 3, requires_grad=True)).sum().backward()
    tracker.remove()


@settings(max_examples=25, deadline=None)
@given(
    groups=st.sampled_from([1, 2]),
    c_in_per_group=st.integers(1, 3),
    c_out_per_group=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    bias=st.booleans(),
    b=st.integers(1, 4),
)
def test_random_conv2d_configurations(
    groups: int,
    c_in_per_group: int,
    c_out_per_group: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    bias: bool,
    b: int,
) -> None:
    """Both per-sample conv routes (unfold for small fan-in, grouped kernel) on random shapes."""
    torch.manual_seed(0)
    conv = nn.Conv2d(
        c_in_per_group * groups,
        c_out_per_group * groups,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )
    check(Head(conv, conv.out_channels), torch.randn(b, conv.in_channels, 7, 6))
