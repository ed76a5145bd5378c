"""Hugging Face models (tiny configurations built here, no downloads) against the reference oracle.

GPT-2 (Conv1D projections, position embeddings looked up with a batch of one and broadcast,
the token embedding tied to the LM head), BERT (position and token-type embeddings, LayerNorm)
and Llama (RMSNorm, rotary attention, grouped-query attention) under every engine, both loss
reductions, b ∈ {1, 2, 7}, float64: every statistic equal to the reference engine's, ``p.grad``
equal to an untracked backward, and no fallback warning from the hooks engine.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from _compare import assert_grads_close, assert_stats_close, check
from adabatch.stats import ENGINES, compute_stats

transformers = pytest.importorskip("transformers")

VOCAB, T = 40, 6


class LogitsOf(nn.Module):
    """A Hugging Face model as ``inputs → logits`` (the statistics' calling convention)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids).logits


def gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    return LogitsOf(model)


def llama() -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        attn_implementation="eager",
    )  # fmt: skip
    return LogitsOf(transformers.LlamaForCausalLM(config))


def bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=16, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )  # fmt: skip
    return LogitsOf(transformers.BertForSequenceClassification(config))


def lm_loss(reduction: str) -> Callable[[Tensor, Tensor], Tensor]:
    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        flat = logits.reshape(-1, logits.shape[-1])
        total = nn.functional.cross_entropy(flat, targets.reshape(-1), reduction="sum")
        # A mean over the batch's samples (each sample's loss is its tokens' sum).
        return total / logits.shape[0] if reduction == "mean" else total

    return loss


def cls_loss(reduction: str) -> Callable[[Tensor, Tensor], Tensor]:
    return nn.CrossEntropyLoss(reduction=reduction)


MODELS = {
    "gpt2": (gpt2, lm_loss, lambda b, g: torch.randint(0, VOCAB, (b, T), generator=g)),
    "llama": (llama, lm_loss, lambda b, g: torch.randint(0, VOCAB, (b, T), generator=g)),
    "bert": (bert, cls_loss, lambda b, g: torch.randint(0, 3, (b,), generator=g)),
}


@pytest.mark.parametrize("b", [1, 2, 7])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_hf_model_matches_reference(engine: str, name: str, reduction: str, b: int) -> None:
    make, loss_of, targets = MODELS[name]
    torch.manual_seed(0)
    model = make().double().train()
    g = torch.Generator().manual_seed(b)
    x = torch.randint(0, VOCAB, (b, T), generator=g)
    y = targets(b, g)
    loss = loss_of(reduction)
    options = dict(loss_reduction=reduction, inner_products=True, coordinates=True)
    expected = compute_stats(copy.deepcopy(model), loss, x, y, engine="reference", **options)
    plain = copy.deepcopy(model)
    loss(plain(x), y).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback: every layer has a rule
        actual = compute_stats(model, loss, x, y, engine=engine, **options)
    # Llama computes its rotary angles in float32 whatever the model's dtype: one sample at a
    # time (the reference) and a batch round them differently (1e-7 relative).
    rtol = 1e-6 if name == "llama" else 1e-8
    assert_stats_close(actual, expected, rtol=rtol)
    assert_grads_close(model, plain, rtol=rtol)


def test_every_registered_hf_rmsnorm_is_exact() -> None:
    """Each class registered by path: its rule against the reference, on the class itself."""
    import importlib

    from adabatch.stats.rules import EXTERNAL_RULES

    names = [n for n in EXTERNAL_RULES if n.endswith("RMSNorm")]
    assert len(names) >= 7
    for path in names:
        module_path, cls_name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module_path), cls_name)
        torch.manual_seed(0)
        norm = cls(8, eps=1e-5).double()
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
        model = nn.Sequential(nn.Linear(4, 8), norm, nn.Flatten(), nn.Linear(8 * 3, 2)).double()
        x = torch.randn(5, 3, 4, dtype=torch.float64)
        y = torch.randint(0, 2, (5,))
        expected = compute_stats(
            copy.deepcopy(model), nn.CrossEntropyLoss(), x, y, engine="reference"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            actual = compute_stats(model, nn.CrossEntropyLoss(), x, y)
        # These norms compute in float32 whatever the model's dtype: float32's round-off.
        assert_stats_close(actual, expected, rtol=1e-6)


def test_a_registered_layer_that_computes_something_else_is_refused() -> None:
    """A class matched by its path whose forward changed: an error, not a wrong gradient."""
    from adabatch.errors import RuleMismatchError
    from adabatch.stats import GradStatsTracker

    rms = transformers.models.llama.modeling_llama.LlamaRMSNorm(4).double()
    with torch.no_grad():
        rms.weight.fill_(2.0)
    original = type(rms).forward

    class Changed(type(rms)):  # the same path and name, another formula (as Gemma's: 1 + w)
        def forward(self, hidden_states: Tensor) -> Tensor:
            return original(self, hidden_states) / self.weight * (1 + self.weight)

    Changed.__module__, Changed.__qualname__ = type(rms).__module__, type(rms).__qualname__
    rms.__class__ = Changed
    with GradStatsTracker(rms), pytest.raises(RuleMismatchError, match="no longer computes"):
        rms(torch.randn(3, 4, dtype=torch.float64))


def test_a_broadcast_position_embedding_gets_per_sample_gradients() -> None:
    """An embedding looked up with ids of batch 1 and added to every sample (NOTE [broadcast])."""

    class WithPositions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, 8)
            self.positions = nn.Embedding(T, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, ids: Tensor) -> Tensor:
            where = torch.arange(ids.shape[1]).unsqueeze(0)  # (1, T)
            h = self.tokens(ids) + self.positions(where)
            return self.head(torch.tanh(h).mean(1))

    torch.manual_seed(0)
    check(WithPositions(), torch.randint(0, VOCAB, (5, T)), allow_fallback=False)
