"""Adam's β₂ and AdamW's weight decay, coupled to the batch size like the learning rate.

When the batch grows from B₀ to B, `adabatch.lr_coupling` rescales the LR. Two more Adam
hyper-parameters have a natural unit that a batch change moves, and each has a named rule:

**β₂ at a fixed half-life in tokens** (``beta2="half-life"``; Marek, Lotfi, Somasundaram,
Wilson & Goldblum 2025, arXiv 2507.07101). The second-moment EMA forgets with half-life
h = ln ½ / ln β₂ *steps*, i.e. h·B·T tokens for batches of B sequences of T tokens. Holding the
half-life fixed in tokens across batch sizes gives

    β₂(B) = β₂(B₀)^(B/B₀),

so a batch 4× larger uses β₂⁴ (0.95 → 0.8145), and a smaller one a β₂ closer to 1.

**AdamW's timescale** (``weight_decay="timescale"``; Bergsma et al. 2025, "Power lines",
arXiv 2505.13738). AdamW shrinks the weights by (1 − ηλ) per step, an EMA over the updates with
a timescale of 1/(ηλ) steps, i.e. τ = B/(ηλD) as a fraction of a training set of D samples (or
tokens). Holding τ fixed when B and η change gives

    λ(B) = λ(B₀) · (B/B₀) · (η₀/η),

where η/η₀ is the LR coupling's factor (rule(B/B₀)·Π f_k): with the linear LR rule λ stays,
with the square-root rule it grows as √(B/B₀), with no LR rule as B/B₀.

Both are written into the optimizer's ``param_groups`` (``betas[1]``, ``weight_decay``), which
no LR scheduler touches, from the values the groups had when the coupling was built (the
values meant for B₀). β₁ is left alone (the paper scales β₂ only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ._validate import as_int, check_choice, check_positive

__all__ = [
    "BETA2_RULES",
    "WEIGHT_DECAY_RULES",
    "HyperparameterCoupling",
    "adamw_timescale",
    "beta2_for_batch",
    "half_life_tokens",
    "weight_decay_for_batch",
]

BETA2_RULES = ("fixed", "half-life")
WEIGHT_DECAY_RULES = ("fixed", "timescale")


def half_life_tokens(beta: float, tokens_per_step: float) -> float:
    """The EMA's half-life in tokens: ln ½ / ln β steps of ``tokens_per_step`` tokens.

    Example:
        >>> round(half_life_tokens(0.95, 512 * 1024))
        7084917
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    return math.log(0.5) / math.log(beta) * check_positive("tokens_per_step", tokens_per_step)


def beta2_for_batch(beta2: float, batch_size: int, base_batch_size: int) -> float:
    """β₂(B) = β₂(B₀)^(B/B₀): the same half-life in tokens at batch B as at B₀.

    Example:
        >>> round(beta2_for_batch(0.95, 512, 128), 6)
        0.814506
    """
    if not 0.0 < beta2 < 1.0:
        raise ValueError(f"beta2 must be in (0, 1), got {beta2}")
    ratio = as_int(batch_size, "batch_size", minimum=1) / as_int(
        base_batch_size, "base_batch_size", minimum=1
    )
    return beta2**ratio


def weight_decay_for_batch(
    weight_decay: float, batch_size: int, base_batch_size: int, lr_factor: float
) -> float:
    """λ(B) = λ(B₀)·(B/B₀)/(η/η₀): AdamW's timescale B/(ηλD) unchanged.

    Example:
        >>> weight_decay_for_batch(0.1, 512, 128, lr_factor=2.0)   # √ LR rule at 4× batch
        0.2
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    ratio = as_int(batch_size, "batch_size", minimum=1) / as_int(
        base_batch_size, "base_batch_size", minimum=1
    )
    return weight_decay * ratio / check_positive("lr_factor", lr_factor)


def adamw_timescale(
    batch_size: float, lr: float, weight_decay: float, dataset_size: float
) -> float:
    """τ = B/(ηλD): AdamW's EMA timescale as a fraction of a data set of D samples (or tokens).

    Example:
        >>> adamw_timescale(512, 1e-3, 0.1, 1e6)
        5.12
    """
    return batch_size / (lr * weight_decay * dataset_size)


class HyperparameterCoupling:
    """Rewrites β₂ and AdamW's weight decay in ``param_groups`` when the batch changes.

    Args:
        optimizer: a torch optimizer (its groups' current values are those for B₀).
        base_batch_size: B₀.
        beta2: "fixed" (leave it) or "half-life" (β₂(B₀)^(B/B₀)); needs groups with ``betas``.
        weight_decay: "fixed" or "timescale" (λ(B₀)·(B/B₀)/(η/η₀)); needs decoupled weight
            decay (``torch.optim.AdamW``, or ``Adam(decoupled_weight_decay=True)``): with an L2
            penalty there is no such timescale.

    Call `update` with the batch size and the LR coupling's factor after every change.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_batch_size: int,
        beta2: str = "fixed",
        weight_decay: str = "fixed",
    ) -> None:
        self.beta2 = check_choice("beta2 rule", beta2, BETA2_RULES)
        self.weight_decay = check_choice("weight_decay rule", weight_decay, WEIGHT_DECAY_RULES)
        self.base_batch_size = as_int(base_batch_size, "base_batch_size", minimum=1)
        self.optimizer = optimizer
        groups = optimizer.param_groups
        if self.beta2 == "half-life":
            for i, group in enumerate(groups):
                if "betas" not in group:
                    raise ValueError(
                        f"beta2='half-life' needs an Adam-type optimizer (param groups with "
                        f"'betas'); group {i} of {type(optimizer).__name__} has none"
                    )
        if self.weight_decay == "timescale" and not _decoupled(optimizer):
            raise ValueError(
                f"weight_decay='timescale' holds AdamW's timescale B/(ηλD) fixed, which needs "
                f"decoupled weight decay; {type(optimizer).__name__} adds an L2 penalty: use "
                "torch.optim.AdamW (or Adam(decoupled_weight_decay=True)), or "
                "weight_decay='fixed'"
            )
        self._beta2_0 = [float(g["betas"][1]) if "betas" in g else None for g in groups]
        self._wd_0 = [float(g.get("weight_decay", 0.0)) for g in groups]
        self.batch_size = self.base_batch_size
        self.lr_factor = 1.0

    def update(self, batch_size: int, lr_factor: float = 1.0) -> None:
        """Write the values for ``batch_size`` and the LR coupling's factor η/η₀."""
        self.batch_size = as_int(batch_size, "batch_size", minimum=1)
        self.lr_factor = check_positive("lr_factor", lr_factor)
        self._write()

    def _write(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self._wd_0):
            raise RuntimeError(
                f"the optimizer has {len(groups)} parameter groups, the coupling was built for "
                f"{len(self._wd_0)}; build a new HyperparameterCoupling after add_param_group"
            )
        for group, beta2_0, wd_0 in zip(groups, self._beta2_0, self._wd_0, strict=True):
            if self.beta2 == "half-life" and beta2_0 is not None:
                beta1 = group["betas"][0]
                beta2 = beta2_for_batch(beta2_0, self.batch_size, self.base_batch_size)
                group["betas"] = (beta1, beta2)
            if self.weight_decay == "timescale":
                group["weight_decay"] = weight_decay_for_batch(
                    wd_0, self.batch_size, self.base_batch_size, self.lr_factor
                )

    def state_dict(self) -> dict[str, Any]:
        """The rules, B₀, the reference values and the batch / LR factor in force."""
        return {
            "beta2": self.beta2,
            "weight_decay": self.weight_decay,
            "base_batch_size": self.base_batch_size,
            "beta2_0": list(self._beta2_0),
            "weight_decay_0": list(self._wd_0),
            "batch_size": self.batch_size,
            "lr_factor": self.lr_factor,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output (same rules and B₀) and rewrite the groups."""
        for key in ("beta2", "weight_decay", "base_batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"the hyper-parameter coupling state has {key}={state[key]!r}, this one "
                    f"{getattr(self, key)!r}: build it with the checkpoint's settings"
                )
        if len(state["weight_decay_0"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"the state has {len(state['weight_decay_0'])} parameter groups, the optimizer "
                f"{len(self.optimizer.param_groups)}"
            )
        self._beta2_0 = [None if b is None else float(b) for b in state["beta2_0"]]
        self._wd_0 = [float(w) for w in state["weight_decay_0"]]
        self.update(int(state["batch_size"]), float(state["lr_factor"]))


def _decoupled(optimizer: torch.optim.Optimizer) -> bool:
    if isinstance(optimizer, torch.optim.AdamW):
        return True
    return all(bool(g.get("decoupled_weight_decay", False)) for g in optimizer.param_groups)
