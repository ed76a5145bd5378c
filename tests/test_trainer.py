"""Trainer: bitwise resume, micro-batching, divergence, records, evaluation, callbacks, errors.

Every check compares the trainer with an independent computation: an uninterrupted run of the
same setup, a plain training loop written here, a hand-computed loss.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.data import epoch_order
from adabatch.datasets import ArrayDataset, synthetic_images
from adabatch.training import (
    Callback,
    DivergenceError,
    JsonlLogger,
    ProgressBar,
    Trainer,
    evaluate,
    load_checkpoint,
    save_checkpoint,
)

N = 40
EPOCHS = 3


def _data(n: int, seed: int, dtype: torch.dtype = torch.float32) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=dtype)
    teacher = torch.randn(6, 3, generator=g, dtype=dtype)
    noise = 0.5 * torch.randn(n, 3, generator=g, dtype=dtype)
    return ArrayDataset(x, (x @ teacher + noise).argmax(1), num_classes=3)


TRAIN = _data(N, 1)
TEST = _data(20, 3)

# id → (policy name, options): every cadence and an LR factor.
POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    # Epoch cadence; every epoch is measured (statistics summed over the whole epoch).
    "divebatch": (
        "divebatch",
        dict(batch_size=4, dataset_size=N, max_batch_size=20, every=1, delta=0.5),
    ),
    # Step cadence, statistics every third step.
    "norm-test": ("norm-test", dict(batch_size=4, eta=0.7, interval=3, max_batch_size=24)),
    "schedule": ("schedule", dict(batch_size=4, factor=2, every=1, lr_factor=2, max_batch_size=20)),
    "constant": ("constant", dict(batch_size=6)),
}
LR_RULES = {"norm-test": "sqrt"}
OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
}
TIMING = ("time", "elapsed")

# A global batch of 1 at an epoch's end leaves the norm test undefined (b < 2): it keeps the
# batch and warns, as documented.
pytestmark = pytest.mark.filterwarnings("ignore:norm-test policy:RuntimeWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (and contention on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Probe(Callback):
    """Records each step; requests a stop after step ``stop_at``; keeps checkpoint snapshots.

    ``snapshots[s]`` holds the bytes of the checkpoint file as it was when step s ended, i.e.
    the last checkpoint written before step s (the file a kill during step s leaves behind).
    """

    def __init__(self, stop_at: int | None = None, snapshot: bool = False) -> None:
        self.stop_at = stop_at
        self.snapshot = snapshot
        self.sizes: list[int] = []
        self.layout: list[tuple[int, bool]] = []  # (epoch, last step of the epoch) per step
        self.snapshots: dict[int, bytes] = {}
        self.statuses: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.params: list[list[torch.Tensor]] = []
        self.keep_params = False

    def on_step_end(self, trainer: Trainer) -> None:
        self.sizes.append(trainer.loader.last_global_batch_size)
        self.layout.append((trainer.epoch, trainer.loader.epoch_done))
        if self.keep_params:
            self.params.append([p.detach().clone() for p in trainer.model.parameters()])
        path = trainer.checkpoint_path
        if self.snapshot and path is not None and path.exists():
            self.snapshots[trainer.step_count] = path.read_bytes()
        if trainer.step_count == self.stop_at:
            trainer.request_stop()

    def on_record(self, trainer: Trainer, record: Any) -> None:
        self.records.append(dict(record))

    def on_fit_end(self, trainer: Trainer, status: str) -> None:
        self.statuses.append(status)


@dataclasses.dataclass
class Run:
    trainer: Trainer
    model: nn.Module
    probe: Probe
    metrics: Path
    checkpoint: Path

    @property
    def scheduler(self) -> BatchSizeScheduler:
        return self.trainer.scheduler


def make_run(
    tmp: Path,
    policy: str = "constant",
    optimizer: str = "sgd-momentum",
    *,
    tag: str = "run",
    stop_at: int | None = None,
    snapshot: bool = False,
    every_steps: int = 3,
    metrics: Path | None = None,
) -> Run:
    """A fresh trainer: dropout model, stateful optimizer, noise augmentation from ``g``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.25), nn.Linear(16, 3))
    opt = OPTIMIZERS[optimizer](model.parameters())
    name, options = POLICIES[policy]
    pol = make_policy(name, **options)
    g = torch.Generator().manual_seed(7)

    def augment(batch):
        x, y = batch
        return x + 0.1 * torch.randn(x.shape, generator=g), y

    loader = AdaptiveLoader(TRAIN, pol.batch_size, seed=3, batch_transform=augment)
    sched = BatchSizeScheduler(pol, loader, opt, lr_rule=LR_RULES.get(policy, "none"))
    probe = Probe(stop_at, snapshot)
    metrics = metrics if metrics is not None else tmp / f"{tag}.jsonl"
    checkpoint = tmp / f"{tag}.pt"
    trainer = Trainer(
        model,
        opt,
        sched,
        eval_data=TEST,
        eval_batch_size=8,
        callbacks=[JsonlLogger(metrics), probe],
        log_every=2,
        checkpoint_path=checkpoint,
        checkpoint_every_steps=every_steps,
        generators=[g],
    )
    return Run(trainer, model, probe, metrics, checkpoint)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSONL records without their timing fields."""
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.append({k: v for k, v in record.items() if k not in TIMING})
    return out


@dataclasses.dataclass
class Reference:
    params: list[torch.Tensor]
    decisions: list[Any]
    sizes: list[int]
    layout: list[tuple[int, bool]]
    records: list[dict[str, Any]]
    snapshots: dict[int, bytes]
    result: Any
    metrics_text: str  # run A's metrics.jsonl, complete


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Callable[[str, str], Reference]:
    """Run A: the uninterrupted run (one per policy and optimizer, shared by the tests)."""

    cache: dict[tuple[str, str], Reference] = {}

    def get(policy: str, optimizer: str) -> Reference:
        key = (policy, optimizer)
        if key not in cache:
            tmp = tmp_path_factory.mktemp(f"ref-{policy}-{optimizer}")
            run = make_run(tmp, policy, optimizer, tag="a", snapshot=True)
            result = run.trainer.fit(EPOCHS)
            assert result.status == "completed"
            cache[key] = Reference(
                params=[p.detach().clone() for p in run.model.parameters()],
                decisions=list(run.scheduler.decisions),
                sizes=list(run.probe.sizes),
                layout=list(run.probe.layout),
                records=read_records(run.metrics),
                snapshots=dict(run.probe.snapshots),
                result=result,
                metrics_text=run.metrics.read_text(),
            )
        return cache[key]

    return get


def assert_same_run(ref: Reference, run: Run, sizes: list[int], result: Any) -> None:
    """The resumed run ended exactly where the uninterrupted one did."""
    assert sizes == ref.sizes
    assert run.scheduler.decisions == ref.decisions
    for p, q in zip(run.model.parameters(), ref.params, strict=True):
        assert torch.equal(p.detach(), q), "parameters differ from the uninterrupted run"
    assert read_records(run.metrics) == ref.records
    assert (result.status, result.epochs, result.steps, result.samples) == (
        "completed",
        ref.result.epochs,
        ref.result.steps,
        ref.result.samples,
    )
    assert result.decisions == ref.result.decisions


def stop_step(ref: Reference, where: str) -> int:
    """A step (1-based count of steps taken) at the given place of epoch 1 of run A."""
    steps = [s for s, (epoch, _) in enumerate(ref.layout, start=1) if epoch == 1]
    last = [s for s, (epoch, done) in enumerate(ref.layout, start=1) if epoch == 1 and done]
    assert len(last) == 1 and len(steps) >= 2, ref.layout
    if where == "mid-epoch":
        return steps[1] if steps[1] != last[0] else steps[0]
    if where == "epoch-last-step":
        return last[0]
    assert where == "after-epoch-end"  # the first step of the next epoch
    return last[0] + 1


# ---------------------------------------------------------------------- 1. resume bitwise
def test_reference_runs_exercise_the_policies(reference) -> None:
    """Sanity of the setup: the adaptive policies do change the batch, mid-run."""
    for policy in ("divebatch", "norm-test", "schedule"):
        ref = reference(policy, "sgd-momentum")
        assert ref.decisions, policy
        assert len(set(ref.sizes)) > 2, (policy, ref.sizes)
    assert any(d.step is not None for d in reference("norm-test", "sgd-momentum").decisions)
    assert any(d.lr_factor == 2 for d in reference("schedule", "sgd-momentum").decisions)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("where", ["mid-epoch", "epoch-last-step", "after-epoch-end"])
def test_stopped_and_resumed_run_is_bitwise_identical(
    tmp_path, reference, policy, optimizer, where
) -> None:
    ref = reference(policy, optimizer)
    stop = stop_step(ref, where)
    first = make_run(tmp_path, policy, optimizer, tag="b", stop_at=stop)
    result = first.trainer.fit(EPOCHS)
    assert result.status == "interrupted"
    assert result.steps == stop
    assert first.probe.statuses == ["interrupted"]
    state = load_checkpoint(first.checkpoint)
    assert state["scheduler"]["step_count"] == stop  # the stop wrote a checkpoint
    assert first.trainer.loader.epoch_done == (where == "epoch-last-step")

    # A fresh trainer (fresh model, optimizer, policy, loader, callbacks) resumes.
    second = make_run(tmp_path, policy, optimizer, tag="b")
    second.trainer.load_checkpoint()
    result = second.trainer.fit(EPOCHS)
    assert_same_run(ref, second, first.probe.sizes + second.probe.sizes, result)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_run_extended_from_its_final_epoch_checkpoint(tmp_path, reference, policy) -> None:
    """fit(2), then a fresh trainer loads the epoch-end checkpoint and fits to 3 epochs."""
    ref = reference(policy, "sgd-momentum")
    first = make_run(tmp_path, policy, tag="b")
    assert first.trainer.fit(2).status == "completed"
    assert load_checkpoint(first.checkpoint)["scheduler"]["epoch"] == 2
    second = make_run(tmp_path, policy, tag="b")
    second.trainer.load_checkpoint()
    result = second.trainer.fit(EPOCHS)
    assert_same_run(ref, second, first.probe.sizes + second.probe.sizes, result)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("policy", list(POLICIES))
def test_killed_run_resumes_from_its_periodic_checkpoint(
    tmp_path, reference, policy, optimizer
) -> None:
    """A copy of the step-k checkpoint of run A (checkpoint_every_steps=3), resumed afresh.

    The JSONL file is run A's, complete: loading truncates it to the checkpoint's length.
    """
    ref = reference(policy, optimizer)
    mid = stop_step(ref, "mid-epoch")
    # The first periodic checkpoint written strictly inside epoch 1, and the one after
    # epoch 1's end (the file on disk during the first step of epoch 2).
    candidates = [s for s in sorted(ref.snapshots) if s > mid]
    assert candidates
    cases = []
    for s in candidates:
        blob = ref.snapshots[s]
        path = tmp_path / f"killed-{s}.pt"
        path.write_bytes(blob)
        state = load_checkpoint(path)
        k, cursor = state["scheduler"]["step_count"], state["scheduler"]["sampler"]
        assert k < s
        if 0 < cursor["cursor"] < N and not cases:
            cases.append((k, path))  # mid-epoch
        if cursor["cursor"] == 0 and cursor["epoch"] == 2:
            cases.append((k, path))  # right after the end of epoch 1
            break
    assert len(cases) == 2, "no mid-epoch or epoch-end checkpoint in run A"
    metrics = tmp_path / "metrics.jsonl"
    for k, path in cases:
        metrics.write_text(ref.metrics_text)  # as the killed run A left it
        run = make_run(tmp_path, policy, optimizer, tag=f"resumed-{k}", metrics=metrics)
        run.trainer.load_checkpoint(path)
        result = run.trainer.fit(EPOCHS)
        assert_same_run(ref, run, ref.sizes[:k] + run.probe.sizes, result)


def test_fit_again_after_an_interruption_continues(tmp_path, reference) -> None:
    """The same trainer, fit() again after a stop: the run goes on to the end, as A did."""
    ref = reference("divebatch", "sgd-momentum")
    stop = stop_step(ref, "mid-epoch")
    run = make_run(tmp_path, "divebatch", tag="b", stop_at=stop)
    assert run.trainer.fit(EPOCHS).status == "interrupted"
    run.probe.stop_at = None  # no new stop request
    result = run.trainer.fit(EPOCHS)
    assert run.probe.statuses == ["interrupted", "completed"]
    assert_same_run(ref, run, run.probe.sizes, result)


# ---------------------------------------------------------------------- 2. micro-batching
def _float64_run(policy: str, options: dict[str, Any], physical: int | None, calls: list[int]):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    pol = make_policy(policy, **options)
    loader = AdaptiveLoader(_data(N, 1, torch.float64), pol.batch_size, seed=5)
    sched = BatchSizeScheduler(pol, loader, opt)

    def loss_fn(outputs, targets):
        calls.append(len(targets))
        return F.cross_entropy(outputs, targets)

    trainer = Trainer(
        model,
        opt,
        sched,
        loss_fn=loss_fn,
        max_physical_batch_size=physical,
        log_every=1,
    )
    trainer.fit(1)
    return model, sched


@pytest.mark.parametrize(
    ("policy", "options"),
    [
        ("constant", dict(batch_size=8)),
        ("norm-test", dict(batch_size=4, eta=0.7, interval=1, max_batch_size=24)),
    ],
)
def test_micro_batching_matches_the_whole_batch(policy, options) -> None:
    whole_calls: list[int] = []
    micro_calls: list[int] = []
    whole, whole_sched = _float64_run(policy, options, None, whole_calls)
    micro, micro_sched = _float64_run(policy, options, 3, micro_calls)
    assert max(micro_calls) <= 3 < max(whole_calls)  # the batches really were split
    for p, q in zip(micro.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    assert len(micro_sched.decisions) == len(whole_sched.decisions)
    if policy == "norm-test":
        assert whole_sched.decisions, "norm-test took no decision: the test shows nothing"
    for a, b in zip(micro_sched.decisions, whole_sched.decisions, strict=True):
        assert (a.step, a.epoch, a.old_batch_size, a.new_batch_size) == (
            b.step,
            b.epoch,
            b.old_batch_size,
            b.new_batch_size,
        )
        assert a.value == pytest.approx(b.value, rel=1e-9)


# ---------------------------------------------------------------------- 3. divergence
class ParamTrace(Callback):
    def __init__(self) -> None:
        self.params: list[list[torch.Tensor]] = []
        self.statuses: list[str] = []

    def on_step_end(self, trainer: Trainer) -> None:
        self.params.append([p.detach().clone() for p in trainer.model.parameters()])

    def on_fit_end(self, trainer: Trainer, status: str) -> None:
        self.statuses.append(status)


def _nan_trainer(tmp_path: Path, bad_step: int, **options: Any) -> tuple[Trainer, ParamTrace]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pol = make_policy("constant", batch_size=6)
    loader = AdaptiveLoader(TRAIN, 6, seed=3)
    sched = BatchSizeScheduler(pol, loader, opt)

    def loss_fn(outputs, targets):
        loss = F.cross_entropy(outputs, targets)
        # The step about to be taken is number trainer.step_count (0-based).
        return loss * math.nan if sched.step_count == bad_step and model.training else loss

    trace = ParamTrace()
    trainer = Trainer(model, opt, sched, loss_fn=loss_fn, callbacks=[trace], **options)
    return trainer, trace


def test_nan_loss_raises_before_the_parameters_change(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    bad = 4  # the fifth step, mid-epoch 1 (7 steps per epoch)
    trainer, trace = _nan_trainer(tmp_path, bad, checkpoint_path=ckpt, checkpoint_every_steps=3)
    with pytest.raises(DivergenceError) as info:
        trainer.fit(2)
    message = str(info.value)
    assert "epoch 1" in message
    assert re.search(r"step [45]\b", message), message  # the failing step, 0- or 1-based
    assert str(ckpt) in message
    assert trace.statuses == ["diverged"]
    assert len(trace.params) == bad  # steps 0..3 completed
    # The NaN step did not reach the parameters: they are those after the last good step.
    for p, good in zip(trainer.model.parameters(), trace.params[-1], strict=True):
        assert torch.isfinite(p).all(), "the NaN step was applied to the parameters"
        assert torch.equal(p.detach(), good)
    # The checkpoint on disk is the last good one (step 3) and loads.
    state = load_checkpoint(ckpt)
    assert state["scheduler"]["step_count"] == 3 < bad + 1
    for p, good in zip(state["model"].values(), trace.params[2], strict=True):
        assert torch.equal(p, good)


def test_nan_loss_without_checkpoint_names_no_path(tmp_path) -> None:
    # A checkpoint path, but nothing written yet when the first step diverges.
    trainer, trace = _nan_trainer(tmp_path, 0, checkpoint_path=tmp_path / "ckpt.pt")
    with pytest.raises(DivergenceError, match="epoch 1") as info:
        trainer.fit(1)
    assert "checkpoint" not in str(info.value)
    assert trace.statuses == ["diverged"]
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- 4. records
def _plain_evaluate(model: nn.Module, data: ArrayDataset) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(data.inputs)
        loss = float(F.cross_entropy(out, data.targets))
        acc = 100.0 * float((out.argmax(1) == data.targets).sum()) / len(data)
    model.train()
    return loss, acc


def test_records_match_a_plain_training_loop(tmp_path) -> None:
    batch, seed, lr, epochs = 6, 11, 0.1, 2

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    # The reference: a plain loop over the loader's documented order.
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    expected_steps, expected_epochs = [], []
    loss0, acc0 = _plain_evaluate(model, TEST)
    expected_epochs.append(dict(epoch=0, step=0, samples=0, train_loss=None, loss=loss0, acc=acc0))
    step = samples = 0
    for epoch in range(epochs):
        order = epoch_order(N, seed, epoch)
        weighted = 0.0
        for start in range(0, N, batch):
            idx = order[start : start + batch]
            x, y = TRAIN.inputs[idx], TRAIN.targets[idx]
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            samples += len(idx)
            weighted += float(loss.detach()) * len(idx)
            expected_steps.append(
                dict(step=step, samples=samples, n=len(idx), loss=float(loss.detach()))
            )
        test_loss, acc = _plain_evaluate(model, TEST)
        expected_epochs.append(
            dict(
                epoch=epoch + 1,
                step=step,
                samples=samples,
                train_loss=weighted / N,
                loss=test_loss,
                acc=acc,
            )
        )
    reference_params = [p.detach().clone() for p in model.parameters()]

    trained = build()
    opt = torch.optim.SGD(trained.parameters(), lr=lr, momentum=0.9)
    pol = make_policy("constant", batch_size=batch)
    sched = BatchSizeScheduler(pol, AdaptiveLoader(TRAIN, batch, seed=seed), opt)
    metrics = tmp_path / "metrics.jsonl"
    trainer = Trainer(
        trained,
        opt,
        sched,
        eval_data=TEST,
        eval_batch_size=7,
        callbacks=[JsonlLogger(metrics)],
        log_every=1,
    )
    trainer.fit(epochs)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epoch_records = [r for r in records if r["kind"] == "epoch"]
    assert len(steps) == len(expected_steps) == 14
    for got, want in zip(steps, expected_steps, strict=True):
        assert (got["step"], got["samples"], got["batch_size"]) == (
            want["step"],
            want["samples"],
            want["n"],
        )
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert got["lr"] == lr
        assert "decision_statistic" not in got
    assert len(epoch_records) == len(expected_epochs) == epochs + 1
    for got, want in zip(epoch_records, expected_epochs, strict=True):
        assert (got["epoch"], got["step"], got["samples"]) == (
            want["epoch"],
            want["step"],
            want["samples"],
        )
        if want["train_loss"] is None:
            assert got["train_loss"] is None
        else:
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
        assert got["test_loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["test_accuracy"] == pytest.approx(want["acc"])
        assert got["batch_size"] == batch
    # Records come in order: epoch 0 first, an epoch record after each epoch's steps.
    assert [r["kind"] for r in records[:2]] == ["epoch", "step"]
    assert records[7 + 1]["kind"] == "epoch"  # 1 + 7 steps, then epoch 1
    for p, q in zip(trained.parameters(), reference_params, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)


def test_step_decisions_are_recorded_at_their_step(tmp_path) -> None:
    pol = make_policy("norm-test", batch_size=4, eta=0.7, interval=1, max_batch_size=24)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = BatchSizeScheduler(pol, AdaptiveLoader(TRAIN, 4, seed=2), opt)
    probe = Probe()
    Trainer(model, opt, sched, callbacks=[probe], log_every=1000).fit(2)
    steps = [r for r in probe.records if r["kind"] == "step"]
    assert sched.decisions
    # With log_every far away, step records are exactly the decisions.
    assert [r["step"] for r in steps] == [d.step + 1 for d in sched.decisions]
    for record, decision in zip(steps, sched.decisions, strict=True):
        assert record["decision_statistic"] == "T"
        assert record["decision_value"] == decision.value
        assert record["next_batch_size"] == decision.new_batch_size
        assert record["batch_size"] == decision.old_batch_size
    # The records' "samples" advance by the batches the loader delivered.
    cumulative = [sum(probe.sizes[:s]) for s in range(1, len(probe.sizes) + 1)]
    assert [r["samples"] for r in steps] == [cumulative[r["step"] - 1] for r in steps]
    # The logged loss of a record is the mean over the samples since the last record.
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) for r in steps)


def _schedule_run(log_every: int) -> tuple[Probe, BatchSizeScheduler]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pol = make_policy("schedule", batch_size=4, factor=2, every=2, max_batch_size=32)
    sched = BatchSizeScheduler(pol, AdaptiveLoader(TRAIN, 4, seed=2), opt)
    probe = Probe()
    Trainer(model, opt, sched, callbacks=[probe], log_every=log_every, eval_data=TEST).fit(4)
    return probe, sched


def test_epoch_records_and_aggregated_losses() -> None:
    fine, _ = _schedule_run(1)  # a record per step: the per-step losses
    coarse, sched = _schedule_run(3)  # the same trajectory, a record every 3 steps
    assert fine.sizes == coarse.sizes
    step_losses = [r["loss"] for r in fine.records if r["kind"] == "step"]
    assert len(step_losses) == len(fine.sizes)

    epochs = [r for r in coarse.records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3, 4]
    assert [r["samples"] for r in epochs] == [0, N, 2 * N, 3 * N, 4 * N]
    decided = {r["epoch"]: r for r in epochs if "decision_statistic" in r}
    assert sorted(decided) == [2, 4]  # every=2: after epochs 2 and 4 only
    assert (decided[2]["next_batch_size"], decided[4]["next_batch_size"]) == (8, 16)
    assert [d.new_batch_size for d in sched.decisions] == [8, 16]
    # train_loss: the sample-weighted mean of the epoch's step losses.
    ends = [0] + [i for i, (_, done) in enumerate(fine.layout, start=1) if done]
    for e, record in enumerate(epochs[1:]):
        lo, hi = ends[e], ends[e + 1]
        n = fine.sizes[lo:hi]
        assert sum(n) == N
        expected = sum(x * k for x, k in zip(step_losses[lo:hi], n, strict=True)) / N
        assert record["train_loss"] == pytest.approx(expected, rel=1e-12)
    # A step record every 3 steps; its loss is the sample-weighted mean since the last one.
    steps = [r for r in coarse.records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(3, len(fine.sizes) + 1, 3))
    previous = 0
    for record in steps:
        s = record["step"]
        n = fine.sizes[previous:s]
        expected = sum(x * k for x, k in zip(step_losses[previous:s], n, strict=True)) / sum(n)
        assert record["loss"] == pytest.approx(expected, rel=1e-12)
        assert record["samples"] == sum(fine.sizes[:s])
        assert "decision_statistic" not in record  # an epoch-cadence policy
        previous = s


class _EvalCheck(Probe):
    """A Probe that also evaluates independently whenever an "eval" record arrives."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__(stop_at)
        self.expected: list[float] = []

    def on_record(self, trainer: Trainer, record: Any) -> None:
        super().on_record(trainer, record)
        if record["kind"] == "eval":
            self.expected.append(evaluate(trainer.model, TEST, F.cross_entropy)["test_loss"])


def _eval_every_run(tmp_path: Path, stop_at: int | None, resume: bool = False) -> _EvalCheck:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pol = make_policy("schedule", batch_size=4, factor=2, every=1, max_batch_size=32)
    sched = BatchSizeScheduler(pol, AdaptiveLoader(TRAIN, 4, seed=2), opt)
    probe = _EvalCheck(stop_at)
    trainer = Trainer(
        model,
        opt,
        sched,
        callbacks=[probe],
        eval_data=TEST,
        eval_every_samples=12,
        checkpoint_path=tmp_path / "ckpt.pt",
    )
    if resume:
        trainer.load_checkpoint()
    trainer.fit(4)
    return probe


def test_evaluations_every_n_samples(tmp_path) -> None:
    probe = _eval_every_run(tmp_path, None)
    # Expected by hand from the sizes: an evaluation at the end of every step that passes a
    # multiple of 12, numbered by the last multiple passed (one record even for 32 > 12).
    expected, samples = [], 0
    for step, size in enumerate(probe.sizes, start=1):
        before, samples = samples // 12, samples + size
        if samples // 12 > before:
            expected.append((step, samples, samples // 12))
    evals = [r for r in probe.records if r["kind"] == "eval"]
    assert [(r["step"], r["samples"], r["evaluation"]) for r in evals] == expected
    assert sorted(set(probe.sizes)) == [4, 8, 16, 32]  # batches of 16 and 32 pass two at once
    reached = [0] + [k for *_, k in expected]
    assert any(b - a > 1 for a, b in itertools.pairwise(reached))  # a step passing two
    # the loss is that of the model at that moment, evaluated independently
    assert [r["test_loss"] for r in evals] == pytest.approx(probe.expected, rel=1e-6)


def test_an_epoch_ending_on_an_evaluation_evaluates_once(tmp_path) -> None:
    """N = 20 divides the epoch (40): the epoch record reuses the eval record's metrics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = BatchSizeScheduler(make_policy("constant", batch_size=4), AdaptiveLoader(TRAIN, 4), opt)
    probe = Probe()
    trainer = Trainer(model, opt, sched, callbacks=[probe], eval_data=TEST, eval_every_samples=20)
    calls = []
    evaluate_once = trainer._evaluate

    def counted() -> dict[str, Any]:
        calls.append(trainer.step_count)
        return evaluate_once()

    trainer._evaluate = counted  # type: ignore[method-assign]
    trainer.fit(2)
    # by hand: at the start, then at 20, 40, 60, 80 samples (steps 5, 10, 15, 20); the epoch
    # ends (steps 10 and 20) reuse the evaluations of those steps
    assert calls == [0, 5, 10, 15, 20]
    evals = {r["step"]: r for r in probe.records if r["kind"] == "eval"}
    for record in (r for r in probe.records if r["kind"] == "epoch" and r["step"]):
        assert record["test_loss"] == evals[record["step"]]["test_loss"]


def test_evaluations_every_n_samples_resume(tmp_path) -> None:
    whole = _eval_every_run(tmp_path / "a", None)
    (tmp_path / "b").mkdir()
    first = _eval_every_run(tmp_path / "b", stop_at=7)
    rest = _eval_every_run(tmp_path / "b", None, resume=True)

    def evals(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (r["step"], r["evaluation"], round(r["test_loss"], 6))
            for r in records
            if r["kind"] == "eval"
        ]

    assert evals(first.records) + evals(rest.records) == evals(whole.records)
    assert evals(first.records) and evals(rest.records)


def test_eval_every_samples_needs_eval_data() -> None:
    model = nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = BatchSizeScheduler(make_policy("constant", batch_size=4), AdaptiveLoader(TRAIN, 4), opt)
    with pytest.raises(ValueError, match="eval_every_samples=10 needs eval_data"):
        Trainer(model, opt, sched, eval_every_samples=10)
    with pytest.raises(ValueError, match="eval_every_samples"):
        Trainer(model, opt, sched, eval_data=TEST, eval_every_samples=-1)


# ---------------------------------------------------------------------- 5. evaluate
def _linear_model() -> nn.Linear:
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    return model


def _hand_metrics(inputs: list[list[float]], targets: list[int]) -> tuple[float, float]:
    weights = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
    bias = [0.0, 0.5, 0.0]
    total, correct = 0.0, 0
    for x, t in zip(inputs, targets, strict=True):
        logits = [w[0] * x[0] + w[1] * x[1] + b for w, b in zip(weights, bias, strict=True)]
        lse = math.log(sum(math.exp(v) for v in logits))
        total += lse - logits[t]
        correct += max(range(3), key=lambda k: logits[k]) == t
    return total / len(targets), 100.0 * correct / len(targets)


INPUTS = [[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [0.5, 0.25], [2.0, -3.0], [-0.5, 0.4], [0.1, 0.2]]
TARGETS = [0, 1, 2, 1, 2, 0, 1]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 100])
def test_evaluate_matches_hand_computation(batch_size) -> None:
    data = ArrayDataset(torch.tensor(INPUTS), torch.tensor(TARGETS), num_classes=3)
    model = _linear_model()
    model.train()
    got = evaluate(model, data, F.cross_entropy, batch_size=batch_size)
    loss, accuracy = _hand_metrics(INPUTS, TARGETS)
    assert got["test_loss"] == pytest.approx(loss, rel=1e-6)
    assert got["test_accuracy"] == pytest.approx(accuracy)
    assert 0 < got["test_accuracy"] < 100  # some right, some wrong: the count is tested
    assert model.training  # the mode is restored


def test_evaluate_restores_eval_mode_and_uses_no_dropout() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.9), nn.Linear(8, 3)).eval()
    first = evaluate(model, TEST, F.cross_entropy, batch_size=4)
    second = evaluate(model, TEST, F.cross_entropy, batch_size=20)
    assert not model.training
    assert first["test_loss"] == pytest.approx(second["test_loss"], rel=1e-6)
    assert first["test_loss"] == pytest.approx(_plain_evaluate_eval(model), rel=1e-6)


def _plain_evaluate_eval(model: nn.Module) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(TEST.inputs), TEST.targets))


class FirstOutput(nn.Module):
    """``inner(x)[:, 0]``: N outputs instead of N × 1."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[:, 0]


def test_evaluate_regression_has_no_accuracy() -> None:
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]])
    y = torch.tensor([[1.0], [2.0], [0.0]])
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0]]))
        model.bias.zero_()
    got = evaluate(model, ArrayDataset(x, y), F.mse_loss, batch_size=2)
    # predictions 3, 1, 2 against 1, 2, 0: squared errors 4, 1, 4
    assert got["test_loss"] == pytest.approx(3.0)
    assert got["test_accuracy"] is None
    # Float 1-D targets (outputs of shape N) are regression too.
    flat = evaluate(FirstOutput(model), ArrayDataset(x, y[:, 0]), F.mse_loss, batch_size=3)
    assert flat["test_loss"] == pytest.approx(3.0)
    assert flat["test_accuracy"] is None


def test_evaluate_empty_dataset_raises() -> None:
    empty = ArrayDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        evaluate(_linear_model(), empty, F.cross_entropy)


def test_evaluate_images() -> None:
    data = synthetic_images(10, num_classes=3, image_size=4, channels=1, seed=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    got = evaluate(model, data, F.cross_entropy, batch_size=3)
    with torch.no_grad():
        out = model(data.inputs)
    assert got["test_loss"] == pytest.approx(float(F.cross_entropy(out, data.targets)), rel=1e-6)
    expected = 100.0 * float((out.argmax(1) == data.targets).sum()) / 10
    assert got["test_accuracy"] == pytest.approx(expected)


# ---------------------------------------------------------------------- 6. callbacks
def _strict_json(line: str) -> dict[str, Any]:
    def refuse(token: str) -> Any:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


def test_jsonl_logger_writes_standard_json(tmp_path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    logger = JsonlLogger(path)
    logger.on_record(None, {"kind": "step", "loss": math.nan, "lr": math.inf, "step": 1})
    logger.on_record(None, {"kind": "epoch", "test_loss": -math.inf, "train_loss": 0.5})
    logger.close()
    lines = path.read_text().splitlines()
    assert [_strict_json(line) for line in lines] == [
        {"kind": "step", "loss": None, "lr": None, "step": 1},
        {"kind": "epoch", "test_loss": None, "train_loss": 0.5},
    ]


def test_jsonl_logger_state_truncates_and_checks_length(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    logger = JsonlLogger(path)
    logger.on_record(None, {"step": 1})
    logger.on_record(None, {"step": 2})
    state = logger.state_dict()  # flushed while open
    assert state == {"bytes": path.stat().st_size}
    logger.on_record(None, {"step": 3})
    logger.close()
    resumed = JsonlLogger(path)
    resumed.load_state_dict(state)
    assert [json.loads(s)["step"] for s in path.read_text().splitlines()] == [1, 2]
    resumed.on_record(None, {"step": 3})
    resumed.close()
    assert [json.loads(s)["step"] for s in path.read_text().splitlines()] == [1, 2, 3]
    # A file shorter than the checkpoint recorded: edited or replaced.
    path.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="shorter") as info:
        JsonlLogger(path).load_state_dict(state)
    assert str(path) in str(info.value)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        JsonlLogger(path).load_state_dict(state)
    JsonlLogger(path).load_state_dict({"bytes": 0})  # nothing expected: fine
    assert JsonlLogger(tmp_path / "none.jsonl").state_dict() == {"bytes": 0}


def _tiny_trainer(callbacks=(), **options: Any) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pol = make_policy("constant", batch_size=8)
    sched = BatchSizeScheduler(pol, AdaptiveLoader(TRAIN, 8, seed=0), opt)
    return Trainer(model, opt, sched, callbacks=callbacks, **options)


def test_tensorboard_logger_writes_events(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from adabatch.training import TensorBoardLogger

    probe = Probe()
    trainer = _tiny_trainer(
        [TensorBoardLogger(tmp_path / "tb"), probe], eval_data=TEST, log_every=2
    )
    trainer.fit(2)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    steps = [r for r in probe.records if r["kind"] == "step"]
    epochs = [r for r in probe.records if r["kind"] == "epoch"]
    train = acc.Scalars("train/loss")
    assert [e.step for e in train] == [r["samples"] for r in steps]  # x-axis: samples
    assert [e.value for e in train] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    test = acc.Scalars("test/loss")
    assert [e.step for e in test] == [r["samples"] for r in epochs]
    assert [e.value for e in test] == pytest.approx([r["test_loss"] for r in epochs], rel=1e-6)
    assert "test/accuracy" in acc.Tags()["scalars"]


def test_progress_bar_runs_with_tqdm(capsys) -> None:
    pytest.importorskip("tqdm")
    trainer = _tiny_trainer([ProgressBar(disable=False)], eval_data=TEST, log_every=1)
    result = trainer.fit(2)
    assert result.status == "completed"
    captured = capsys.readouterr()
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    assert "epoch 1: batch 8" in captured.out  # the per-epoch summary line


# ---------------------------------------------------------------------- 7. bad input
def test_trainer_refuses_a_policy_fed_by_the_callers_loop() -> None:
    model = nn.Sequential(nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for estimator, refused in (("two-batch", True), ("per-sample", False)):
        pol = make_policy("noise-scale", batch_size=8, estimator=estimator)
        assert pol.stats_request.per_sample is not refused
        sched = BatchSizeScheduler(pol, AdaptiveLoader(TRAIN, 8, seed=0), opt)
        if refused:
            with pytest.raises(ValueError, match="reads statistics that are not per-sample"):
                Trainer(model, opt, sched)
        else:
            assert Trainer(model, opt, sched).tracker is not None


def test_trainer_rejects_bad_arguments() -> None:
    trainer = _tiny_trainer()
    with pytest.raises(TypeError, match="BatchSizeScheduler, got dict"):
        Trainer(trainer.model, trainer.optimizer, {})  # type: ignore[arg-type]
    for name, value in (("log_every", 0), ("eval_batch_size", -2), ("checkpoint_every_epochs", 0)):
        with pytest.raises(ValueError, match=rf"{name} must be >= 1, got {value}"):
            Trainer(trainer.model, trainer.optimizer, trainer.scheduler, **{name: value})
    with pytest.raises(ValueError, match=r"checkpoint_every_steps must be >= 0, got -1"):
        Trainer(trainer.model, trainer.optimizer, trainer.scheduler, checkpoint_every_steps=-1)
    # The wrong type is a TypeError, as everywhere in adabatch.
    with pytest.raises(TypeError, match=r"log_every must be an integer, got bool True"):
        Trainer(trainer.model, trainer.optimizer, trainer.scheduler, log_every=True)
    for epochs, error, text in (
        (0, ValueError, "epochs must be >= 1, got 0"),
        (-1, ValueError, "epochs must be >= 1, got -1"),
        (1.5, TypeError, "epochs must be an integer, got float 1.5"),
        (True, TypeError, "epochs must be an integer, got bool True"),
    ):
        with pytest.raises(error, match=text):
            trainer.fit(epochs)  # type: ignore[arg-type]
    other = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="different optimizer"):
        Trainer(trainer.model, other, trainer.scheduler)
    assert trainer.step_count == 0  # nothing ran


def test_load_checkpoint_errors(tmp_path) -> None:
    trainer = _tiny_trainer()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        trainer.load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="no checkpoint path"):
        trainer.load_checkpoint()
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not an adabatch checkpoint"):
        trainer.load_checkpoint(tmp_path / "list.pt")
    save_checkpoint({"version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        trainer.load_checkpoint(tmp_path / "future.pt")
    # A checkpoint of adabatch 0.1 (format 1: the policy held the batch size) is refused with
    # a message naming the version and what to do.
    save_checkpoint({"version": 1, "scheduler": {}, "trainer": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"version 1 was written by adabatch 0\.1: resume it"):
        trainer.load_checkpoint(tmp_path / "old.pt")


def test_checkpoint_with_other_callbacks_is_refused(tmp_path) -> None:
    path = tmp_path / "ckpt.pt"
    saver = _tiny_trainer([Callback(), Callback()], checkpoint_path=path)
    saver.fit(1)
    loader = _tiny_trainer([Callback()], checkpoint_path=path)
    before = [p.detach().clone() for p in loader.model.parameters()]
    with pytest.raises(ValueError, match="2 callbacks, this trainer has 1"):
        loader.load_checkpoint()
    for p, q in zip(loader.model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # refused before anything was restored
    same = _tiny_trainer([Callback(), Callback()], checkpoint_path=path)
    same.load_checkpoint()
    assert same.step_count == saver.step_count and same.epoch == 1


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"version": 1, "value": torch.arange(5)}, path)
    good = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"version": 1, "value": torch.arange(7)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary left
    assert torch.equal(load_checkpoint(path)["value"], torch.arange(5))


def test_trainer_save_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    trainer = _tiny_trainer(checkpoint_path=path)
    trainer.fit(1)
    good = path.read_bytes()
    calls = []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(1)
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.fit(2)
    assert calls
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
