"""Local SGD on two workers, and federated averaging: how often to communicate, which batch.

Run under ``torchrun --nproc_per_node=2 -m adabatch compare local-sgd`` (the suite refuses
another number of processes). Every method sees the same global data order; the local batch
b is per worker (the global batch is 2b). Communication rounds are counted in the report:
local SGD's synchronisations, one per step for synchronous DDP.
"""

from __future__ import annotations

from ..config import Config, DataConfig, ModelConfig, OptimizerConfig, PolicyConfig, TrainConfig
from .base import Suite, method

__all__ = ["LOCAL_SUITES"]

_NORM_TEST = {
    "policy__name": "norm-test",
    "policy__eta": 0.5,
    "policy__max_batch_size": 512,
    "policy__lr_rule": "sqrt",
}

_LOCAL_SGD = Suite(
    name="local-sgd",
    description="local SGD on 2 worker processes: constant local batch at H = 4, 16, the "
    "adaptive local batch, synchronous DDP with the same policy (torchrun, MNIST MLP)",
    mirrors=(
        "Lau et al.'s adaptive local SGD (arXiv 2406.13936; docs/methods.md §2.9): the norm "
        "test sizing the local batch from the workers' pooled statistics at the rounds, "
        "against constant local batches and synchronous data-parallel SGD, on MNIST's "
        "784-512-10 MLP with 2 gloo workers on a CPU instead of the paper's GPUs"
    ),
    expected=(
        "local SGD reaches the target in far fewer communication rounds than synchronous DDP "
        "(H× fewer at a constant batch), at some cost in samples as H grows; the adaptive "
        "local batch cuts the rounds further once the batch grows (fewer, larger local steps "
        "per sample)"
    ),
    base=Config(
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="mlp", options={"hidden": (512,)}),
        optimizer=OptimizerConfig(name="sgd", lr=0.05, options={"momentum": 0.9}),
        policy=PolicyConfig(name="constant", batch_size=32),
        train=TrainConfig(epochs=4, log_every=50, parallel="local", local_steps=4),
    ),
    methods=(
        method(
            "ddp",
            "synchronous DDP, 32 per worker (64 global)",
            train__parallel="ddp",
            policy__batch_size=64,
        ),
        method(
            "ddp-norm-test",
            "synchronous DDP, the norm test on the global batch (η = 0.5, cap 1024)",
            train__parallel="ddp",
            policy__batch_size=64,
            **{**_NORM_TEST, "policy__max_batch_size": 1024, "policy__interval": 4},
        ),
        method("local-h4", "local SGD, H = 4, constant 32 per worker", train__local_steps=4),
        method("local-h16", "local SGD, H = 16, constant 32 per worker", train__local_steps=16),
        method(
            "local-h4-adaptive",
            "local SGD, H = 4, local batch by the pooled norm test (η = 0.5, cap 512)",
            train__local_steps=4,
            **_NORM_TEST,
        ),
        method(
            "local-h16-adaptive",
            "local SGD, H = 16, local batch by the pooled norm test",
            train__local_steps=16,
            **_NORM_TEST,
        ),
        method(
            "diloco-h16-adaptive",
            "as local-h16-adaptive with DiLoCo's outer Nesterov step (lr 0.7, momentum 0.9)",
            train__local_steps=16,
            train__outer="nesterov",
            **_NORM_TEST,
        ),
    ),
    baselines=("ddp", "local-h4"),
    target=97.0,
    workers=2,
)

_FEDERATED = Suite(
    name="federated",
    description="federated averaging on a Dirichlet split of MNIST: constant against "
    "time-evolving client batches (sequential simulation)",
    mirrors=(
        "An et al.'s adaptive time-evolving client batch (IEEE TPAMI 2025, FedATEVR; only the "
        "abstract is public, so adabatch's own variant of the rule, adabatch.local.federated): "
        "10 clients with Dirichlet(0.5) label shards, 5 per round, 10 local SGD steps, a "
        "784-200-10 MLP, simulated one client after another. Options: --rounds, --clients, "
        "--per-round, --local-steps, --alpha, --target"
    ),
    expected=(
        "the growing client batch makes each round's local steps less noisy: the same rounds "
        "reach the target with more samples, or fewer rounds at a given accuracy when client "
        "drift is the bottleneck"
    ),
    runner="federated",
)

LOCAL_SUITES: tuple[Suite, ...] = (_LOCAL_SGD, _FEDERATED)
