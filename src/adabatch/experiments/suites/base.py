"""What a suite is: a base configuration and its methods, each a few dotted overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..config import Config, ConfigError

__all__ = ["SGD_MOMENTUM", "Method", "Suite", "divebatch_methods", "method"]


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of a suite: a label, what it is, and its overrides of the suite's base."""

    label: str
    description: str
    overrides: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Suite:
    """A comparison of methods on one task.

    Attributes:
        name: the suite's name (``adabatch compare NAME``).
        description: one line for ``adabatch list``.
        mirrors: the paper table or figure it reproduces, and what was changed.
        expected: the outcome the papers (or our measurements) lead one to expect.
        base: the configuration every method starts from.
        methods: the methods, in report order.
        baselines: labels of the methods the speed-ups are measured against.
        metric: what the methods are ranked by: "test_accuracy" or "test_loss" (the
            validation loss of a language model).
        axis: the evaluation points: "epoch", or "evaluation" (every
            ``train.eval_every`` samples or tokens).
        target: the fixed target of "time to target" (accuracy in percent, or a loss); None:
            the first baseline's final value made worse by the metric's tolerance (one point
            of accuracy, 0.02 of loss).
        hardware: "cpu" (runs here) or "gpu" (sized for one GPU; warns on a CPU).
        seeds: default number of seeds for ``adabatch compare``.
        parts: for a group of suites, their names (then ``methods`` is empty).
        workers: the processes the suite needs (``torchrun --nproc_per_node=workers``); 1:
            any number.
        gpu_scale: the suite ``adabatch compare NAME --scale=gpu`` runs instead (the same
            comparison sized for one GPU); None: none.
        runner: "trainer" (methods are `Trainer` runs of ``base``), "sparse" (the
            numpy solvers of `adabatch.sparse`: ``adabatch compare`` runs
            `adabatch.sparse.experiment.run_comparison`; no methods, no ``adabatch run``) or
            "federated" (`adabatch.local.federated_compare.run_comparison`, likewise).
    """

    name: str
    description: str
    mirrors: str
    expected: str
    base: Config = dataclasses.field(default_factory=Config)
    methods: tuple[Method, ...] = ()
    baselines: tuple[str, ...] = ()
    target: float | None = None
    metric: str = "test_accuracy"
    axis: str = "epoch"
    hardware: str = "cpu"
    seeds: int = 3
    parts: tuple[str, ...] = ()
    runner: str = "trainer"
    gpu_scale: str | None = None
    workers: int = 1

    def method(self, label: str) -> Method:
        """The method called ``label`` (error listing the valid ones)."""
        for m in self.methods:
            if m.label == label:
                return m
        raise ConfigError(
            f"suite {self.name!r} has no method {label!r}; valid: "
            f"{', '.join(m.label for m in self.methods)}"
        )

    def report_info(self) -> dict[str, Any]:
        """The ``report`` entry of each run's ``config.json``."""
        return {
            "title": f"{self.name}: {self.description}",
            "methods": [m.label for m in self.methods],
            "baselines": list(self.baselines),
            "metric": self.metric,
            "axis": self.axis,
            "target": self.target,
        }


def method(label: str, description: str, **overrides: Any) -> Method:
    """A `Method`; keyword arguments use "__" for the dot: ``policy__name`` → ``policy.name``."""
    return Method(label, description, {k.replace("__", "."): v for k, v in overrides.items()})


#: SGD with the papers' momentum and weight decay.
SGD_MOMENTUM = {"momentum": 0.9, "weight_decay": 5e-4}


def divebatch_methods(
    small: int, large: int, every: int, delta: float, large_lr: float
) -> tuple[Method, ...]:
    """The DiveBatch paper's methods (``docs/methods.md`` §2.1 "Baselines", Tables A and B)."""
    return (
        method(f"sgd-{small}", f"SGD, constant batch {small}", policy__name="constant"),
        method(f"sgd-{large}", f"SGD, constant batch {large}, base LR", policy__batch_size=large),
        method(
            f"sgd-{large}-lr",
            f"SGD, constant batch {large}, LR scaled linearly to {large_lr:g}",
            policy__batch_size=large,
            optimizer__lr=large_lr,
        ),
        method(
            "adabatch",
            f"AdaBatch schedule: ×2 every {every} epochs up to {large}",
            policy__name="schedule",
            policy__every=every,
            policy__max_batch_size=large,
        ),
        method(
            "adabatch-lr",
            f"AdaBatch schedule with LR ×2 at each doubling (every {every} epochs)",
            policy__name="schedule",
            policy__every=every,
            policy__lr_factor=2.0,
            policy__max_batch_size=large,
        ),
        method(
            "divebatch",
            f"DiveBatch δ = {delta:g}, R = {every}, cap {large}, no LR rescale",
            policy__name="divebatch",
            policy__delta=delta,
            policy__every=every,
            policy__max_batch_size=large,
        ),
        method(
            "divebatch-rescale",
            f"DiveBatch δ = {delta:g}, R = {every}, LR ×B'/B at each resize",
            policy__name="divebatch",
            policy__delta=delta,
            policy__every=every,
            policy__max_batch_size=large,
            policy__lr_rule="linear",
        ),
    )
