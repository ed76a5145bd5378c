"""``torchrun -m adabatch run ... --train.parallel=local``: local SGD through the Trainer.

Two gloo workers under torchrun: rounds every H steps and at each epoch's end, the local batch
grown by the norm test at the rounds only, the same size on both workers, and a run extended
from its epoch-end checkpoint equal to the uninterrupted one (each worker's optimizer state
restored).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.local import LocalSGD
from test_torchrun import _env, _rank_output, _records, _torchrun

pytestmark = pytest.mark.distributed

H = 4
OPTIONS = [
    "--data.train_size=600",
    "--data.test_size=200",
    "--train.log_every=1",
    "--train.parallel=local",
    f"--train.local_steps={H}",
    "--policy.interval=1",
    "--no-progress",
]


def _run(tmp: Path, name: str, epochs: int, *extra: str) -> Path:
    out, logs = tmp / name, tmp / f"{name}-logs"
    cmd = _torchrun(
        logs, "-m", "adabatch", "run", "quick/norm-test", f"--out={out}", f"--epochs={epochs}",
        *OPTIONS, *extra,
    )  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "a round every 4 steps, average" in _rank_output(logs, 0)
    return out


def test_local_sgd_under_torchrun(tmp_path) -> None:
    out = _run(tmp_path, "whole", 3)
    records = _records(out)
    steps = [r for r in records if r["kind"] == "step"]
    # rounds: every H steps since the last round, and one closing each epoch
    rounds, since, expected = 0, 0, []
    for record in steps:
        since += 1
        if since == H or record is steps[-1] or record["samples"] % 600 == 0:
            rounds, since = rounds + 1, 0
        expected.append(rounds)
    assert [r["rounds"] for r in steps] == expected
    # the global batch is 2 × the local one; it grew, only at rounds, never shrank
    sizes = [r["batch_size"] for r in steps]
    assert all(s % 2 == 0 for s in sizes[:-1]) and sizes[0] == 32 and max(sizes) > 32
    decided = [r for r in steps if "next_batch_size" in r]
    assert decided and all(r["rounds"] > 0 for r in decided)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["local_sgd"]["rounds"] == expected[-1]
    assert state["ranks"][0]["optimizer"] is not None  # each worker's own
    saved = json.loads((out / "config.json").read_text())
    assert saved["distributed"]["parallel"] == "local"


def _trainer_run(rank: int, out_dir: str, epochs: int, resume: bool) -> dict:
    """The quick suite's norm test under local SGD, built by the experiments layer."""
    from adabatch.distributed import init_from_env
    from adabatch.experiments.build import build
    from adabatch.experiments.run import experiment_config
    from adabatch.experiments.suites import experiment

    suite, method = experiment("quick/norm-test")
    overrides = [
        ("data.train_size", 600), ("data.test_size", 200), ("train.parallel", "local"),
        ("train.local_steps", H), ("policy.interval", 1), ("train.tensorboard", False),
        ("train.outer", "nesterov"), ("optimizer.momentum", 0.5),
    ]  # fmt: skip
    built = build(experiment_config(suite, method, overrides), init_from_env())
    trainer = built.trainer(checkpoint_path=Path(out_dir) / "ckpt.pt")
    if resume:
        trainer.load_checkpoint()
    trainer.fit(epochs)
    sizes = [d.new_batch_size for d in built.scheduler.decisions]
    params = [p.detach().clone() for p in built.model.parameters()]
    return {"sizes": sizes, "params": params, "rounds": built.local_sgd.rounds}


def test_a_local_sgd_trainer_resumed_at_an_epoch_end_is_the_same_run(tmp_path) -> None:
    from _dist import run_on_ranks

    whole = run_on_ranks(_trainer_run, tmp_path, 3, False)
    (tmp_path / "part").mkdir()
    run_on_ranks(_trainer_run, tmp_path / "part", 2, False)
    (tmp_path / "rest").mkdir()
    (tmp_path / "rest" / "ckpt.pt").write_bytes((tmp_path / "part" / "ckpt.pt").read_bytes())
    rest = run_on_ranks(_trainer_run, tmp_path / "rest", 3, True)
    for rank in range(2):
        assert rest[rank]["sizes"] == whole[rank]["sizes"] and whole[rank]["sizes"]
        assert rest[rank]["rounds"] == whole[rank]["rounds"]
        for p, q in zip(rest[rank]["params"], whole[rank]["params"], strict=True):
            assert torch.equal(p, q)
    for p, q in zip(whole[0]["params"], whole[1]["params"], strict=True):
        assert torch.equal(p, q)  # an epoch ends with a round: the workers agree


def test_the_suite_needs_two_workers(tmp_path, capsys) -> None:
    from adabatch.cli import main

    code = main(["run", "local-sgd/local-h4", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "suite 'local-sgd' compares 2 workers; this is 1 process(es)" in err
    assert "torchrun --nproc_per_node=2 -m adabatch compare local-sgd" in err


def test_communication_rounds_in_the_report() -> None:
    from adabatch.experiments.comparison import _rounds
    from adabatch.experiments.run_dirs import Run

    def run(world: int) -> Run:
        config = {"method": "m", "seed": 0, "distributed": {"world_size": world}}
        return Run(Path("."), config, [], [], "completed")

    assert _rounds(run(2), {"step": 40, "rounds": 10}) == 10  # local SGD counts its rounds
    assert _rounds(run(2), {"step": 40}) == 40  # DDP: one all-reduce per step
    assert _rounds(run(1), {"step": 40}) is None  # one process: no communication


def test_a_diverging_worker_stops_every_worker_at_the_round() -> None:
    """One process with local_steps=3: the NaN at step 5 is raised at the round of step 6."""
    from adabatch.training import DivergenceError, Trainer
    from test_local_sgd import _data, _model

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = AdaptiveLoader(_data(), 4, seed=1)
    scheduler = BatchSizeScheduler(make_policy("constant", batch_size=4), loader, opt,
                                   local_steps=3)  # fmt: skip
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss * float("nan") if len(calls) >= 5 else loss

    trainer = Trainer(model, opt, scheduler, loss_fn=loss_fn,
                      local_sgd=LocalSGD(model, scheduler))  # fmt: skip
    with pytest.raises(DivergenceError, match="worker 0 is nan at epoch 1, step 5; every worker"):
        trainer.fit(1)
    assert scheduler.step_count == 6  # it went on to the round, without updating
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="eval_every_samples=10 with local SGD"):
        Trainer(model, opt, scheduler, eval_data=_data(), eval_every_samples=10,
                local_sgd=trainer.local_sgd)  # fmt: skip
