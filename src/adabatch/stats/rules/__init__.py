"""Per-layer closed forms for the hooks engine: an explicit registry, module type → rule.

A rule is looked up by the module's exact type, then by its class path among the layers of
other libraries (`EXTERNAL_RULES`: Hugging Face's Conv1D and RMSNorms), then along its MRO
for subclasses that do not override ``forward`` (a subclass with its own forward may compute
anything, so it gets the functorch fallback instead of a silently wrong closed form).

=====================  ==================================================  =============
module                 route                                               exact
=====================  ==================================================  =============
Linear (b × d)         ghost norm; P2 direct or Gram, whichever cheaper    yes
Linear (b × T × d)     batched GEMM per-sample block (or Gram / chunks)    yes
Conv1d/2d/3d           batch-as-groups conv weight gradient; unfold +      yes
                       batched GEMM when C_in·k² ≤ 32
Embedding              per (sample, token) rows via unique + index_add     yes
LayerNorm, RMSNorm     per-sample affine terms from recomputed x̂           yes
GroupNorm,             one fused backward kernel: input gradient and       yes
InstanceNorm           per-sample γ, β
BatchNorm (eval)       per-sample affine terms, running statistics         yes
BatchNorm (train)      only with batchnorm="approximate"                   approximate
HF Conv1D              the Linear routes, weight transposed                yes
HF LlamaRMSNorm (and   per-sample weight terms from recomputed x̂           yes
its copies)
MultiheadAttention     forward re-run, projections' δ watched: batched      yes
                       GEMM per-sample blocks; either layout, masks
RNN, GRU, LSTM         recurrence re-run with per-sample expanded          yes
                       weights; all outputs (h_n, c_n) tracked
anything else with     torch.func vmap(vjp) of that module (warns)         yes
own parameters
=====================  ==================================================  =============
"""

from __future__ import annotations

from torch import nn

from ...errors import RuleMismatchError
from .attention import AttentionRule
from .base import (
    LayerCall,
    LayerResult,
    LayerRule,
    MaterializingRule,
    Need,
    OwnedForwardRule,
    reduce_per_sample,
)
from .conv import ConvRule
from .embedding import EmbeddingRule
from .external import EXTERNAL_RULES
from .fallback import FunctorchFallbackRule
from .linear import LinearRule
from .norm import BatchNormRule, GroupNormRule, InstanceNormRule, LayerNormRule, RMSNormRule
from .recurrent import RECURRENT_TYPES, RecurrentRule

__all__ = [
    "EXTERNAL_RULES",
    "FALLBACK_RULE",
    "LAYER_RULES",
    "LayerCall",
    "LayerResult",
    "LayerRule",
    "MaterializingRule",
    "Need",
    "OwnedForwardRule",
    "RuleMismatchError",
    "find_rule",
    "reduce_per_sample",
]

_conv = ConvRule()
_bn = BatchNormRule()
_inorm = InstanceNormRule()

LAYER_RULES: dict[type[nn.Module], LayerRule] = {
    nn.Linear: LinearRule(),
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.Embedding: EmbeddingRule(),
    nn.LayerNorm: LayerNormRule(),
    nn.GroupNorm: GroupNormRule(),
    nn.BatchNorm1d: _bn,
    nn.BatchNorm2d: _bn,
    nn.BatchNorm3d: _bn,
    nn.SyncBatchNorm: _bn,
    nn.InstanceNorm1d: _inorm,
    nn.InstanceNorm2d: _inorm,
    nn.InstanceNorm3d: _inorm,
}
LAYER_RULES[nn.MultiheadAttention] = AttentionRule()
for _rnn in RECURRENT_TYPES:
    LAYER_RULES[_rnn] = RecurrentRule()
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    LAYER_RULES[nn.RMSNorm] = RMSNormRule()

FALLBACK_RULE: LayerRule = FunctorchFallbackRule()


def find_rule(module: nn.Module) -> LayerRule | None:
    """The registered rule for ``module``, or None if it has none (see the module docstring)."""
    cls = type(module)
    rule = LAYER_RULES.get(cls)
    if rule is not None:
        return rule
    external = EXTERNAL_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
    if external is not None:
        return external
    for base in cls.__mro__[1:]:
        if base in LAYER_RULES:
            return LAYER_RULES[base] if cls.forward is base.forward else None
    return None
