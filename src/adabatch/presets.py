"""Presets: the papers' combinations of an optimizer and a batch-size policy, by name.

=================  ============================================  ==========================
preset             optimizer + policy                            paper
=================  ============================================  ==========================
adadagrad-norm     AdaGrad-Norm (global scalar) + norm test      Lau, Liu & Kolar,
                                                                 arXiv 2402.11215
adadagrad          AdaGrad (``torch.optim.Adagrad``) +           same
                   coordinate-wise norm test
=================  ============================================  ==========================

AdaGrad-type step sizes adapt to the gradient scale themselves, so the presets couple no LR
rule ("none"). The AdAdaGrad authors' code runs AdaGrad-Norm row-wise; pass
``optimizer_options={"mode": "rowwise"}`` to reproduce that.

AdaBatchGrad (Ostroukhov et al., arXiv 2402.05264, convex problems) takes the step
h_k = R/√(Σ_{t≤k}‖g_t‖²) with a norm (or inner-product) test on the batch: as we read its
abstract — no code exists — that is ``adadagrad-norm`` with ``lr`` = R, the distance to the
optimum, and a small ``initial_accumulator_value``; it has no preset of its own.

Example::

    optimizer, policy = PRESETS["adadagrad-norm"].build(
        model.parameters(), lr=8e-3, batch_size=2, max_batch_size=60000, eta=0.1
    )
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch

from .optim import AdaGradNorm
from .policies.base import BatchSizePolicy
from .policies.registry import make_policy

__all__ = ["PRESETS", "Preset"]


def _adagrad(params: Any, lr: float, **options: Any) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=lr, **options)


def _adagrad_norm(params: Any, lr: float, **options: Any) -> torch.optim.Optimizer:
    return AdaGradNorm(params, lr=lr, **options)


@dataclasses.dataclass(frozen=True)
class Preset:
    """An optimizer and a policy that a paper runs together.

    Attributes:
        name: the preset's name in `PRESETS`.
        paper: the reference.
        optimizer: builds the optimizer from (params, lr, **options).
        optimizer_options: defaults for the optimizer's options.
        policy: a name in `adabatch.policies.POLICIES`.
        policy_options: defaults for the policy's options.
        lr_rule: the LR rule to couple (see `adabatch.policies.LRCoupling`).
    """

    name: str
    paper: str
    optimizer: Callable[..., torch.optim.Optimizer]
    optimizer_options: Mapping[str, Any]
    policy: str
    policy_options: Mapping[str, Any]
    lr_rule: str = "none"

    def build(
        self,
        params: Any,
        *,
        lr: float,
        batch_size: int,
        optimizer_options: Mapping[str, Any] | None = None,
        **policy_options: Any,
    ) -> tuple[torch.optim.Optimizer, BatchSizePolicy]:
        """The optimizer over ``params`` and the policy, with the preset's defaults overridden.

        Args:
            params: the model's parameters (or parameter groups).
            lr: the step size α.
            batch_size: b₀.
            optimizer_options: overrides of the optimizer's options.
            **policy_options: overrides of the policy's options (e.g. ``eta``,
                ``max_batch_size``, ``dataset_size``).
        """
        optimizer = self.optimizer(
            params, lr, **{**self.optimizer_options, **(optimizer_options or {})}
        )
        policy = make_policy(
            self.policy, batch_size=batch_size, **{**self.policy_options, **policy_options}
        )
        return optimizer, policy


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "adadagrad-norm": Preset(
            name="adadagrad-norm",
            paper="Lau, Liu & Kolar, AdAdaGrad (arXiv 2402.11215)",
            optimizer=_adagrad_norm,
            optimizer_options={"mode": "global"},
            policy="norm-test",
            policy_options={"eta": 0.1},
        ),
        "adadagrad": Preset(
            name="adadagrad",
            paper="Lau, Liu & Kolar, AdAdaGrad (arXiv 2402.11215)",
            optimizer=_adagrad,
            optimizer_options={},
            policy="coordinate-norm-test",
            policy_options={"eta": 0.1},
        ),
    }
)
