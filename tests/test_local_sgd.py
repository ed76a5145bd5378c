"""Local SGD on two gloo processes, against loops written here in one process.

The reference for averaging is two model copies trained in turn in one process on the shares
`AdaptiveLoader(rank=r, world_size=2)` gives them, averaged by hand every H steps. With H = 1
local SGD must equal synchronous data-parallel SGD step for step; the pooled statistics must
equal those of one process over the union of the workers' batches.
"""

from __future__ import annotations

import doctest
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import adabatch.local.averaging as averaging_module
from _dist import exit_worker, init_group, run_on_ranks
from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.datasets import ArrayDataset
from adabatch.distributed import init_from_env, wrap_model
from adabatch.local import LocalSGD, OuterNesterov, WorkerLostError
from adabatch.stats import GradStatsTracker, compute_stats

pytestmark = pytest.mark.distributed

WORLD = 2
N = 48


def _data() -> ArrayDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, 5, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(5, 3, generator=g, dtype=torch.float64)).argmax(1)
    return ArrayDataset(x, y, num_classes=3)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------ pure parts
def test_the_docstring_examples() -> None:
    assert doctest.testmod(averaging_module).failed == 0


def test_the_outer_step_is_torch_nesterov_sgd_on_the_displacement() -> None:
    anchor = [torch.tensor([1.0, -2.0])]
    outer = OuterNesterov(lr=0.7, momentum=0.9)
    theta = torch.nn.Parameter(anchor[0].clone())
    reference = torch.optim.SGD([theta], lr=0.7, momentum=0.9, nesterov=True)
    state, buffers = list(anchor), None
    for mean in ([torch.tensor([0.5, -1.0])], [torch.tensor([0.1, 0.3])]):
        delta = averaging_module.outer_gradient(state, mean)
        state, buffers = outer.step(state, delta, buffers)
        theta.grad = delta[0].clone()
        reference.step()
        torch.testing.assert_close(state[0], theta.detach())
    # lr 1, no momentum: plain averaging
    mean = [torch.tensor([0.25, 4.0])]
    plain, _ = OuterNesterov(lr=1.0, momentum=0.0).step(
        anchor, averaging_module.outer_gradient(anchor, mean), None
    )
    torch.testing.assert_close(plain[0], mean[0])
    with pytest.raises(ValueError, match="momentum must be in"):
        OuterNesterov(momentum=1.0)
    with pytest.raises(ValueError, match="lr"):
        OuterNesterov(lr=0.0)


# ------------------------------------------------------------------------ references
def _hand_local_sgd(h: int, steps: int, outer: OuterNesterov | None = None) -> list:
    """Two workers in turn in one process, averaged (or outer-stepped) by hand every h steps."""
    models = [_model() for _ in range(WORLD)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5) for m in models]
    loaders = [AdaptiveLoader(_data(), 8, seed=1, rank=r, world_size=WORLD) for r in range(WORLD)]
    iters = [iter(loader) for loader in loaders]
    anchor, buffers = _params(models[0]), None
    for step in range(1, steps + 1):
        for r in range(WORLD):
            try:
                x, y = next(iters[r])
            except StopIteration:
                iters[r] = iter(loaders[r])
                x, y = next(iters[r])
            opts[r].zero_grad()
            F.cross_entropy(models[r](x), y).backward()
            opts[r].step()
        if step % h == 0:
            per = [_params(m) for m in models]
            mean = [sum(ts) / WORLD for ts in zip(*per, strict=True)]
            if outer is not None:
                delta = [a - m for a, m in zip(anchor, mean, strict=True)]
                mean, buffers = outer.step(anchor, delta, buffers)
                anchor = [t.clone() for t in mean]
            for m in models:
                with torch.no_grad():
                    for p, v in zip(m.parameters(), mean, strict=True):
                        p.copy_(v)
    return _params(models[0])


def _worker_run(
    h: int, steps: int, outer: OuterNesterov | None = None, ddp: bool = False
) -> dict[str, Any]:
    model = _model()
    if ddp:
        model = wrap_model(model, "ddp", init_from_env())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    loader = AdaptiveLoader(_data(), 8, seed=1)
    constant = make_policy("constant", batch_size=8 if ddp else 4)
    scheduler = BatchSizeScheduler(constant, loader, opt, local_steps=None if ddp else h)
    local = None if ddp else LocalSGD(model, scheduler, outer=outer)
    trajectory = []
    done = 0
    while done < steps:
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            scheduler.step()
            done += 1
            if local is not None and local.sync_due():
                local.sync()
            trajectory.append(_params(model))
            if done == steps:
                break
    del model
    return {"final": trajectory[-1], "trajectory": trajectory}


def _rank_averaging(rank: int, out_dir: str, case: str) -> dict[str, Any]:
    if case == "h3":
        return _worker_run(3, 9)
    if case == "diloco":
        return _worker_run(3, 9, outer=OuterNesterov(lr=0.7, momentum=0.9))
    if case == "h1":
        return _worker_run(1, 9)
    return _worker_run(1, 9, ddp=True)


@pytest.mark.parametrize(
    ("case", "outer"), [("h3", None), ("diloco", OuterNesterov(lr=0.7, momentum=0.9))]
)
def test_averaging_matches_a_hand_loop(tmp_path, case, outer) -> None:
    ranks = run_on_ranks(_rank_averaging, tmp_path, case, world=WORLD)
    expected = _hand_local_sgd(3, 9, outer)
    for worker in ranks:  # both workers hold the averaged parameters after the last round
        for p, q in zip(worker["final"], expected, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    # between rounds the workers differ (they trained on different shares)
    assert not torch.equal(ranks[0]["trajectory"][0][0], ranks[1]["trajectory"][0][0])


def test_h1_with_averaging_is_synchronous_data_parallel_sgd(tmp_path) -> None:
    (tmp_path / "local").mkdir()
    local = run_on_ranks(_rank_averaging, tmp_path / "local", "h1", world=WORLD)
    (tmp_path / "ddp").mkdir()
    ddp = run_on_ranks(_rank_averaging, tmp_path / "ddp", "ddp", world=WORLD)
    for mine, theirs in zip(local[0]["trajectory"], ddp[0]["trajectory"], strict=True):
        for p, q in zip(mine, theirs, strict=True):  # step for step
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------ the adaptive batch
def _adaptive_run(rank: int, out_dir: str, stop_after: int | None, resume: bool) -> dict:
    """The norm test sizing the local batch; optionally stop after a round and resume."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    loader = AdaptiveLoader(_data(), 2 * WORLD, seed=2)
    policy = make_policy("norm-test", batch_size=2, eta=0.6, max_batch_size=12)
    scheduler = BatchSizeScheduler(policy, loader, opt, lr_rule="sqrt", local_steps=2)
    local = LocalSGD(model, scheduler)
    tracker = GradStatsTracker(model)
    path = os.path.join(out_dir, f"ckpt{rank}.pt")
    if resume:
        state = torch.load(path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        local.load_state_dict(state["local"])
    rounds: list[dict] = []
    while local.rounds < 12:
        for x, y in loader:
            if scheduler.step_count % 2 == 0:  # a round begins: this worker's batch at x̄
                measured = scheduler.wants_stats
                rounds.append({"x": x, "y": y, "params": _params(model), "measured": measured})
            opt.zero_grad()
            with scheduler.measure(tracker):
                F.cross_entropy(model(x), y).backward()
            opt.step()
            scheduler.step()
            if local.sync_due():
                local.sync()
                stats = scheduler.last_statistics
                rounds[-1].update(
                    batch=local.local_batch_size,
                    lr=opt.param_groups[0]["lr"],
                    pooled=None
                    if not rounds[-1]["measured"]
                    else (
                        stats.num_samples,
                        float(stats.sum_sq_norms),
                        torch.cat([g.flatten() for g in stats.grad_sum.values()]),
                    ),
                )
                if stop_after is not None and local.rounds == stop_after:
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "local": local.state_dict(),
                        },
                        path,
                    )
                    tracker.remove()
                    return {"rounds": rounds, "final": _params(model)}
            if local.rounds >= 12:
                break
    tracker.remove()
    return {"rounds": rounds, "final": _params(model), "sizes": [r["batch"] for r in rounds]}


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("adaptive")
    return run_on_ranks(_adaptive_run, tmp, None, False, world=WORLD)


def test_every_worker_adopts_the_same_growing_batch(adaptive) -> None:
    a, b = adaptive
    assert a["sizes"] == b["sizes"], (a["sizes"], b["sizes"])
    assert a["sizes"] == sorted(a["sizes"]) and a["sizes"][-1] > 2  # monotone, it grew
    assert max(a["sizes"]) <= 12  # capped
    # the LR follows √(b/b₀) on both workers
    for r in a["rounds"]:
        assert r["lr"] == pytest.approx(0.05 * (r["batch"] / 2) ** 0.5, rel=1e-12)
    for p, q in zip(a["final"], b["final"], strict=True):
        assert torch.equal(p, q)


def test_pooled_statistics_equal_one_process_over_the_union(adaptive) -> None:
    a, b = adaptive
    checked = 0
    for ra, rb in zip(a["rounds"], b["rounds"], strict=True):
        if ra["pooled"] is None:
            continue  # at the cap: no measurement
        torch.testing.assert_close(ra["params"][0], rb["params"][0])  # both at x̄
        model = _model()
        with torch.no_grad():
            for p, v in zip(model.parameters(), ra["params"], strict=True):
                p.copy_(v)
        x, y = torch.cat([ra["x"], rb["x"]]), torch.cat([ra["y"], rb["y"]])
        union = compute_stats(model, nn.CrossEntropyLoss(), x, y, engine="reference")
        n, s2, grad_sum = ra["pooled"]
        assert n == len(y)
        assert s2 == pytest.approx(float(union.sum_sq_norms), rel=1e-10)
        expected = torch.cat([g.flatten() for g in union.grad_sum.values()])
        torch.testing.assert_close(grad_sum, expected, rtol=1e-10, atol=1e-12)
        checked += 1
    assert checked >= 2, checked


def test_a_run_resumed_at_a_round_continues_exactly(adaptive, tmp_path) -> None:
    first = run_on_ranks(_adaptive_run, tmp_path, 5, False, world=WORLD)
    (tmp_path / "again").mkdir()
    for r in range(WORLD):  # the checkpoints, beside the second group's init file
        (tmp_path / "again" / f"ckpt{r}.pt").write_bytes((tmp_path / f"ckpt{r}.pt").read_bytes())
    rest = run_on_ranks(_adaptive_run, tmp_path / "again", None, True, world=WORLD)
    for rank in range(WORLD):
        sizes = [r["batch"] for r in first[rank]["rounds"] + rest[rank]["rounds"]]
        assert sizes == adaptive[rank]["sizes"]
        for p, q in zip(rest[rank]["final"], adaptive[rank]["final"], strict=True):
            assert torch.equal(p, q)


# ------------------------------------------------------------------------ failures
def _dying(rank: int, out_dir: str) -> None:
    init_group(rank, out_dir, WORLD, timeout=20)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = AdaptiveLoader(_data(), 8, seed=1)
    scheduler = BatchSizeScheduler(make_policy("constant", batch_size=4), loader, local_steps=2)
    local = LocalSGD(model, scheduler)
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        scheduler.step()
        if local.sync_due():
            if rank == 1 and local.rounds == 1:
                os._exit(3)  # this worker dies before the second round
            try:
                local.sync()
            except WorkerLostError as exc:
                Path(out_dir, "error.pkl").write_bytes(pickle.dumps(str(exc)))
                exit_worker()
    exit_worker()


def test_a_worker_that_dies_fails_the_round_clearly(tmp_path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = mp.start_processes(
        _dying, args=(str(tmp_path),), nprocs=WORLD, join=False, start_method="spawn"
    )
    # not context.join(): it would kill rank 0 as soon as rank 1 is seen dead
    for process in context.processes:
        process.join(timeout=60)
    assert [p.exitcode for p in context.processes] == [0, 3]
    message = pickle.loads((tmp_path / "error.pkl").read_bytes())
    assert "synchronisation round 2 (after local step 4) failed: a worker did not" in message
    assert "restart from the last checkpoint" in message


def test_bad_arguments_are_refused() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = AdaptiveLoader(_data(), 8, seed=1)
    constant = make_policy("constant", batch_size=8)
    with pytest.raises(ValueError, match="local_steps"):
        BatchSizeScheduler(constant, loader, opt, local_steps=0)
    with pytest.raises(ValueError, match="built with local_steps=H"):
        LocalSGD(model, BatchSizeScheduler(constant, loader, opt))
    wrong = make_policy("norm-test", batch_size=4)
    with pytest.raises(ValueError, match=r"global batch \(8\) is not the policy's local batch"):
        BatchSizeScheduler(wrong, loader, opt, local_steps=2)
    with pytest.raises(TypeError, match="local SGD trains unwrapped models"):
        fake = nn.parallel.DistributedDataParallel.__new__(nn.parallel.DistributedDataParallel)
        LocalSGD(fake, BatchSizeScheduler(constant, loader, opt, local_steps=2))
    with pytest.raises(RuntimeError, match="end_round is for local SGD"):
        BatchSizeScheduler(constant, loader, opt).end_round()


def test_one_worker_is_plain_sgd_with_a_round_every_h_steps() -> None:
    """World 1: the rounds change nothing; the norm test decides at them only."""
    model, reference = _model(), _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    loader = AdaptiveLoader(_data(), 2, seed=1)
    policy = make_policy("norm-test", batch_size=2, eta=0.5, max_batch_size=16)
    scheduler = BatchSizeScheduler(policy, loader, opt, local_steps=3)
    local = LocalSGD(model, scheduler)
    tracker = GradStatsTracker(model)
    decided_at = []
    for x, y in loader:
        opt.zero_grad()
        ref_opt.zero_grad()
        with scheduler.measure(tracker):
            F.cross_entropy(model(x), y).backward()
        F.cross_entropy(reference(x), y).backward()
        opt.step()
        ref_opt.step()
        assert scheduler.step() is None  # a test reading statistics never decides mid-round
        if local.sync_due() and local.sync() is not None:
            decided_at.append(scheduler.step_count)
    tracker.remove()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert decided_at and all(s % 3 == 0 for s in decided_at)
    assert local.rounds == scheduler.step_count // 3


def test_the_outer_step_moves_parameters_and_averages_buffers() -> None:
    """BatchNorm's running variance is averaged, never extrapolated (it must stay >= 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = AdaptiveLoader(_data(), 8, seed=1)
    scheduler = BatchSizeScheduler(make_policy("constant", batch_size=8), loader, opt,
                                   local_steps=4)  # fmt: skip
    local = LocalSGD(model, scheduler, outer=OuterNesterov(lr=0.7, momentum=0.9))
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x * 0.1), y).backward()
        opt.step()
        scheduler.step()
        if local.sync_due():
            before = [b.clone() for b in model.buffers() if b.is_floating_point()]
            params = _params(model)
            local.sync()
            after = [b for b in model.buffers() if b.is_floating_point()]
            for b0, b1 in zip(before, after, strict=True):
                assert torch.equal(b0, b1)  # one worker: the mean is its own value
            assert not torch.equal(params[0], _params(model)[0])  # the outer step moved θ
    assert local.rounds >= 1 and float(model[0].running_var.min()) >= 0


def test_schedules_decide_on_their_own_clock_and_windowed_tests_are_refused() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = AdaptiveLoader(_data(), 4, seed=1)
    policy = make_policy("schedule", batch_size=4, factor=2, every=1, max_batch_size=16)
    scheduler = BatchSizeScheduler(policy, loader, opt, local_steps=5)
    for _epoch in range(3):
        for _ in loader:
            opt.step()
            scheduler.step()
        scheduler.step_epoch()
    assert [d.new_batch_size for d in scheduler.decisions] == [8, 16]  # every epoch, ×2
    divebatch = make_policy("divebatch", batch_size=4, dataset_size=N, max_batch_size=16)
    with pytest.raises(ValueError, match="measures 1 epoch"):
        BatchSizeScheduler(divebatch, AdaptiveLoader(_data(), 4), opt, local_steps=5)
