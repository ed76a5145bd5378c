"""The suites: each compares methods on one task, mirroring a paper's table or figure.

A `Suite` is a base `Config` and a list of `Method` s, each a few dotted overrides of it
(the policy, its options, the LR rule). Every method of every suite is also an experiment
of its own, named ``SUITE/METHOD`` (``adabatch run quick/divebatch``). A suite with ``parts``
groups other suites (``mnist`` = the MLP, logistic-regression and CNN comparisons), each
reported in its own table.

The papers' numbers and configurations are in ``docs/methods.md`` (§2.1 DiveBatch, §2.2 the
AdaBatch schedule, §2.4 AdAdaGrad); where a CPU cannot run them in reasonable time, the suite
says what it shrank. The suites are defined in `adabatch.experiments.suites.cpu`, `.gpu` and `.lm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..config import ConfigError
from .base import Method, Suite
from .cpu import CPU_SUITES
from .gpu import GPU_SUITES
from .lm import LM_SUITES
from .local import LOCAL_SUITES

__all__ = ["EXPERIMENTS", "SUITES", "Method", "Suite", "experiment", "suite"]

# The order of `adabatch list` and of the error messages.
_ORDER = (
    "quick",
    "mnist",
    "mnist-mlp",
    "mnist-logreg",
    "mnist-cnn",
    "fashion-mnist",
    "fashion-mnist-resnet18",
    "cifar10",
    "cifar100",
    "tiny-imagenet",
    "sparse",
    "lm",
    "lm-gpu",
    "local-sgd",
    "federated",
)

SUITES: Mapping[str, Suite] = MappingProxyType(
    {
        s.name: s
        for s in sorted(
            (*CPU_SUITES, *GPU_SUITES, *LM_SUITES, *LOCAL_SUITES),
            key=lambda s: _ORDER.index(s.name),
        )
    }
)

#: ``SUITE/METHOD`` → (suite, method) for every method of every suite.
EXPERIMENTS: Mapping[str, tuple[Suite, Method]] = MappingProxyType(
    {f"{s.name}/{m.label}": (s, m) for s in SUITES.values() for m in s.methods}
)


def suite(name: str) -> Suite:
    """The suite called ``name`` (error listing the valid ones)."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; valid suites: {', '.join(SUITES)}")
    return SUITES[name]


def experiment(name: str) -> tuple[Suite, Method]:
    """The experiment ``SUITE/METHOD`` (error listing the valid ones)."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    suite_name, _, label = name.partition("/")
    if suite_name in SUITES and SUITES[suite_name].parts:
        parts = SUITES[suite_name].parts
        raise ConfigError(
            f"{suite_name!r} is a group of suites ({', '.join(parts)}); run one method of a "
            f"part, e.g. {parts[0]}/{SUITES[parts[0]].methods[0].label}, or all of them with: "
            f"adabatch compare {suite_name}"
        )
    if suite_name in SUITES and SUITES[suite_name].methods:
        if not label:
            labels = ", ".join(m.label for m in SUITES[suite_name].methods)
            raise ConfigError(
                f"{name!r} is a suite; run one of its methods ({labels}) as {suite_name}/METHOD, "
                f"or compare them all with: adabatch compare {suite_name}"
            )
        SUITES[suite_name].method(label)  # raises with the valid labels
    raise ConfigError(
        f"unknown experiment {name!r}; experiments are SUITE/METHOD, e.g. quick/divebatch "
        f"(adabatch list shows them all)"
    )
