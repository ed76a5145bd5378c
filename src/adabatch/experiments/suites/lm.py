"""The language-model suites: batch-size schedules in tokens against the adaptive tests.

``lm`` runs on a 2-core CPU (a byte-level GPT of 0.1M parameters on the fortunes corpus, about
15 CPU-minutes for 8 methods × 3 seeds); ``lm-gpu`` (``adabatch compare lm --scale=gpu``) is
the same comparison at GPT-2 small's shape (12 layers × 768, 1024-token context) for one GPU.

Every size is in tokens (``data.unit=tokens``, sequences of T tokens). Every method runs on
the same token budget, under the same LR schedule followed in tokens (cosine over the budget,
``schedule.interval=step``): a method that takes fewer, larger steps still sees the LR that
the small-batch baseline sees at the same token count. Adam-family methods that grow the
batch use the square-root LR rule (LR × √(B/B₀)) and keep β₂'s half-life in tokens.
The metric is the validation loss (nats per byte) every ``train.eval_every`` tokens.
"""

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
from .base import Method, Suite, method

__all__ = ["LM_SUITES", "lm_methods"]

_DESCRIPTION = (
    "language models: constant batches, ramps, Seesaw and the critical-batch warm-up in "
    "tokens against the norm test, the noise scale and DiveBatch"
)


def lm_methods(small: int, large: int, ramp: str, interval: int, lr: float) -> tuple[Method, ...]:
    """The eight methods, for batch sizes ``small`` → ``large`` tokens.

    ``ramp`` is the token amount of the linear ramp; ``interval``: steps between the
    adaptive policies' measurements; ``lr``: the base LR (at ``small``).
    """
    grow = {"policy__lr_rule": "sqrt", "policy__beta2_rule": "half-life"}
    cap = {"policy__max_batch_size": large}
    return (
        method("const-small", f"AdamW, constant batch {small} tokens"),
        method(
            "const-large",
            f"AdamW, constant batch {large} tokens, LR × √{large // small}",
            policy__batch_size=large,
            optimizer__lr=lr * (large / small) ** 0.5,
        ),
        method(
            "ramp",
            f"Megatron's linear ramp {small} → {large} tokens over {ramp} tokens",
            policy__name="sample-schedule",
            policy__rampup=f"{small} {small} {ramp}",
            **cap,
            **grow,
        ),
        method(
            "seesaw",
            "Seesaw (α = 0.5): each halving of the cosine LR → batch × 2, LR × √0.5",
            policy__name="seesaw",
            policy__alpha=0.5,
            **cap,
            **grow,
        ),
        method(
            "norm-test",
            f"norm test η = 1 every {interval} steps (AdAdaGrad's test, AdamW)",
            policy__name="norm-test",
            policy__eta=1.0,
            policy__interval=interval,
            **cap,
            **grow,
        ),
        method(
            "noise-scale",
            f"B ← the measured noise scale B_simple every {interval} steps",
            policy__name="noise-scale",
            policy__interval=interval,
            **cap,
            **grow,
        ),
        method(
            "divebatch",
            f"DiveBatch δ = 0.01 from the last {interval} steps, every {4 * interval}",
            policy__name="divebatch",
            policy__delta=0.01,
            policy__every_steps=4 * interval,
            policy__window_steps=interval,
            **cap,
            **grow,
        ),
        method(
            "critical-warmup",
            "critical-batch warm-up: the noise scale in whole doublings, never shrinking",
            policy__name="critical-batch-warmup",
            policy__interval=interval,
            **cap,
            **grow,
        ),
    )


_LM = Suite(
    name="lm",
    description=_DESCRIPTION + " (byte-level GPT on fortunes, ~15 CPU-minutes)",
    mirrors=(
        "the schedules large-model pre-training ships (Megatron-LM's ramp in tokens, Seesaw, "
        "Merrill et al.'s critical-batch warm-up) and the adaptive tests (norm test, noise "
        "scale, DiveBatch) on one workload and one token budget: a 4-layer byte-level GPT "
        "(dim 64) on fortune-mod's quotations, 64-byte sequences, 1M training tokens"
    ),
    expected=(
        "small constant batches reach a given loss in the fewest tokens and large ones in the "
        "fewest steps; the schedules and adaptive tests start small and grow, matching the "
        "small batch's loss per token while taking fewer steps, so they win on wall-clock "
        "once a step costs less per token at larger batches"
    ),
    base=Config(
        data=DataConfig(
            name="fortunes",
            unit="tokens",
            train_size=8192,
            test_size=512,
            options={"seq_len": 64},
        ),
        model=ModelConfig(name="gpt", options={"dim": 64, "heads": 4, "ff": 256, "layers": 4}),
        optimizer=OptimizerConfig(name="adamw", lr=2e-3, options={"weight_decay": 0.1}),
        schedule=ScheduleConfig(name="cosine", interval="step"),
        policy=PolicyConfig(name="constant", batch_size=1024),
        train=TrainConfig(epochs=2, log_every=10, eval_every=65536, eval_batch_size=512),
    ),
    methods=lm_methods(1024, 16384, "512K", 10, lr=2e-3),
    baselines=("const-small", "const-large"),
    metric="test_loss",
    axis="evaluation",
    seeds=3,
    gpu_scale="lm-gpu",
)

_LM_GPU = Suite(
    name="lm-gpu",
    description=_DESCRIPTION + " (GPT-2-small shape, one GPU)",
    mirrors=(
        "lm at GPT-2 small's shape: 12 layers × 768, 12 heads, 1024-byte context (85M "
        "parameters with a byte vocabulary), batches 64K → 1M tokens, AdamW in fp32; "
        "the fortunes corpus is small (2.2M tokens), so point data.root at a larger corpus "
        "in the same layout for a real budget"
    ),
    expected="as lm; the wall-clock gains of growing batches are larger on a GPU",
    base=Config(
        data=DataConfig(name="fortunes", unit="tokens", options={"seq_len": 1024}),
        model=ModelConfig(name="gpt", options={"dim": 768, "heads": 12, "ff": 3072, "layers": 12}),
        optimizer=OptimizerConfig(name="adamw", lr=6e-4, options={"weight_decay": 0.1}),
        schedule=ScheduleConfig(name="cosine", interval="step"),
        policy=PolicyConfig(name="constant", batch_size=65536),
        train=TrainConfig(
            epochs=4,
            device="auto",
            log_every=5,
            eval_every=524288,
            eval_batch_size=64,
            max_physical_batch_size=65536,
        ),
    ),
    methods=lm_methods(65536, 1048576, "4M", 5, lr=6e-4),
    baselines=("const-small", "const-large"),
    metric="test_loss",
    axis="evaluation",
    hardware="gpu",
    seeds=3,
)

LM_SUITES: tuple[Suite, ...] = (_LM, _LM_GPU)
