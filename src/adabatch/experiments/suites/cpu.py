"""The suites that run on a 2-core CPU: the demo, MNIST, Fashion-MNIST, sparse AdaBatch."""

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
from .base import SGD_MOMENTUM, Suite, divebatch_methods, method

__all__ = ["CPU_SUITES"]


# ---------------------------------------------------------------------- quick (make demo)
_QUICK = Suite(
    name="quick",
    description="the main job: five methods on generated images, an MLP, ~2 minutes on a CPU",
    mirrors=(
        "the shape of the DiveBatch comparison (docs/methods.md §4.1, Table A: small- and "
        "large-batch SGD, the AdaBatch doubling schedule, DiveBatch) plus the AdAdaGrad norm "
        "test, on data generated in process (16×16 smoothed-noise images labelled by a random "
        "CNN teacher) so that nothing is downloaded"
    ),
    expected=(
        "small-batch SGD is the most accurate per epoch but slowest per epoch; large-batch "
        "SGD runs epochs fastest but learns least per sample and ends lowest; the adaptive "
        "methods start small (fast progress per sample) and grow the batch once the gradient "
        "noise allows it, reaching the target accuracy in less wall time than small-batch SGD "
        "at close to its final accuracy"
    ),
    base=Config(
        data=DataConfig(name="synthetic-images", options={"num_train": 50000, "num_test": 5000}),
        model=ModelConfig(name="mlp", options={"hidden": (256,)}),
        optimizer=OptimizerConfig(name="sgd", lr=0.05),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=16),
        train=TrainConfig(epochs=12, log_every=25),
    ),
    methods=(
        method("sgd-small", "SGD, constant batch 16", policy__name="constant"),
        method(
            "sgd-large", "SGD, constant batch 512", policy__name="constant", policy__batch_size=512
        ),
        method(
            "adabatch",
            "AdaBatch schedule: batch ×2 every 2 epochs (16 → 512)",
            policy__name="schedule",
            policy__every=2,
            policy__factor=2.0,
            policy__max_batch_size=512,
        ),
        method(
            # N·Δ̂ is ~10⁴ here (the paper's CIFAR runs: ~10²–10³), so δ is scaled down to
            # make the first resize land below the cap instead of jumping straight to it.
            "divebatch",
            "DiveBatch: B ← ⌊δNΔ̂⌋ every 2 epochs, δ = 0.001, cap 512",
            policy__name="divebatch",
            policy__delta=0.001,
            policy__every=2,
            policy__max_batch_size=512,
        ),
        method(
            "norm-test",
            "norm test η = 1 every 10 steps, cap 512",
            policy__name="norm-test",
            policy__eta=1.0,
            policy__interval=10,
            policy__max_batch_size=512,
        ),
    ),
    baselines=("sgd-small", "sgd-large"),
    target=None,
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
    base=Config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="mlp", options={"hidden": (512,)}),
        optimizer=OptimizerConfig(name="sgd", lr=0.1),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=32),
        train=TrainConfig(epochs=12, log_every=50),
    ),
    methods=(
        method("sgd-small", "SGD, constant batch 32, LR 0.1", policy__name="constant"),
        method("sgd-large", "SGD, constant batch 512, LR 0.1", policy__batch_size=512),
        method(
            "sgd-128-lr",
            "SGD, constant batch 128, LR 0.4 (linearly scaled)",
            policy__batch_size=128,
            optimizer__lr=0.4,
        ),
        method(
            "adabatch",
            "AdaBatch schedule: ×2 every 2 epochs (32 → 512)",
            policy__name="schedule",
            policy__every=2,
            policy__max_batch_size=512,
        ),
        method(
            "divebatch",
            "DiveBatch as in the paper: δ = 0.01, R = 2 epochs, cap 512",
            policy__name="divebatch",
            policy__delta=0.01,
            policy__every=2,
            policy__max_batch_size=512,
        ),
        method(
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
    target=98.0,
)

_MNIST_LOGREG = Suite(
    name="mnist-logreg",
    description="AdAdaGrad: logistic regression, AdaGrad lr 8e-3, norm test η = 0.1, b 2 → 60000",
    mirrors=(
        "AdAdaGrad's MNIST logistic-regression run (docs/methods.md §2.4: AdaGrad, lr 8e-3, "
        "b₀ = 2 → 60000, norm test η = 0.1, 6e6 samples); shortened to 10 epochs (6e5 samples) "
        "on a CPU (--epochs=100 for the paper's budget)"
    ),
    expected=(
        "the norm test grows the batch by orders of magnitude within the first epochs and "
        "reaches the small-batch accuracy in a fraction of its steps"
    ),
    base=Config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="logistic"),
        optimizer=OptimizerConfig(name="adagrad", lr=8e-3),
        policy=PolicyConfig(name="constant", batch_size=2),
        train=TrainConfig(epochs=10, log_every=500),
    ),
    methods=(
        method("adagrad-2", "AdaGrad, constant batch 2", policy__name="constant"),
        method("adagrad-128", "AdaGrad, constant batch 128", policy__batch_size=128),
        method(
            "adadagrad-norm-test",
            "AdAdaGrad: AdaGrad + norm test η = 0.1 every step, b 2 → 60000",
            policy__name="norm-test",
            policy__eta=0.1,
            policy__max_batch_size=60000,
        ),
    ),
    baselines=("adagrad-2", "adagrad-128"),
    target=91.0,
)

_MNIST_CNN = Suite(
    name="mnist-cnn",
    description="AdAdaGrad: the 2-conv CNN, AdaGrad, norm test η = 0.1, b 16 → 60000",
    mirrors=(
        "AdAdaGrad's MNIST CNN run (docs/methods.md §2.4: 2-conv CNN, AdaGrad lr ≈ 5e-2, b₀ = 16 → "
        "60000, norm test η = 0.1); 3 epochs on a CPU instead of the paper's 6e6 samples"
    ),
    expected=(
        "the norm test reaches the constant-16 accuracy in far fewer steps; on a CPU the CNN's "
        "throughput is flat above b = 128, so its wall-clock gain is small"
    ),
    base=Config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="small-cnn"),
        optimizer=OptimizerConfig(name="adagrad", lr=5e-2),
        policy=PolicyConfig(name="constant", batch_size=16),
        train=TrainConfig(epochs=3, log_every=50, max_physical_batch_size=1024),
    ),
    methods=(
        method("adagrad-16", "AdaGrad, constant batch 16", policy__name="constant"),
        method("adagrad-512", "AdaGrad, constant batch 512", policy__batch_size=512),
        method(
            "adadagrad-norm-test",
            "AdAdaGrad: AdaGrad + norm test η = 0.1 every 10 steps, b 16 → 60000",
            policy__name="norm-test",
            policy__eta=0.1,
            policy__interval=10,
            policy__max_batch_size=60000,
        ),
    ),
    baselines=("adagrad-16", "adagrad-512"),
    target=98.0,
)

_MNIST = Suite(
    name="mnist",
    description="the three MNIST comparisons: mnist-mlp, mnist-logreg, mnist-cnn",
    mirrors="AdAdaGrad's MNIST experiments and the DiveBatch comparison on the MLP",
    expected="see each part",
    parts=("mnist-mlp", "mnist-logreg", "mnist-cnn"),
    seeds=3,
)

_FASHION = Suite(
    name="fashion-mnist",
    description="the DiveBatch comparison on Fashion-MNIST with a CPU-sized CNN",
    mirrors=(
        "DiveBatch Tables A/B (docs/methods.md §4.1) on Fashion-MNIST: SGD-128, SGD-2048, the "
        "AdaBatch doubling schedule and DiveBatch with and without LR rescale; a narrow 2-conv "
        "CNN (16/32 channels) and 12 epochs with R = 3 instead of ResNet-18 for 200 epochs"
    ),
    expected=(
        "DiveBatch and AdaBatch reach their plateau in fewer steps and samples than SGD-128; "
        "on this CPU the CNN's throughput is flat above b = 128, so wall-clock gains are small; "
        "SGD-2048 with the base LR ends lowest; the paper's linear LR rescale (×16 to 0.8 with "
        "momentum 0.9) diverges in this CNN without normalisation layers"
    ),
    base=Config(
        data=DataConfig(name="fashion-mnist"),
        model=ModelConfig(name="small-cnn", options={"channels": (16, 32), "hidden": 64}),
        optimizer=OptimizerConfig(name="sgd", lr=0.05, options=dict(SGD_MOMENTUM)),
        schedule=ScheduleConfig(name="cosine"),
        policy=PolicyConfig(name="constant", batch_size=128),
        train=TrainConfig(epochs=12, log_every=20, max_physical_batch_size=512),
    ),
    methods=tuple(
        m
        for m in divebatch_methods(128, 2048, every=3, delta=0.1, large_lr=0.8)
        if m.label in ("sgd-128", "sgd-2048", "adabatch", "divebatch", "divebatch-rescale")
    ),
    baselines=("sgd-128", "sgd-2048"),
    target=91.0,
    seeds=3,
)

_SPARSE = Suite(
    name="sparse",
    description="AdaBatch (Défossez & Bach): sparse logistic regression, loss after 2 epochs "
    "vs batch size",
    mirrors=(
        "Défossez & Bach's sample-efficiency claim (docs/methods.md §2.3): sequential "
        "mini-batch SGD on Zipf-sparse logistic regression (10⁵ × 10⁵, 30 nonzeros per row) "
        "for b = 1 … 512, mean aggregation vs AdaBatch at the same single-sample step, and the "
        "mean at step γ·b; "
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


CPU_SUITES: tuple[Suite, ...] = (
    _QUICK,
    _MNIST,
    _MNIST_MLP,
    _MNIST_LOGREG,
    _MNIST_CNN,
    _FASHION,
    _SPARSE,
)
