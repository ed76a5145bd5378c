"""The DiveBatch paper's configurations, sized for one GPU with the data placed locally."""

from __future__ import annotations

from ..config import (
    Config,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PolicyConfig,
    ScheduleConfig,
    TrainConfig,
)
from .base import SGD_MOMENTUM, Suite, divebatch_methods

__all__ = ["GPU_SUITES"]


_FASHION_RESNET = Suite(
    name="fashion-mnist-resnet18",
    description="the DiveBatch comparison on Fashion-MNIST with ResNet-18 (GPU)",
    mirrors="as fashion-mnist, with ResNet-18 (CIFAR stem, GroupNorm) for 30 epochs, R = 5",
    expected="DiveBatch reaches its plateau faster in wall time on a GPU, where large batches pay",
    base=Config(
        data=DataConfig(name="fashion-mnist", augment=True),
        model=ModelConfig(name="resnet18", options={"norm": "group"}),
        optimizer=OptimizerConfig(name="sgd", lr=0.1, options=dict(SGD_MOMENTUM)),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=128),
        train=TrainConfig(epochs=30, device="auto", log_every=20, eval_batch_size=2048),
    ),
    methods=tuple(
        m
        for m in divebatch_methods(128, 2048, every=5, delta=0.1, large_lr=1.6)
        if m.label in ("sgd-128", "sgd-2048", "adabatch", "divebatch", "divebatch-rescale")
    ),
    baselines=("sgd-128", "sgd-2048"),
    target=92.0,
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
        base=Config(
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
        methods=divebatch_methods(small, 2048, every=20, delta=delta, large_lr=lr * 2048 / small),
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
    mirrors="DiveBatch Tables A and B, CIFAR-10 rows (docs/methods.md §4.1)",
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
    mirrors="DiveBatch Tables A and B, CIFAR-100 rows (docs/methods.md §4.1)",
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
        "DiveBatch Tables A and B, Tiny-ImageNet rows (docs/methods.md §4.1), at the native 64 px "
        "instead of 224 px"
    ),
    expected="DiveBatch 51.66 % vs SGD-256 55.49 %, 1.50× faster to ±1 % of its own final",
)


GPU_SUITES: tuple[Suite, ...] = (_FASHION_RESNET, _CIFAR10, _CIFAR100, _TINY)
