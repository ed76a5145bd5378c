"""Two gloo processes: the Trainer over DDP equals one process on the same global batches.

N = 25 with a norm test growing the batch 4 → 6 → 7 → 8: the first two epochs end with a global
batch of one sample, so rank 1's share is empty there (it steps, all-reduces its statistics and its
loss with nothing); the evaluation set (7 samples, batches of 3) ends the same way.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from _dist import run_on_ranks
from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.data import rank_span
from adabatch.datasets import ArrayDataset
from adabatch.distributed import init_from_env, wrap_model
from adabatch.training import Callback, JsonlLogger, Trainer, load_checkpoint

pytestmark = [
    pytest.mark.distributed,
    # The global batch of one sample leaves the norm test undefined: it keeps the batch, warns.
    pytest.mark.filterwarnings("ignore:norm-test policy:RuntimeWarning"),
]

WORLD = 2
EPOCHS = 3
N = 25
BATCH = 4
TIMING = ("time", "elapsed")


def _data(n: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    teacher = torch.randn(6, 3, generator=g, dtype=torch.float64)
    noise = 0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return ArrayDataset(x, (x @ teacher + noise).argmax(1), num_classes=3)


class Recorder(Callback):
    def __init__(self) -> None:
        self.global_sizes: list[int] = []
        self.local_sizes: list[int] = []
        self.records: list[dict[str, Any]] = []
        self.statuses: list[str] = []

    def on_step_end(self, trainer: Trainer) -> None:
        self.global_sizes.append(trainer.loader.last_global_batch_size)
        self.local_sizes.append(trainer.loader.last_batch_size)

    def on_record(self, trainer: Trainer, record: Any) -> None:
        self.records.append({k: v for k, v in record.items() if k not in TIMING})

    def on_fit_end(self, trainer: Trainer, status: str) -> None:
        self.statuses.append(status)


def _count_tokens(batch: Any) -> torch.Tensor:
    return (batch[1] + 1).sum()


def _full(p: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value (FSDP2 holds a shard: gather it)."""
    full = p.full_tensor() if hasattr(p, "full_tensor") else p
    return full.detach().clone()


def _run(
    *, distributed: bool, checkpoint: str | None = None, parallel: str = "ddp"
) -> dict[str, Any]:
    torch.manual_seed(0)  # the same initial model on every rank and in the reference
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    # Wrapped before the optimizer is built: FSDP2 replaces the parameters by shards.
    net = wrap_model(model, parallel, init_from_env())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.5)
    policy = make_policy("norm-test", batch_size=BATCH, eta=0.8, max_batch_size=8)
    loader = AdaptiveLoader(_data(N, 1), BATCH, seed=3)  # rank and world from the group
    assert loader.world_size == (WORLD if distributed else 1)
    scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt")
    assert isinstance(net, DistributedDataParallel) == (distributed and parallel == "ddp")
    recorder = Recorder()
    trainer = Trainer(
        net,
        optimizer,
        scheduler,
        eval_data=_data(7, 2),
        eval_batch_size=3,
        # The same logger on every rank, one file: rank 0 alone writes it (rank_zero_only).
        callbacks=[recorder]
        + (
            [JsonlLogger(os.path.join(os.path.dirname(checkpoint), "metrics.jsonl"))]
            if checkpoint
            else []
        ),
        log_every=2,
        checkpoint_path=checkpoint,
        # A per-sample "token" count (target + 1): each rank counts its share, the records
        # and the losses per token must still equal one process's.
        count_tokens=_count_tokens,
        tokens_per_sample=3,
    )
    result = trainer.fit(EPOCHS)
    out = {
        "status": result.status,
        "counters": (result.epochs, result.steps, result.samples),
        "global": recorder.global_sizes,
        "local": recorder.local_sizes,
        "records": recorder.records,
        "statuses": recorder.statuses,
        "decisions": [
            (d.step, d.epoch, d.old_batch_size, d.new_batch_size, d.statistic, d.value)
            for d in scheduler.decisions
        ],
        "lr": optimizer.param_groups[0]["lr"],
        "params": [_full(p) for p in net.parameters()],
    }
    trainer.tracker.remove()
    del trainer, net  # release the DDP reducer before the process group goes
    return out


def _ddp_run(rank: int, out_dir: str, parallel: str) -> dict[str, Any]:
    return _run(distributed=True, checkpoint=os.path.join(out_dir, "ckpt.pt"), parallel=parallel)


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def ddp(request, tmp_path_factory) -> tuple[list[dict[str, Any]], Any]:
    """The same run on 2 ranks, the model replicated (DDP) or sharded (FSDP2)."""
    tmp = tmp_path_factory.mktemp(f"{request.param}_trainer")
    return run_on_ranks(_ddp_run, tmp, request.param, world=WORLD), tmp


def _canon(value: Any) -> Any:
    """``value`` with NaN floats replaced by a marker (NaN != NaN would fail ==)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_canon(v) for v in value)
    return value


def test_ranks_agree_and_a_rank_stepped_with_nothing(ddp) -> None:
    ranks, _ = ddp
    first, second = ranks
    for key in ("status", "counters", "global", "records", "statuses", "decisions", "lr"):
        assert _canon(first[key]) == _canon(second[key]), key
    for p, q in zip(first["params"], second["params"], strict=True):
        assert torch.equal(p, q)
    assert first["status"] == "completed" and first["statuses"] == ["completed"]
    # the tokens of every step, summed over both ranks' shares (targets + 1 of the samples)
    last = [r for r in first["records"] if r["kind"] == "epoch"][-1]
    assert last["tokens"] == EPOCHS * int((_data(N, 1).targets + 1).sum())
    # The shares partition each global batch, as rank_span says.
    for n, a, b in zip(first["global"], first["local"], second["local"], strict=True):
        assert (a, b) == tuple(hi - lo for lo, hi in (rank_span(n, WORLD, r) for r in (0, 1)))
    assert 1 in first["global"] and 0 in second["local"]  # rank 1 had an empty share
    assert first["decisions"], "no decision: the run does not exercise the policy"
    # Two epochs ended with a global batch of one, at two different batch sizes.
    assert first["global"].count(1) >= 2
    assert len(first["decisions"]) >= 2


def test_ddp_trainer_matches_a_single_process(ddp) -> None:
    ranks, tmp = ddp
    single = _run(distributed=False)
    ddp_run = ranks[0]
    assert single["global"] == single["local"] == ddp_run["global"]
    assert single["counters"] == ddp_run["counters"]
    assert len(single["decisions"]) == len(ddp_run["decisions"])
    for mine, theirs in zip(single["decisions"], ddp_run["decisions"], strict=True):
        assert mine[:5] == theirs[:5]
        assert mine[5] == pytest.approx(theirs[5], rel=1e-9)
    assert single["lr"] == pytest.approx(ddp_run["lr"], rel=1e-12)
    for p, q in zip(single["params"], ddp_run["params"], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    # The records: same keys and counters; losses equal up to summation order.
    assert len(single["records"]) == len(ddp_run["records"])
    for mine, theirs in zip(single["records"], ddp_run["records"], strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            if isinstance(value, float):
                assert theirs[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key
            else:
                assert theirs[key] == value, key
    # One writer: the logger that both ranks had wrote each record once.
    lines = (tmp / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(ddp_run["records"])
    # Rank 0 wrote the final checkpoint; it holds the final parameters.
    state = load_checkpoint(tmp / "ckpt.pt")
    assert state["scheduler"]["epoch"] == EPOCHS
    for p, q in zip(state["model"].values(), ddp_run["params"], strict=True):
        assert torch.equal(p, q)
