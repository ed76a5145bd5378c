"""Batch-size policies: the papers' rules as pure functions, and the configurations that run them.

=========================  ==================================================  ============
name (`POLICIES`)          rule                                                statistics
=========================  ==================================================  ============
constant                   fixed batch (the SGD baselines)                     none
schedule                   ×factor every R epochs (Devarakonda et al.), or at  none
                           LR milestones with LR fallback (Smith et al.)
divebatch                  B' = min(max(⌊δNΔ̂⌋, B), B_max) every R epochs,      Σgᵢ, S2
                           Δ̂ over the epoch before (Chen, Wang & Sundaram)
norm-test                  b ← max(b, ⌈V/(η²‖ḡ‖²)⌉)                            Σgᵢ, S2
inner-product              b ← max(b, ⌈V_ip/(θ²‖ḡ‖⁴)⌉)                         + P2
orthogonality              b ← max(b, ⌈V_orth/(ν²‖ḡ‖²)⌉)                       + P2
augmented-inner-product    both of the above; θ, ν from one ε (Espath et al.)  + P2
coordinate-norm-test       b ← max(b, ⌈max_j V_j/(η²ḡ_j²)⌉), guarded           + Σgᵢ⊙gᵢ
noise-scale                b = factor · EMA(tr Σ)/EMA(‖G‖²) (McCandlish et     Σgᵢ, S2 or
                           al.)                                                two sizes
sample-schedule            thresholds in samples/tokens, or Megatron's ramp    none
critical-batch-warmup      ×growth while factor·B_simple passes the next size  as noise-scale
                           (after Merrill et al.)
seesaw                     batch ×1/α where the LR schedule cuts by α (√ LR)    none
=========================  ==================================================  ============

A policy is a frozen configuration with a pure ``decide(state, stats, *, batch_size, step,
epoch) -> (state, Decision)`` (see `adabatch.policies.base`); `adabatch.BatchSizeScheduler`
runs it in a training loop, and `adabatch.lr_coupling` couples the learning rate to its
decisions.
"""

from .adaptive_sampling import (
    AugmentedInnerProductTest,
    CoordinateNormTest,
    InnerProductTest,
    NormTest,
    OrthogonalityTest,
    SamplingTestPolicy,
    SplitSums,
)
from .base import NO_STATE, BatchSizePolicy, Cadence, Decision, StatsRequest
from .constant import ConstantPolicy
from .critical_warmup import CriticalBatchWarmup, warmup_size
from .divebatch import DiveBatchPolicy, divebatch_batch_size, divebatch_rule, window_diversity
from .noise_scale import EMAState, NoiseScalePolicy, NoiseScaleState, ema_update, ema_value
from .ramps import (
    parse_amount,
    parse_megatron_rampup,
    parse_thresholds,
    ramp_batch_size,
    threshold_batch_size,
)
from .registry import POLICIES, make_policy, policy_from_state_dict, policy_parameters
from .sample_schedule import SampleSchedulePolicy
from .sampling_tests import (
    augmented_test_size,
    coordinate_norm_test_size,
    espath_split,
    inner_product_test_size,
    norm_test_size,
    orthogonality_test_size,
)
from .schedule import SchedulePolicy, scheduled_size
from .seesaw import SeesawPolicy, lr_curve, seesaw_policy, seesaw_thresholds

__all__ = [
    "NO_STATE",
    "POLICIES",
    "AugmentedInnerProductTest",
    "BatchSizePolicy",
    "Cadence",
    "ConstantPolicy",
    "CoordinateNormTest",
    "CriticalBatchWarmup",
    "Decision",
    "DiveBatchPolicy",
    "EMAState",
    "InnerProductTest",
    "NoiseScalePolicy",
    "NoiseScaleState",
    "NormTest",
    "OrthogonalityTest",
    "SampleSchedulePolicy",
    "SamplingTestPolicy",
    "SchedulePolicy",
    "SeesawPolicy",
    "SplitSums",
    "StatsRequest",
    "augmented_test_size",
    "coordinate_norm_test_size",
    "divebatch_batch_size",
    "divebatch_rule",
    "ema_update",
    "ema_value",
    "espath_split",
    "inner_product_test_size",
    "lr_curve",
    "make_policy",
    "norm_test_size",
    "orthogonality_test_size",
    "parse_amount",
    "parse_megatron_rampup",
    "parse_thresholds",
    "policy_from_state_dict",
    "policy_parameters",
    "ramp_batch_size",
    "scheduled_size",
    "seesaw_policy",
    "seesaw_thresholds",
    "threshold_batch_size",
    "warmup_size",
    "window_diversity",
]
