"""Starting, wrapping and checking a distributed run: `adabatch.distributed`'s launch pieces.

The single-process behaviour and the argument checks run here; the checks of agreement run on
two gloo processes: equal values pass, different ones raise `RankMismatchError` on *every* rank
(a rank left waiting would hang), also when two ranks were given different policies.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _dist import run_on_ranks
from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.datasets import ArrayDataset
from adabatch.distributed import (
    check_agreement,
    init_from_env,
    launched_by_torchrun,
    wrap_model,
)
from adabatch.distributed.agreement import as_int64
from adabatch.errors import RankMismatchError

TORCHRUN_ENV = {
    "RANK": "0",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "0",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}


def test_launched_by_torchrun_needs_all_of_its_variables() -> None:
    assert launched_by_torchrun(TORCHRUN_ENV)
    assert not launched_by_torchrun({})
    partial = dict(TORCHRUN_ENV)
    del partial["MASTER_PORT"]
    assert not launched_by_torchrun(partial)


def test_outside_torchrun_init_describes_one_process(monkeypatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    env = init_from_env(device="cpu")
    assert (env.rank, env.local_rank, env.world_size, env.backend) == (0, 0, 1, None)
    assert env.device == torch.device("cpu") and env.is_main and not env.distributed
    model = nn.Linear(2, 2)
    assert wrap_model(model, "ddp", env) is model  # nothing to wrap for one process
    assert wrap_model(model, "fsdp", env) is model


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "mpi"}, "backend must be one of 'auto', 'gloo', 'nccl'; got 'mpi'"),
        ({"device": "tpu"}, "device must be one of 'auto', 'cpu', 'cuda'; got 'tpu'"),
        ({"timeout_s": 0}, "timeout_s must be a positive finite number, got 0"),
    ],
)
def test_init_from_env_refuses_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        init_from_env(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_nccl_without_cuda_is_refused_before_anything_starts(monkeypatch) -> None:
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="backend 'nccl' needs CUDA devices"):
        init_from_env("nccl")
    with pytest.raises(ValueError, match="needs CUDA, which is not available"):
        init_from_env(device="cuda")


def test_malformed_torchrun_variables_are_named(monkeypatch) -> None:
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        init_from_env(device="cpu")


def test_wrap_model_refuses_an_unknown_mode() -> None:
    env = init_from_env(device="cpu")
    with pytest.raises(ValueError, match="parallel must be one of 'ddp', 'fsdp'; got 'zero3'"):
        wrap_model(nn.Linear(2, 2), "zero3", env)


def test_int64_images_are_exact_and_distinct() -> None:
    assert as_int64(3) == 3 and as_int64(True) == 1
    assert as_int64(0.1) != as_int64(0.1 + 2**-56)  # one ulp apart: different images
    assert as_int64(1.5) == as_int64(1.5)
    assert as_int64(None) not in (as_int64(0), as_int64(0.0))
    check_agreement([1, 2.0, None], "anything")  # no process group: nothing to check


def _agreement(rank: int, out_dir: str) -> list[str]:
    messages = []
    check_agreement([16, 1.5, None], "equal values")  # passes on both ranks
    try:
        check_agreement([16, 1.5 if rank == 0 else 2.0], "the LR factor", ("batch", "lr factor"))
    except RankMismatchError as exc:
        messages.append(str(exc))
    # Different policies on the two ranks: the first decision is refused on both.
    x = torch.randn(40, 3)
    loader = AdaptiveLoader(ArrayDataset(x, (x[:, 0] > 0).long(), num_classes=2), 4, seed=0)
    policy = make_policy("schedule", batch_size=4, every=1, factor=2 if rank == 0 else 4)
    scheduler = BatchSizeScheduler(policy, loader)
    for _ in loader:
        scheduler.step()
    try:
        scheduler.step_epoch()
    except RankMismatchError as exc:
        messages.append(str(exc))
    return messages


@pytest.mark.distributed
def test_disagreeing_ranks_all_raise(tmp_path) -> None:
    first, second = run_on_ranks(_agreement, tmp_path)
    assert len(first) == len(second) == 2
    assert first[0].startswith("the ranks disagree on the LR factor: rank 0 has lr factor=1.5")
    assert second[0].startswith("the ranks disagree on the LR factor: rank 1 has lr factor=2.0")
    assert "the batch-size decision at the end of epoch 1" in first[1]
    assert "new batch size=8" in first[1] and "new batch size=16" in second[1]


def test_under_torchrun_other_ranks_skip_commands_that_do_not_train(monkeypatch, capsys) -> None:
    """``torchrun ... -m adabatch list``: rank 0 prints the list, rank 1 does nothing."""
    from adabatch.cli import main

    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RANK", "1")
    assert main(["list"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["list"]) == 0
    assert "quick/divebatch" in capsys.readouterr().out
