"""The suites: each compares methods on one task, mirroring a paper's table or figure.

A `Suite` is a base `Config` and a list of `Method` s, each a few dotted overrides of it
(the policy, its options, the LR rule). Every method of every suite is also an experiment
of its own, named ``SUITE/METHOD`` (``adabatch run quick/divebatch``). A suite with ``parts``
groups other suites (``mnist`` = the MLP, logistic-regression and CNN comparisons), each
reported in its own table.

The papers' numbers and configurations are in ``../shared/docs/methods.md`` (§2.1 DiveBatch,
§2.2 the AdaBatch schedule, §2.4 AdAdaGrad); where a CPU cannot run them in reasonable time,
the suite says what it shrank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PolicyConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = ["EXPERIMENTS", "SUITES", "Method", "Suite", "experiment", "suite"]


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
        target_accuracy: the fixed target (percent) of "time to target"; None: the first
            baseline's final accuracy minus one point.
        hardware: "cpu" (runs here) or "gpu" (sized for one GPU; warns on a CPU).
        seeds: default number of seeds for ``adabatch compare``.
        parts: for a group of suites, their names (then ``methods`` is empty).
        runner: "trainer" (methods are `Trainer` runs of ``base``) or "sparse" (the
            numpy solvers of `adabatch.sparse`: ``adabatch compare`` runs
            `adabatch.sparse.experiment.run_comparison`; no methods, no ``adabatch run``).
    """

    name: str
    description: str
    mirrors: str
    expected: str
    base: Config = dataclasses.field(default_factory=Config)
    methods: tuple[Method, ...] = ()
    baselines: tuple[str, ...] = ()
    target_accuracy: float | None = None
    hardware: str = "cpu"
    seeds: int = 3
    parts: tuple[str, ...] = ()
    runner: str = "trainer"

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
            "target_accuracy": self.target_accuracy,
        }


def _config(**sections: Any) -> Config:
    return Config(**sections)


def _m(label: str, description: str, **overrides: Any) -> Method:
    # keyword arguments use "__" for the dot: policy__name → policy.name
    return Method(label, description, {k.replace("__", "."): v for k, v in overrides.items()})


# ---------------------------------------------------------------------- quick (make demo)
_QUICK = Suite(
    name="quick",
    description="the main job: five methods on generated images, an MLP, ~2 minutes on a CPU",
    mirrors=(
        "the shape of the DiveBatch comparison (methods.md §4.1, Table A: small- and large-batch "
        "SGD, the AdaBatch doubling schedule, DiveBatch) plus the AdAdaGrad norm test, on data "
        "generated in process (16×16 smoothed-noise images labelled by a random CNN teacher) "
        "so that nothing is downloaded"
    ),
    expected=(
        "small-batch SGD is the most accurate per epoch but slowest per epoch; large-batch "
        "SGD runs epochs fastest but learns least per sample and ends lowest; the adaptive "
        "methods start small (fast progress per sample) and grow the batch once the gradient "
        "noise allows it, reaching the target accuracy in less wall time than small-batch SGD "
        "at close to its final accuracy"
    ),
    base=_config(
        data=DataConfig(name="synthetic-images", options={"num_train": 50000, "num_test": 5000}),
        model=ModelConfig(name="mlp", options={"hidden": (256,)}),
        optimizer=OptimizerConfig(name="sgd", lr=0.05),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=16),
        train=TrainConfig(epochs=12, log_every=25),
    ),
    methods=(
        _m("sgd-small", "SGD, constant batch 16", policy__name="constant"),
        _m("sgd-large", "SGD, constant batch 512", policy__name="constant", policy__batch_size=512),
        _m(
            "adabatch",
            "AdaBatch schedule: batch ×2 every 2 epochs (16 → 512)",
            policy__name="schedule",
            policy__every=2,
            policy__factor=2.0,
            policy__max_batch_size=512,
        ),
        _m(
            # N·Δ̂ is ~10⁴ here (the paper's CIFAR runs: ~10²–10³), so δ is scaled down to
            # make the first resize land below the cap instead of jumping straight to it.
            "divebatch",
            "DiveBatch: B ← ⌊δNΔ̂⌋ every 2 epochs, δ = 0.001, cap 512",
            policy__name="divebatch",
            policy__delta=0.001,
            policy__every=2,
            policy__max_batch_size=512,
        ),
        _m(
            "norm-test",
            "norm test η = 1 every 10 steps, cap 512",
            policy__name="norm-test",
            policy__eta=1.0,
            policy__interval=10,
            policy__max_batch_size=512,
        ),
    ),
    baselines=("sgd-small", "sgd-large"),
    target_accuracy=None,
)

# ---------------------------------------------------------------------- MNIST
_MNIST_MLP = Suite(
    name="mnist-mlp",
    description="DiveBatch vs SGD on the MNIST MLP 784-512-10 (wall-clock speed-up on a CPU)",
    mirrors=(
        "DiveBatch Table A's comparison (SGD small / large batch, AdaBatch doubling, DiveBatch) "
        "on MNIST with an MLP, where this CPU's throughput grows ~3× from b = 32 to b = 512; "
        "plus the step-window DiveBatch with the paper's linear LR rescale, and SGD-128 with a "
        "linearly scaled LR as the tuned fixed-batch baseline"
    ),
    expected=(
        "the paper's epoch-window DiveBatch gains little here (it measures whole epochs at "
        "b = 32, and without an LR coupling b = 512 learns slowly per sample); the step-window "
        "DiveBatch with the LR rescale reaches SGD-32's 98 % about 2× sooner at the same final "
        "accuracy; SGD-128 with the linearly scaled LR, tuned by hand, is as fast or faster: "
        "on this easy problem a batch of 128 is already below the critical batch size"
    ),
    base=_config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="mlp", options={"hidden": (512,)}),
        optimizer=OptimizerConfig(name="sgd", lr=0.1),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=32),
        train=TrainConfig(epochs=12, log_every=50),
    ),
    methods=(
        _m("sgd-small", "SGD, constant batch 32, LR 0.1", policy__name="constant"),
        _m("sgd-large", "SGD, constant batch 512, LR 0.1", policy__batch_size=512),
        _m(
            "sgd-128-lr",
            "SGD, constant batch 128, LR 0.4 (linearly scaled)",
            policy__batch_size=128,
            optimizer__lr=0.4,
        ),
        _m(
            "adabatch",
            "AdaBatch schedule: ×2 every 2 epochs (32 → 512)",
            policy__name="schedule",
            policy__every=2,
            policy__max_batch_size=512,
        ),
        _m(
            "divebatch",
            "DiveBatch as in the paper: δ = 0.01, R = 2 epochs, cap 512",
            policy__name="divebatch",
            policy__delta=0.01,
            policy__every=2,
            policy__max_batch_size=512,
        ),
        _m(
            # Linear rescaling is stable up to B = 128 here (LR 0.4); at 256 (LR 0.8) and 512
            # (LR 1.6) it loses 0.7 and 5 points (BENCHMARKS.md), hence the cap.
            "divebatch-window",
            "DiveBatch every 300 steps from the last 100, δ = 0.01, cap 128, LR × B'/B",
            policy__name="divebatch",
            policy__delta=0.01,
            policy__every_steps=300,
            policy__window_steps=100,
            policy__max_batch_size=128,
            policy__lr_rule="linear",
        ),
    ),
    baselines=("sgd-small", "sgd-large", "sgd-128-lr"),
    target_accuracy=98.0,
)

_MNIST_LOGREG = Suite(
    name="mnist-logreg",
    description="AdAdaGrad: logistic regression, AdaGrad lr 8e-3, norm test η = 0.1, b 2 → 60000",
    mirrors=(
        "AdAdaGrad's MNIST logistic-regression run (methods.md §2.4: AdaGrad, lr 8e-3, "
        "b₀ = 2 → 60000, norm test η = 0.1, 6e6 samples); shortened to 10 epochs (6e5 samples) "
        "on a CPU (--epochs=100 for the paper's budget)"
    ),
    expected=(
        "the norm test grows the batch by orders of magnitude within the first epochs and "
        "reaches the small-batch accuracy in a fraction of its steps"
    ),
    base=_config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="logistic"),
        optimizer=OptimizerConfig(name="adagrad", lr=8e-3),
        policy=PolicyConfig(name="constant", batch_size=2),
        train=TrainConfig(epochs=10, log_every=500),
    ),
    methods=(
        _m("adagrad-2", "AdaGrad, constant batch 2", policy__name="constant"),
        _m("adagrad-128", "AdaGrad, constant batch 128", policy__batch_size=128),
        _m(
            "adadagrad-norm-test",
            "AdAdaGrad: AdaGrad + norm test η = 0.1 every step, b 2 → 60000",
            policy__name="norm-test",
            policy__eta=0.1,
            policy__max_batch_size=60000,
        ),
    ),
    baselines=("adagrad-2", "adagrad-128"),
    target_accuracy=91.0,
)

_MNIST_CNN = Suite(
    name="mnist-cnn",
    description="AdAdaGrad: the 2-conv CNN, AdaGrad, norm test η = 0.1, b 16 → 60000",
    mirrors=(
        "AdAdaGrad's MNIST CNN run (methods.md §2.4: 2-conv CNN, AdaGrad lr ≈ 5e-2, b₀ = 16 → "
        "60000, norm test η = 0.1); 3 epochs on a CPU instead of the paper's 6e6 samples"
    ),
    expected=(
        "the norm test reaches the constant-16 accuracy in far fewer steps; on a CPU the CNN's "
        "throughput is flat above b = 128, so its wall-clock gain is small"
    ),
    base=_config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="small-cnn"),
        optimizer=OptimizerConfig(name="adagrad", lr=5e-2),
        policy=PolicyConfig(name="constant", batch_size=16),
        train=TrainConfig(epochs=3, log_every=50, max_physical_batch_size=1024),
    ),
    methods=(
        _m("adagrad-16", "AdaGrad, constant batch 16", policy__name="constant"),
        _m("adagrad-512", "AdaGrad, constant batch 512", policy__batch_size=512),
        _m(
            "adadagrad-norm-test",
            "AdAdaGrad: AdaGrad + norm test η = 0.1 every 10 steps, b 16 → 60000",
            policy__name="norm-test",
            policy__eta=0.1,
            policy__interval=10,
            policy__max_batch_size=60000,
        ),
    ),
    baselines=("adagrad-16", "adagrad-512"),
    target_accuracy=98.0,
)

_MNIST = Suite(
    name="mnist",
    description="the three MNIST comparisons: mnist-mlp, mnist-logreg, mnist-cnn",
    mirrors="AdAdaGrad's MNIST experiments and the DiveBatch comparison on the MLP",
    expected="see each part",
    parts=("mnist-mlp", "mnist-logreg", "mnist-cnn"),
    seeds=3,
)

# ---------------------------------------------------------------------- DiveBatch
_SGD_M = {"momentum": 0.9, "weight_decay": 5e-4}


def _divebatch_methods(
    small: int, large: int, every: int, delta: float, large_lr: float
) -> tuple[Method, ...]:
    """The DiveBatch paper's methods (methods.md §2.1 "Baselines", Tables A and B)."""
    return (
        _m(f"sgd-{small}", f"SGD, constant batch {small}", policy__name="constant"),
        _m(f"sgd-{large}", f"SGD, constant batch {large}, base LR", policy__batch_size=large),
        _m(
            f"sgd-{large}-lr",
            f"SGD, constant batch {large}, LR scaled linearly to {large_lr:g}",
            policy__batch_size=large,
            optimizer__lr=large_lr,
        ),
        _m(
            "adabatch",
            f"AdaBatch schedule: ×2 every {every} epochs up to {large}",
            policy__name="schedule",
            policy__every=every,
            policy__max_batch_size=large,
        ),
        _m(
            "adabatch-lr",
            f"AdaBatch schedule with LR ×2 at each doubling (every {every} epochs)",
            policy__name="schedule",
            policy__every=every,
            policy__lr_factor=2.0,
            policy__max_batch_size=large,
        ),
        _m(
            "divebatch",
            f"DiveBatch δ = {delta:g}, R = {every}, cap {large}, no LR rescale",
            policy__name="divebatch",
            policy__delta=delta,
            policy__every=every,
            policy__max_batch_size=large,
        ),
        _m(
            "divebatch-rescale",
            f"DiveBatch δ = {delta:g}, R = {every}, LR ×B'/B at each resize",
            policy__name="divebatch",
            policy__delta=delta,
            policy__every=every,
            policy__max_batch_size=large,
            policy__lr_rule="linear",
        ),
    )


_FASHION = Suite(
    name="fashion-mnist",
    description="the DiveBatch comparison on Fashion-MNIST with a CPU-sized CNN",
    mirrors=(
        "DiveBatch Tables A/B (methods.md §4.1) on Fashion-MNIST: SGD-128, SGD-2048, the "
        "AdaBatch doubling schedule and DiveBatch with and without LR rescale; a narrow 2-conv "
        "CNN (16/32 channels) and 12 epochs with R = 3 instead of ResNet-18 for 200 epochs"
    ),
    expected=(
        "DiveBatch and AdaBatch reach their plateau in fewer steps and samples than SGD-128; "
        "on this CPU the CNN's throughput is flat above b = 128, so wall-clock gains are small; "
        "SGD-2048 with the base LR ends lowest; the paper's linear LR rescale (×16 to 0.8 with "
        "momentum 0.9) diverges in this CNN without normalisation layers"
    ),
    base=_config(
        data=DataConfig(name="fashion-mnist"),
        model=ModelConfig(name="small-cnn", options={"channels": (16, 32), "hidden": 64}),
        optimizer=OptimizerConfig(name="sgd", lr=0.05, options=dict(_SGD_M)),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=128),
        train=TrainConfig(epochs=12, log_every=20, max_physical_batch_size=512),
    ),
    methods=tuple(
        m
        for m in _divebatch_methods(128, 2048, every=3, delta=0.1, large_lr=0.8)
        if m.label in ("sgd-128", "sgd-2048", "adabatch", "divebatch", "divebatch-rescale")
    ),
    baselines=("sgd-128", "sgd-2048"),
    target_accuracy=91.0,
    seeds=3,
)

_FASHION_RESNET = Suite(
    name="fashion-mnist-resnet18",
    description="the DiveBatch comparison on Fashion-MNIST with ResNet-18 (GPU)",
    mirrors="as fashion-mnist, with ResNet-18 (CIFAR stem, GroupNorm) for 30 epochs, R = 5",
    expected="DiveBatch reaches its plateau faster in wall time on a GPU, where large batches pay",
    base=_config(
        data=DataConfig(name="fashion-mnist", augment=True),
        model=ModelConfig(name="resnet18", options={"norm": "group"}),
        optimizer=OptimizerConfig(name="sgd", lr=0.1, options=dict(_SGD_M)),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=128),
        train=TrainConfig(epochs=30, device="auto", log_every=20, eval_batch_size=2048),
    ),
    methods=tuple(
        m
        for m in _divebatch_methods(128, 2048, every=5, delta=0.1, large_lr=1.6)
        if m.label in ("sgd-128", "sgd-2048", "adabatch", "divebatch", "divebatch-rescale")
    ),
    baselines=("sgd-128", "sgd-2048"),
    target_accuracy=92.0,
    hardware="gpu",
)


def _paper_suite(
    name: str,
    data: str,
    model: str,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    schedule: ScheduleConfig,
    small: int,
    delta: float,
    mirrors: str,
    expected: str,
) -> Suite:
    return Suite(
        name=name,
        description=f"DiveBatch paper: {model} on {data}, {epochs} epochs (GPU, local data)",
        mirrors=mirrors,
        expected=expected,
        base=_config(
            data=DataConfig(name=data, augment=True),
            # BatchNorm as in the paper; per-sample norms through it are the authors'
            # approximation (BN in eval mode for the statistics).
            model=ModelConfig(name=model, options={"norm": "batch"}),
            optimizer=OptimizerConfig(
                name="sgd", lr=lr, options={"momentum": 0.9, "weight_decay": weight_decay}
            ),
            schedule=schedule,
            policy=PolicyConfig(name="constant", batch_size=small),
            train=TrainConfig(
                epochs=epochs,
                device="auto",
                log_every=50,
                batchnorm="approximate",
                eval_batch_size=2048,
                max_physical_batch_size=2048,
            ),
        ),
        methods=_divebatch_methods(small, 2048, every=20, delta=delta, large_lr=lr * 2048 / small),
        baselines=(f"sgd-{small}", "sgd-2048"),
        hardware="gpu",
    )


_CIFAR10 = _paper_suite(
    "cifar10",
    "cifar10",
    "resnet18",
    epochs=200,
    lr=0.1,
    weight_decay=5e-4,
    schedule=ScheduleConfig(name="cosine", options={"t_max": 200}),
    small=128,
    delta=0.1,
    mirrors="DiveBatch Tables A and B, CIFAR-10 rows (methods.md §4.1)",
    expected="DiveBatch 93.82 % (no rescale) reaching ±1 % of its final 5.0× faster than SGD-128",
)
_CIFAR100 = _paper_suite(
    "cifar100",
    "cifar100",
    "resnet18",
    epochs=200,
    lr=0.1,
    weight_decay=5e-4,
    schedule=ScheduleConfig(
        name="multistep", warmup_epochs=1, options={"milestones": (60, 120, 160), "gamma": 0.2}
    ),
    small=128,
    delta=0.01,
    mirrors="DiveBatch Tables A and B, CIFAR-100 rows (methods.md §4.1)",
    expected="DiveBatch 71.75 % vs SGD-128 74.92 %, 2.36× faster to ±1 % of its own final",
)
_TINY = _paper_suite(
    "tiny-imagenet",
    "tiny-imagenet",
    "resnet18-tiny",
    epochs=90,
    lr=0.01,
    weight_decay=1e-4,
    schedule=ScheduleConfig(name="step", options={"step_size": 30, "gamma": 0.1}),
    small=256,
    delta=0.01,
    mirrors=(
        "DiveBatch Tables A and B, Tiny-ImageNet rows (methods.md §4.1), at the native 64 px "
        "instead of 224 px"
    ),
    expected="DiveBatch 51.66 % vs SGD-256 55.49 %, 1.50× faster to ±1 % of its own final",
)

_SPARSE = Suite(
    name="sparse",
    description="AdaBatch (Défossez & Bach): sparse logistic regression, loss after 2 epochs "
    "vs batch size",
    mirrors=(
        "Défossez & Bach's sample-efficiency claim (methods.md §2.3): sequential mini-batch SGD "
        "on Zipf-sparse logistic regression (10⁵ × 10⁵, 30 nonzeros per row) for b = 1 … 512, "
        "mean aggregation vs AdaBatch at the same single-sample step, and the mean at step γ·b; "
        "the parallel, Hogwild! and SVRG comparisons are in benchmarks/sparse_adabatch.py. "
        "Options: --n, --d, --nnz, --epochs, --step"
    ),
    expected=(
        "at a fixed sample budget the mean's loss grows with b (rare features barely move), "
        "the mean at γ·b overshoots and diverges for large b, and AdaBatch's loss does not "
        "degrade (measured: it improves from b = 1 to 512, BENCHMARKS.md)"
    ),
    runner="sparse",
)

SUITES: Mapping[str, Suite] = MappingProxyType(
    {
        s.name: s
        for s in (
            _QUICK,
            _MNIST,
            _MNIST_MLP,
            _MNIST_LOGREG,
            _MNIST_CNN,
            _FASHION,
            _FASHION_RESNET,
            _CIFAR10,
            _CIFAR100,
            _TINY,
            _SPARSE,
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
