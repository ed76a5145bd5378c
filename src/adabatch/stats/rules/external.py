"""Rules for layers of other libraries, registered by their exact class path (no import needed).

Hugging Face ``transformers`` writes two layers of its own that the common models use:

* ``Conv1D`` (GPT-2's projections): y = x W + b with W stored (d_in, d_out) — a Linear with
  the weight transposed, so the Linear rule applies and its weight terms are transposed back.
* ``LlamaRMSNorm`` and the classes that copy its forward (Mistral, Mixtral, Qwen2, Qwen3,
  Phi-3, Granite): y = w ⊙ x̂ with x̂ = x / √(mean(x²) + ε) computed in float32 and cast back to
  the input dtype, ε = ``variance_epsilon``; the per-sample gradient of w is Σₜ δᵢₜ ⊙ x̂ᵢₜ.
  (Gemma's and OLMo-2's RMSNorms compute other things and are left to the fallback.)

A class is matched by its module path and name, never by a name pattern: a library change
that renames or moves a class just loses the rule (the fallback takes over, exactly). In case a
class kept its name but changed its formula, each rule checks its own forward against the
module's output on the first call of every module instance (`verify`), and refuses to go on
if they differ — better an error than a silently wrong gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import RuleMismatchError
from .base import LayerCall, LayerResult, MaterializingRule, Need, RuleBase
from .linear import LinearRule

__all__ = ["EXTERNAL_RULES", "HFConv1DRule", "HFRMSNormRule"]


def _mismatch(module: nn.Module, what: str) -> RuleMismatchError:
    cls = type(module)
    return RuleMismatchError(
        f"adabatch: {cls.__module__}.{cls.__qualname__} no longer computes {what}, which its "
        "per-sample rule assumes (a changed library version?): remove its entry from "
        "adabatch.stats.rules.EXTERNAL_RULES to use the exact fallback, and report it"
    )


def _transposed(names: tuple[str, ...], tensors: list[Tensor] | None, dim: int) -> Any:
    if tensors is None:
        return None
    return [
        t.transpose(dim, dim + 1) if n == "weight" else t
        for n, t in zip(names, tensors, strict=True)
    ]


class HFConv1DRule(RuleBase):
    """``transformers.pytorch_utils.Conv1D``: the Linear rule with the weight transposed."""

    def __init__(self) -> None:
        self._linear = LinearRule()

    def verify(self, module: nn.Module, inputs: Tensor, output: Tensor) -> None:
        """Raise if ``output`` is not inputs @ weight + bias (once per module)."""
        expected = torch.matmul(inputs, module.weight) + module.bias  # type: ignore[operator]
        if not torch.allclose(output, expected, rtol=1e-3, atol=1e-5):
            raise _mismatch(module, "x @ weight + bias")

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        return _transposed(call.names, self._linear.per_sample(call, rows), 1)

    def compute(self, call: LayerCall, need: Need) -> LayerResult:  # noqa: D102
        # The scalar terms do not depend on the layout; the summed gradient and Σᵢ gᵢ⊙gᵢ
        # come back in Linear's (d_out, d_in) and are transposed to Conv1D's (d_in, d_out).
        result = self._linear.compute(call, need)
        result.grads = _transposed(call.names, result.grads, 0)
        result.coord_sq = _transposed(call.names, result.coord_sq, 0)
        return result


def _hf_rms_xhat(a: Tensor, eps: float) -> Tensor:
    h = a.to(torch.float32)
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(a.dtype)


class HFRMSNormRule(MaterializingRule):
    """``LlamaRMSNorm`` and its copies: y = w ⊙ x̂, x̂ in float32 cast back (module docstring)."""

    def verify(self, module: nn.Module, inputs: Tensor, output: Tensor) -> None:
        """Raise if ``output`` is not weight ⊙ x̂ (once per module)."""
        xhat = _hf_rms_xhat(inputs.detach(), module.variance_epsilon)  # type: ignore[arg-type]
        expected = module.weight * xhat
        if not torch.allclose(output, expected, rtol=1e-3, atol=1e-5):
            raise _mismatch(module, "weight * x / sqrt(mean(x^2) + variance_epsilon)")

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        assert call.grad_output is not None
        a = call.inputs[rows]
        xhat = _hf_rms_xhat(a, call.module.variance_epsilon)  # type: ignore[arg-type]
        d = call.grad_output[rows]
        dims = tuple(range(1, d.dim() - 1))
        t = d * xhat
        return [t.sum(dim=dims) if dims else t]


_HF_RMS = HFRMSNormRule()

#: "module.path.ClassName" → rule, for classes of libraries adabatch does not import.
EXTERNAL_RULES: Mapping[str, Any] = {
    "transformers.pytorch_utils.Conv1D": HFConv1DRule(),
    **{
        f"transformers.models.{pkg}.modeling_{pkg}.{cls}RMSNorm": _HF_RMS
        for pkg, cls in [
            ("llama", "Llama"),
            ("mistral", "Mistral"),
            ("mixtral", "Mixtral"),
            ("qwen2", "Qwen2"),
            ("qwen3", "Qwen3"),
            ("phi3", "Phi3"),
            ("granite", "Granite"),
        ]
    },
}
