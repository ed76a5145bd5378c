"""Policy classes: the registry contract, each policy's cadence and rule, bad configuration."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _streams import NUM_PARAMS, corrupted, drive, per_sample_gradients, scheduler_for, stats_at
from adabatch import BatchSizeScheduler
from adabatch.data import ResizableBatchSampler
from adabatch.policies import (
    NO_STATE,
    POLICIES,
    AugmentedInnerProductTest,
    ConstantPolicy,
    CoordinateNormTest,
    DiveBatchPolicy,
    NormTest,
    SchedulePolicy,
    make_policy,
    norm_test_size,
    policy_from_state_dict,
)

# One valid configuration per registered policy: a newly registered policy fails
# test_every_policy_has_a_contract_config until it is added here.
CONFIGS = {
    "constant": dict(batch_size=8),
    "schedule": dict(batch_size=8, factor=2, every=1),
    "divebatch": dict(batch_size=8, dataset_size=4096, max_batch_size=4096, delta=5.0, every=1),
    "norm-test": dict(batch_size=8, eta=0.5),
    "inner-product": dict(batch_size=8, theta=0.1),
    "orthogonality": dict(batch_size=8, nu=0.5),
    "augmented-inner-product": dict(batch_size=8, epsilon=0.5),
    "coordinate-norm-test": dict(batch_size=8, eta=0.5),
    "noise-scale": dict(batch_size=8, interval=2, smoothing=0.5),
    "sample-schedule": dict(batch_size=8, thresholds="0:8 40:16 80:24"),
    "critical-batch-warmup": dict(batch_size=8, interval=2, smoothing=0.5),
    "seesaw": dict(batch_size=8, thresholds="0:8 40:16 80:32", alpha=0.5),
}
READS_STATS = [n for n in CONFIGS if n not in ("constant", "schedule", "sample-schedule", "seesaw")]
BOUNDS = dict(min_batch_size=4, max_batch_size=200, multiple_of=4, dataset_size=190)


def build(name: str, **overrides):
    return make_policy(name, **(CONFIGS[name] | overrides))


def test_every_policy_has_a_contract_config():
    assert set(POLICIES) == set(CONFIGS)
    assert list(POLICIES)[:3] == ["constant", "schedule", "divebatch"]


# ------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", list(CONFIGS))
def test_bounds_integers_and_dataset_size(name):
    policy = build(name, **BOUNDS)
    assert policy.cap == 188  # min(200, N=190) rounded down to a multiple of 4
    decisions = drive(policy, epochs=8, steps_per_epoch=6)
    sizes = [d.new_batch_size for d in decisions]
    for size in sizes:
        assert type(size) is int
        assert 4 <= size <= 188 and size % 4 == 0
    if name != "constant":  # the stream makes every other policy grow
        assert max(sizes) > 8, f"{name} never grew: {sizes}"
    if name in ("norm-test", "schedule", "divebatch"):
        assert sizes[-1] == 188  # reaches the cap and stops there


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decisions_are_deterministic(name):
    runs = [drive(build(name), epochs=4, steps_per_epoch=5, seed=3) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", READS_STATS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_statistics_keep_the_batch_and_warn_once(name, bad):
    sched = scheduler_for(build(name))
    with pytest.warns(RuntimeWarning) as record:
        decisions = drive(
            scheduler=sched, epochs=3, steps_per_epoch=4, feed=lambda s, step: corrupted(s, bad)
        )
    assert sched.batch_size == 8
    assert all(not d.changed for d in decisions)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip_resumes_identically(name):
    whole = scheduler_for(build(name))
    expected = drive(scheduler=whole, epochs=6, steps_per_epoch=5)

    first = scheduler_for(build(name))
    before = drive(scheduler=first, epochs=3, steps_per_epoch=5)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = scheduler_for(policy_from_state_dict(state["policy"]))
    resumed.load_state_dict(state)
    after = drive(scheduler=resumed, epochs=6, steps_per_epoch=5)
    assert before + after == expected
    assert resumed.batch_size == whole.batch_size


def test_load_state_dict_refuses_another_policy_or_config():
    state = scheduler_for(build("norm-test")).state_dict()
    with pytest.raises(ValueError, match="'norm-test' policy, not 'constant'"):
        scheduler_for(build("constant")).load_state_dict(state)
    with pytest.raises(ValueError, match=r"configured differently in \['eta'\]"):
        scheduler_for(build("norm-test", eta=0.25)).load_state_dict(state)


# ------------------------------------------------------------------------------ bad config
@pytest.mark.parametrize(
    ("name", "config", "error", "match"),
    [
        ("nope", {}, ValueError, "unknown policy 'nope'; valid policies: constant, schedule"),
        ("norm-test", dict(etta=0.1), ValueError, r"unknown option\(s\) \['etta'\].*eta"),
        ("divebatch", dict(delta=-0.1), ValueError, "delta must be a positive finite number"),
        ("norm-test", dict(eta=0.0), ValueError, "eta must be a positive finite number"),
        ("inner-product", dict(theta=-1), ValueError, "theta must be a positive finite"),
        ("orthogonality", dict(nu=math.inf), ValueError, "nu must be a positive finite"),
        ("norm-test", dict(min_batch_size=64, max_batch_size=32), ValueError, "below min"),
        ("norm-test", dict(batch_size=1), ValueError, "needs batch_size >= 2"),
        ("norm-test", dict(batch_size=6, multiple_of=4), ValueError, "not a multiple"),
        ("norm-test", dict(batch_size=300, max_batch_size=256), ValueError, "outside"),
        ("inner-product", dict(mode="exact"), ValueError, "'global', 'layerwise'; got 'exact'"),
        ("noise-scale", dict(estimator="gns"), ValueError, "'per-sample', 'two-batch'"),
        ("schedule", dict(factor=0.5), ValueError, "factor must be >= 1"),
        ("schedule", dict(every=2, milestones=[3]), ValueError, "not both"),
        ("schedule", dict(every=None, milestones=[5, 3]), ValueError, "strictly increasing"),
        ("schedule", dict(lr_factor=0.5, lr_fallback=True), ValueError, "leave lr_factor"),
        ("divebatch", dict(window_steps=3), ValueError, "window_steps needs every_steps"),
        ("divebatch", dict(every_steps=2, window_steps=3), ValueError, r"must be <= every"),
        ("augmented-inner-product", dict(theta=0.1), ValueError, "not both"),
        ("augmented-inner-product", dict(split=1.5), ValueError, r"rho must be in \(0, 1\)"),
        ("coordinate-norm-test", dict(quantile=0), ValueError, r"quantile must be in \(0, 1\]"),
        ("constant", dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    ],
)
def test_bad_configuration(name, config, error, match):
    base = CONFIGS.get(name, {})
    if name == "schedule" and "milestones" in config and config.get("every", 1) is None:
        base = {k: v for k, v in base.items() if k != "every"}
        config = {k: v for k, v in config.items() if k != "every"}
    with pytest.raises(error, match=match):
        make_policy(name, **(base | config))


def test_make_policy_names_missing_arguments():
    with pytest.raises(ValueError, match=r"'divebatch' needs \['dataset_size', 'max_batch_size'\]"):
        make_policy("divebatch", batch_size=8)


# ------------------------------------------------------------------------------ DiveBatch
def authors_divebatch(*, epochs, steps, n, delta, every, b0, b_max, lr0, seed):
    """A transcription of the authors' trainer loop on the synthetic stream."""
    b, lr, trace, step = b0, lr0, [], 0
    for e in range(epochs):
        measure = (e + 1) % every == 0 and b < b_max
        a = torch.zeros(NUM_PARAMS, dtype=torch.float64)
        s = 0.0
        for _ in range(steps):
            if measure:
                g = torch.cat(
                    [t.reshape(b, -1) for t in per_sample_gradients(b, step, seed=seed).values()],
                    dim=1,
                )
                a += g.sum(0)
                s += float((g * g).sum())
            step += 1
        if measure:
            diversity = s / (float(a @ a) + 1e-10)
            if math.isnan(diversity) or math.isinf(diversity):
                new = b_max
            else:
                new = min(max(int(delta * n * diversity), b), b_max)
            lr *= new / b
            b = new
        trace.append((b, lr))
    return trace


@pytest.mark.parametrize("every", [1, 2])
def test_divebatch_policy_matches_the_authors_loop(every):
    # The paper's LR rescale (×B'/B at each resize) is the scheduler's linear rule.
    config = dict(dataset_size=20_000, delta=0.01, every=every, max_batch_size=2048)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = BatchSizeScheduler(
        DiveBatchPolicy(16, **config),
        ResizableBatchSampler(20_000, 16),
        optimizer,
        lr_rule="linear",
    )
    trace = []
    for _ in range(8):
        for _ in range(5):
            if sched.wants_stats:
                sched.observe(stats_at(sched.batch_size, sched.step_count, seed=4))
            assert sched.step() is None
        d = sched.step_epoch()
        if d is not None:
            assert d.statistic == "diversity" and d.value > 0
        trace.append((sched.batch_size, optimizer.param_groups[0]["lr"]))
    expected = authors_divebatch(
        epochs=8, steps=5, n=20_000, delta=0.01, every=every, b0=16, b_max=2048, lr0=0.1, seed=4
    )
    assert [b for b, _ in trace] == [b for b, _ in expected]
    assert [lr for _, lr in trace] == pytest.approx([lr for _, lr in expected], rel=1e-12)
    assert trace[-1][0] > 16  # the run grew


def test_divebatch_measures_only_the_epoch_before_a_resize_and_stops_at_the_cap():
    policy = DiveBatchPolicy(8, dataset_size=1000, max_batch_size=64, every=3, delta=10.0)
    measured = [e for e in range(9) if policy.cadence.measures(e)]
    assert measured == [2, 5, 8]
    sched = scheduler_for(policy)
    assert [sched.step_epoch(), sched.step_epoch()] == [None, None]  # epochs 0 and 1
    assert sched.wants_stats  # epoch 2
    sched.observe(stats_at(8, 0))
    d = sched.step_epoch()
    assert d is not None and d.new_batch_size == 64  # δ large: straight to the cap
    later = {}
    for epoch in range(3, 23):
        assert not sched.wants_stats  # at the cap: nothing is measured any more
        later[epoch] = sched.step_epoch()
    assert later[5] is None  # nothing measured, nothing decided


def test_divebatch_step_window():
    policy = DiveBatchPolicy(
        8, dataset_size=5000, max_batch_size=512, every_steps=4, window_steps=2, delta=0.05
    )
    wanted = [s for s in range(12) if policy.cadence.measures(s)]
    assert wanted == [2, 3, 6, 7, 10, 11]
    sched = scheduler_for(policy)
    decisions = []
    for s in range(4):
        if sched.wants_stats:
            sched.observe(stats_at(8, s))
        decisions.append(sched.step())
    assert decisions[:3] == [None, None, None]
    d = decisions[3]
    window = stats_at(8, 2) + stats_at(8, 3)
    s2 = float(window.sum_sq_norms)
    a2 = sum(float((t * t).sum()) for t in window.grad_sum.values())
    expected = min(max(math.floor(0.05 * 5000 * s2 / a2), 8), 512)
    assert d is not None and d.new_batch_size == expected and d.step == 3
    assert sched.step_epoch() is None  # the step variant ignores epochs


# ------------------------------------------------------------------------------ schedule
def test_devarakonda_schedule():
    sched = scheduler_for(
        SchedulePolicy(128, factor=2, every=2, lr_factor=0.5, max_batch_size=1024)
    )
    out = [sched.step_epoch() for e in range(10)]
    sizes = [(e, d.new_batch_size, d.lr_factor) for e, d in enumerate(out) if d is not None]
    assert sizes == [(1, 256, 0.5), (3, 512, 0.5), (5, 1024, 0.5), (7, 1024, 0.5), (9, 1024, 0.5)]


def test_smith_schedule_falls_back_to_lr_decay_at_the_cap():
    sched = scheduler_for(
        SchedulePolicy(
            128, factor=5, milestones=[60, 120, 160], lr_fallback=True, max_batch_size=5000
        )
    )
    out = {e: sched.step_epoch() for e in range(200)}
    decided = {e: (d.new_batch_size, d.lr_factor) for e, d in out.items() if d is not None}
    # 128 → 640 → 3200 (LR kept), then 5000 is only ×1.5625: the LR takes 1.5625/5.
    assert decided == {59: (640, 1.0), 119: (3200, 1.0), 159: (5000, pytest.approx(0.3125))}


# ------------------------------------------------------------------------------ tests
def test_norm_test_policy_follows_its_rule_at_its_interval():
    policy = NormTest(4, eta=0.3, interval=3, max_batch_size=100)
    # The AdAdaGrad code tests when iter_num % test_interval == 0.
    assert [s for s in range(9) if policy.cadence.measures(s)] == [0, 3, 6]
    assert [s for s in range(9) if policy.cadence.decides_at(s)] == [0, 3, 6]
    stats = stats_at(4, 3)
    state, d = policy.decide(NO_STATE, stats, batch_size=4, step=3, epoch=0)
    t = norm_test_size(stats, eta=0.3)
    assert d.value == pytest.approx(t)
    assert d.new_batch_size == min(100, max(4, math.ceil(t)))
    # Nothing observed (the batch at its cap): no decision.
    assert policy.decide(state, None, batch_size=4, step=4, epoch=0) == (state, None)


def test_tests_never_shrink():
    policy = NormTest(64, eta=10.0, max_batch_size=128)  # a loose test asks for little
    _, d = policy.decide(NO_STATE, stats_at(64, 0), batch_size=64, step=0, epoch=0)
    assert d.suggested < 64 and d.new_batch_size == 64


def test_espath_auto_split_without_smoothing_is_the_norm_test():
    aug = AugmentedInnerProductTest(8, epsilon=0.4, smoothing=0.0)
    assert aug.mode == "global"  # the default with ε: the equivalence is about global variances
    state = aug.init()
    for step in range(5):
        stats = stats_at(8, step)
        state, t = aug.suggested_size(state, stats)
        assert t == pytest.approx(norm_test_size(stats, eta=0.4), rel=1e-9)


def test_espath_fixed_split():
    aug = AugmentedInnerProductTest(8, epsilon=0.5, split=0.36)
    theta, nu = aug.tolerances
    assert theta == pytest.approx(0.3) and nu == pytest.approx(0.4)
    assert theta**2 + nu**2 == pytest.approx(0.25)


def test_coordinate_test_reads_coordinates():
    policy = CoordinateNormTest(8)
    assert policy.stats_request.coordinates and not policy.stats_request.inner_products


def test_no_statistics_policies_refuse_observe():
    with pytest.raises(RuntimeError, match="reads no statistics"):
        scheduler_for(build("constant")).observe(stats_at(8, 0))


def test_nan_suggestion_warns_once_per_policy():
    a, b = scheduler_for(build("norm-test")), scheduler_for(build("norm-test"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for sched in (a, b):
            for step in range(3):
                sched.observe(corrupted(stats_at(8, step), math.nan))
                sched.step()
    assert len(record) == 2  # once per scheduler (one run of the policy)
    assert "keeping batch size 8" in str(record[0].message)


def test_stream_stats_match_the_oracle():
    from _compare import assert_stats_close
    from _streams import oracle_stats_at

    assert_stats_close(stats_at(7, 3), oracle_stats_at(7, 3))


@settings(max_examples=300, deadline=None)
@given(
    lo=st.integers(1, 64),
    span=st.integers(0, 5000),
    multiple=st.integers(1, 48),
    dataset=st.one_of(st.none(), st.integers(1, 6000)),
    size=st.one_of(st.floats(0, 1e7), st.just(math.inf)),
)
def test_clamp_is_an_integer_multiple_within_bounds(lo, span, multiple, dataset, size):
    hi = lo + span
    cap = min(hi, dataset if dataset is not None else hi) // multiple * multiple
    first = -(-lo // multiple) * multiple  # the smallest multiple ≥ min_batch_size
    if cap < lo:  # no multiple of `multiple` in [lo, cap]: refused at construction
        with pytest.raises(ValueError, match="is below min_batch_size"):
            ConstantPolicy(
                first,
                min_batch_size=lo,
                max_batch_size=hi,
                multiple_of=multiple,
                dataset_size=dataset,
            )
        return
    policy = ConstantPolicy(
        first, min_batch_size=lo, max_batch_size=hi, multiple_of=multiple, dataset_size=dataset
    )
    got = policy.clamp(size)
    assert type(got) is int and got % multiple == 0
    assert lo <= got <= cap
    if size >= cap:
        assert got == cap
    elif size <= first:
        assert got == first
    else:
        assert got >= size and got - size < multiple  # the next multiple up


def test_uncapped_policies_keep_the_batch_on_an_infinite_size():
    zero_mean = {"w": torch.tensor([[1.0], [-1.0], [2.0], [-2.0]], dtype=torch.float64)}
    from _streams import stats_of

    policy = NormTest(4)  # no max_batch_size, no dataset_size: nowhere to go
    _, d = policy.decide(NO_STATE, stats_of(zero_mean), batch_size=4, step=0, epoch=0)
    assert "infinite and the policy has no cap" in d.note  # the scheduler warns with it
    assert d.new_batch_size == 4
    capped = NormTest(4, max_batch_size=32)
    _, d = capped.decide(NO_STATE, stats_of(zero_mean), batch_size=4, step=0, epoch=0)
    assert d.new_batch_size == 32 and d.note is None


def test_divebatch_all_zero_gradients_keep_the_batch():
    from adabatch.stats import GradStats

    zero = GradStats.from_batch(4, {"w": torch.zeros(3)}, torch.tensor(0.0))
    policy = DiveBatchPolicy(8, dataset_size=100, max_batch_size=64, every=1)
    _, d = policy.decide(NO_STATE, zero, batch_size=8, step=None, epoch=0)
    assert d.new_batch_size == 8  # the authors' 0/(0 + 1e-10) = 0


def test_smith_fallback_never_raises_the_lr():
    policy = SchedulePolicy(
        104, factor=1.5, milestones=[1], lr_fallback=True, multiple_of=8, max_batch_size=1000
    )
    _, d = policy.decide(NO_STATE, None, batch_size=104, step=None, epoch=0)
    assert d.new_batch_size == 160 and d.lr_factor == 1.0  # 156 rounded up to a multiple of 8


def test_observed_statistics_survive_a_checkpoint():
    sched = scheduler_for(NormTest(4, eta=0.3, max_batch_size=100))
    sched.observe(stats_at(4, 0))
    restored = scheduler_for(NormTest(4, eta=0.3, max_batch_size=100))
    restored.load_state_dict(sched.state_dict())
    assert restored.step() == sched.step()
