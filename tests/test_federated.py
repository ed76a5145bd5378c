"""Federated averaging, simulated in one process: split, participants, the batch rule, FedAvg.

FedAvg is checked against a loop written here: with batches as large as a client's shard each
local step is full-batch gradient descent on that shard, so the hand loop needs no data order.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from _formats import write_mnist_split
from _offline import offline  # noqa: F401  (a fixture)
from adabatch.cli import main
from adabatch.datasets import ArrayDataset
from adabatch.local.federated import (
    FederatedConfig,
    TimeEvolvingBatch,
    dirichlet_split,
    participants,
    run_federated,
)


def _labels(n: int = 600, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


def test_the_dirichlet_split_is_a_partition_and_small_alpha_skews_it() -> None:
    labels = _labels()
    shards = dirichlet_split(labels, 6, 0.1, seed=3)
    together = torch.cat(shards).sort().values
    assert torch.equal(together, torch.arange(len(labels)))  # every index exactly once
    assert [s.tolist() for s in dirichlet_split(labels, 6, 0.1, seed=3)] == [
        s.tolist() for s in shards
    ]  # a function of the seed

    def classes_per_client(parts: list[torch.Tensor]) -> float:
        return sum(len(torch.unique(labels[p])) for p in parts) / len(parts)

    iid = dirichlet_split(labels, 6, 1000.0, seed=3)
    assert classes_per_client(shards) < 6 < classes_per_client(iid) == 10
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_split(labels, 6, 0.0, seed=0)
    with pytest.raises(ValueError, match="no Dirichlet"):
        dirichlet_split(labels[:5], 6, 1.0, seed=0)


def test_participants() -> None:
    chosen = participants(10, 4, round_index=3, seed=1)
    assert chosen == sorted(set(chosen)) and len(chosen) == 4 and max(chosen) < 10
    assert chosen == participants(10, 4, 3, 1)
    assert any(participants(10, 4, r, 1) != chosen for r in range(4, 10))
    with pytest.raises(ValueError, match="per_round=11 exceeds the 10 clients"):
        participants(10, 11, 0, 0)


def test_the_time_evolving_rule_by_hand() -> None:
    rule = TimeEvolvingBatch(eta=0.5, smoothing=0.5, min_batch_size=2, max_batch_size=100)
    history, sizes = rule.update({}, {0: 4, 1: 4}, {0: 10.0, 1: 0.2}, global_sq_norm=2.0)
    # client 0: ⌈10 / (0.25·2)⌉ = 20; client 1: ⌈0.2 / 0.5⌉ = 1 → kept at 4 (never shrinks)
    assert sizes == {0: 20, 1: 4} and history == {0: (10.0, 2.0), 1: (0.2, 2.0)}
    history, sizes = rule.update(history, sizes, {0: 90.0}, global_sq_norm=1.0)
    # the moving averages: V̂ = 50, Ĝ = 1.5 → ⌈50 / 0.375⌉ = 134 → the cap 100
    assert history[0] == (50.0, 1.5) and sizes[0] == 100 and sizes[1] == 4
    with pytest.raises(ValueError, match="smoothing"):
        TimeEvolvingBatch(smoothing=1.0)


def _tiny() -> tuple[ArrayDataset, ArrayDataset]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(4, 3, generator=g, dtype=torch.float64)).argmax(1)
    data = ArrayDataset(x, y, num_classes=3)
    return data, data


def _make() -> nn.Module:
    return nn.Linear(4, 3).double()


def test_fedavg_matches_a_hand_loop() -> None:
    train, test = _tiny()
    config = FederatedConfig(
        clients=3, per_round=3, local_steps=2, rounds=3, batch_size=60, lr=0.3, alpha=1.0,
        eval_every=1, seed=4,
    )  # fmt: skip
    records = run_federated(config, train, test, _make)
    # by hand: full-batch GD on each shard from θ, then the shard-size-weighted mean
    torch.manual_seed(4)
    model = _make()
    shards = dirichlet_split(train.targets, 3, 1.0, 4)
    x, y = train.tensors
    for _ in range(3):
        theta = [p.detach().clone() for p in model.parameters()]
        new = [torch.zeros_like(t) for t in theta]
        for shard in shards:
            w, b = (t.clone().requires_grad_() for t in theta)
            for _ in range(2):
                loss = nn.functional.cross_entropy(x[shard] @ w.T + b, y[shard])
                gw, gb = torch.autograd.grad(loss, [w, b])
                w, b = (
                    (w - 0.3 * gw).detach().requires_grad_(),
                    (b - 0.3 * gb).detach().requires_grad_(),
                )
            for acc, t in zip(new, (w, b), strict=True):
                acc += len(shard) / 60 * t.detach()
        with torch.no_grad():
            for p, t in zip(model.parameters(), new, strict=True):
                p.copy_(t)
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(x @ model.weight.T + model.bias, y))
    assert records[-1]["test_loss"] == pytest.approx(expected, rel=1e-9)
    assert records[-1]["samples"] == 3 * 2 * 60  # 3 rounds × 2 steps × the 60 samples


def test_a_run_is_a_function_of_its_configuration_and_seed() -> None:
    train, test = _tiny()
    config = FederatedConfig(
        clients=4, per_round=2, local_steps=3, rounds=4, batch_size=4, lr=0.1, alpha=0.5,
        rule="time-evolving", evolving=TimeEvolvingBatch(eta=0.5, max_batch_size=32),
        eval_every=2, seed=1,
    )  # fmt: skip

    def strip(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    first = run_federated(config, train, test, _make)
    assert strip(first) == strip(run_federated(config, train, test, _make))
    batches = [r["mean_batch"] for r in first[1:]]
    assert batches[-1] > 4  # the rule grew the participants' batches
    other = run_federated(dataclasses.replace(config, seed=2), train, test, _make)
    assert strip(other) != strip(first)
    with pytest.raises(ValueError, match="rule"):
        FederatedConfig(rule="growing")


@pytest.mark.usefixtures("offline")
def test_compare_federated_writes_its_report(tmp_path, monkeypatch, capsys) -> None:
    for train in (True, False):
        write_mnist_split(tmp_path / "data" / "mnist", train=train, n=200 if train else 50)
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "data"))
    args = ["compare", "federated", "--seeds=1", "--out", str(tmp_path / "runs"), "--rounds=5",
            "--clients=4", "--per-round=2", "--local-steps=2", "--target=5"]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "runs" / "federated" / "report"
    report = json.loads((out / "report.json").read_text())
    assert [m["method"] for m in report["methods"]] == [
        "constant-16", "constant-128", "time-evolving"
    ]  # fmt: skip
    assert all(math.isfinite(m["final_accuracy"]) for m in report["methods"])
    assert (out / "federated.png").stat().st_size > 5000
    assert "| time-evolving |" in capsys.readouterr().out
    assert main([*args, "--alpha=-1"]) == 1  # bad input: refused, saying why
    assert "--alpha must be > 0, got '-1'" in capsys.readouterr().err
    assert main([*args[:-1], "--bogus=1"]) == 1
    assert "the federated suite takes --rounds, --clients" in capsys.readouterr().err


@pytest.mark.parametrize(("suite", "why"), [
    ("federated", "simulates its clients one after another in one process"),
    ("sparse", "starts its own worker processes"),
])  # fmt: skip
def test_suites_with_their_own_runner_refuse_torchrun(suite, why, monkeypatch, capsys) -> None:
    import adabatch.cli.compare as compare_cli

    monkeypatch.setattr(compare_cli, "launched_by_torchrun", lambda: True)
    assert main(["compare", suite]) == 1
    assert f"the {suite} suite {why}: run it without torchrun" in capsys.readouterr().err
