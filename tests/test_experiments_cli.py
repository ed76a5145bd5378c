"""``adabatch list / run / compare / report``: run directories, refusal, resume, reports.

Every run is the quick suite shrunk to a few hundred generated samples and two epochs (well
under a second each), called in process through `adabatch.cli.main`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from _offline import offline  # noqa: F401  (a fixture)
from adabatch.cli import main
from adabatch.experiments.config import parse_overrides
from adabatch.experiments.run import experiment_config
from adabatch.experiments.suites import EXPERIMENTS, SUITES, experiment
from adabatch.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("offline")

TINY = [
    "--epochs=2",
    "--data.num_train=300",
    "--data.num_test=100",
    "--data.image_size=8",
    "--train.threads=1",
    "--no-progress",
]
RUN = ["run", "quick/divebatch", *TINY]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Default output folders land in tmp_path; torch's thread count is restored."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One completed tiny quick/divebatch run (read only: copy it to change it), its stdout."""
    import contextlib
    import io

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("completed") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([*RUN, "--out", str(out)])
    torch.set_num_threads(threads)
    assert code == 0
    return out, stdout.getvalue()


def copy_run(completed: tuple[Path, str], tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(completed[0], target)
    return target


def records(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines]
    return [r for r in out if kind is None or r["kind"] == kind]


def timeless(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in recs]


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below ``root``: modification time (ns) and content."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


# ---------------------------------------------------------------------- list
def test_list_shows_every_suite_and_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    starts = {line.split()[0] for line in out.splitlines() if line[:1].isalnum()}
    assert set(SUITES) <= starts
    for name in EXPERIMENTS:
        assert f"    {name}: " in out
    for name, s in SUITES.items():
        line = next(x for x in out.splitlines() if x.split()[:1] == [name])
        assert s.description in line
        assert line.endswith("[gpu]") == (s.hardware == "gpu")
    assert "mirrors:" not in out and "expects:" not in out
    assert "adabatch compare SUITE" in out


def test_list_verbose_shows_mirrors_and_expectations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert out.count("mirrors: ") == len(SUITES)
    assert out.count("expects: ") == len(SUITES)
    flat = " ".join(out.split())
    for s in SUITES.values():
        assert " ".join(s.mirrors.split()) in flat
        assert " ".join(s.expected.split()) in flat


def test_list_takes_no_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--foo=1"]) == 2
    assert "unrecognized arguments: --foo=1" in capsys.readouterr().err


# ---------------------------------------------------------------------- run: the files
def test_run_writes_config(completed: tuple[Path, str]) -> None:
    out, _ = completed
    record = json.loads((out / "config.json").read_text())
    s, m = experiment("quick/divebatch")
    assert record["experiment"] == "quick/divebatch"
    assert record["suite"] == "quick"
    assert record["method"] == "divebatch"
    assert record["description"] == m.description
    assert record["seed"] == 0
    assert record["report"]["methods"] == [x.label for x in s.methods]
    assert record["report"]["baselines"] == list(s.baselines)
    expected = experiment_config(s, m, parse_overrides(TINY[:5]))
    assert record["config"] == json.loads(json.dumps(expected.to_dict()))
    assert record["config"]["train"]["epochs"] == 2
    assert record["config"]["data"]["options"]["num_train"] == 300
    assert record["versions"]["torch"] == torch.__version__


def test_run_writes_metrics_checkpoint_and_summary(completed: tuple[Path, str]) -> None:
    out, stdout = completed
    epochs = records(out, "epoch")
    steps = records(out, "step")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert epochs[0]["step"] == 0 and epochs[0]["samples"] == 0
    assert epochs[0]["train_loss"] is None
    assert all(r["train_loss"] is not None for r in epochs[1:])
    assert [r["samples"] for r in epochs] == [0, 300, 600]
    assert all(0 <= r["test_accuracy"] <= 100 for r in epochs)
    assert steps, "no step records"
    assert [r["step"] for r in steps] == sorted({r["step"] for r in steps})
    assert all(r["step"] % 25 == 0 or "next_batch_size" in r for r in steps)
    assert all(r["loss"] > 0 for r in steps)

    s = summary(out)
    last = epochs[-1]
    assert s["status"] == "completed"
    assert s["epochs"] == 2
    assert s["steps"] == last["step"]
    assert s["samples"] == last["samples"] == 600
    assert s["final_test_accuracy"] == last["test_accuracy"]
    assert s["final_test_loss"] == last["test_loss"]
    assert s["final_batch_size"] == last["batch_size"]
    assert "message" not in s

    state = checkpoint(out)
    assert state["scheduler"]["step_count"] == s["steps"]
    assert state["progress"]["samples"] == 600
    assert all(torch.isfinite(v).all() for v in state["model"].values())

    assert f"completed: 2 epochs, {s['steps']} steps, 600 samples" in stdout
    assert f"test accuracy {s['final_test_accuracy']:.2f}%" in stdout
    assert f"run directory: {out}" in stdout


def test_run_default_directory_is_under_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--seed=3", "--epochs=1"]) == 0
    run_dir = Path("runs/quick/divebatch/seed3")
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 3
    assert summary(run_dir)["epochs"] == 1
    assert "run directory: runs/quick/divebatch/seed3" in capsys.readouterr().out


# ---------------------------------------------------------------------- refusal / resume
def test_rerun_into_the_same_directory_is_refused(
    completed: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_run(completed, tmp_path)
    before = snapshot(out)
    assert main([*RUN, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"adabatch: error: {out} already holds a run (quick/divebatch, seed 0")
    assert "completed" in err
    assert "--resume" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert snapshot(out) == before


def test_resume_of_a_completed_run_does_nothing(
    completed: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_run(completed, tmp_path)
    before = snapshot(out)
    assert main([*RUN, "--out", str(out), "--resume"]) == 0
    stdout = capsys.readouterr().out
    assert f"{out}: already completed (quick/divebatch, seed 0)" in stdout
    assert f"completed: 2 epochs, {summary(out)['steps']} steps" in stdout
    assert snapshot(out) == before


def test_resume_with_other_settings_names_the_difference(
    completed: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_run(completed, tmp_path)
    before = snapshot(out)
    saved = json.loads((out / "config.json").read_text())["config"]["policy"]["options"]["delta"]
    assert main([*RUN, "--out", str(out), "--resume", "--policy.delta=0.2"]) == 1
    err = capsys.readouterr().err
    assert f"cannot resume {out}" in err
    assert f"policy.options.delta: saved {saved!r}, requested 0.2" in err
    assert "--overwrite" in err
    # another experiment in the same directory
    assert main(["run", "quick/sgd-small", *TINY, "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "experiment: saved 'quick/divebatch', requested 'quick/sgd-small'" in err
    assert "policy.name: saved 'divebatch', requested 'constant'" in err
    assert snapshot(out) == before


def test_overwrite_starts_a_new_run(
    completed: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_run(completed, tmp_path)
    (out / "notes.txt").write_text("mine")  # not a run file: kept
    assert main([*RUN, "--out", str(out), "--overwrite", "--policy.delta=0.2"]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["policy"]["options"]["delta"] == 0.2
    assert summary(out)["status"] == "completed"
    assert [r["epoch"] for r in records(out, "epoch")] == [0, 1, 2]  # not appended
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_is_a_usage_error(
    completed: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_run(completed, tmp_path)
    before = snapshot(out)
    assert main([*RUN, "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert snapshot(out) == before


def test_resume_into_an_empty_directory_starts_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--epochs=1", "--out", "fresh", "--resume"]) == 0
    assert summary(Path("fresh"))["status"] == "completed"


def _stop_at(monkeypatch: pytest.MonkeyPatch, step: int, action: Any) -> list[int]:
    """Make the first trainer that reaches ``step`` call ``action(trainer)`` once."""
    original = Trainer._after_step
    fired: list[int] = []

    def after_step(self: Trainer, loss: Any, decision: Any) -> None:
        original(self, loss, decision)
        if not fired and self.step_count == step:
            fired.append(step)
            action(self)

    monkeypatch.setattr(Trainer, "_after_step", after_step)
    return fired


def test_interrupted_run_resumes_on_the_same_trajectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Epoch 1 is 19 steps of batch 16; DiveBatch (δ = 0.3, every epoch) then grows the batch
    # (to ~37), and the stop comes mid-epoch 2, between two step records (every 5 steps).
    args = [*RUN, "--epochs=3", "--policy.every=1", "--policy.delta=0.3", "--train.log_every=5"]
    fired = _stop_at(monkeypatch, 23, Trainer.request_stop)
    assert main([*args, "--out", "a"]) == 1
    assert fired == [23]
    stdout = capsys.readouterr().out
    assert "interrupted; continue with --resume" in stdout
    assert summary(Path("a"))["status"] == "interrupted"
    assert summary(Path("a"))["steps"] == 23
    assert checkpoint(Path("a"))["scheduler"]["step_count"] == 23

    # refused without --resume, then resumed
    assert main([*args, "--out", "a"]) == 1
    assert "interrupted" in capsys.readouterr().err
    assert main([*args, "--out", "a", "--resume"]) == 0
    assert "resumed at epoch 1, step 23" in capsys.readouterr().out

    assert main([*args, "--out", "b"]) == 0  # uninterrupted
    a, b = Path("a"), Path("b")
    assert summary(a)["status"] == summary(b)["status"] == "completed"
    assert [r["epoch"] for r in records(a, "epoch")] == [0, 1, 2, 3]
    assert timeless(records(a)) == timeless(records(b))
    epoch_steps = [r["step"] for r in records(b, "epoch")]
    assert epoch_steps[1] < 23 < epoch_steps[2] - 1  # the stop was inside epoch 2
    assert records(b, "epoch")[1]["next_batch_size"] > 16  # a resize at the end of epoch 1
    assert 20 in [r["step"] for r in records(b, "step")]  # and after a step record
    ka, kb = checkpoint(a), checkpoint(b)
    assert ka["model"].keys() == kb["model"].keys()
    for key in kb["model"]:
        assert torch.equal(ka["model"][key], kb["model"][key]), key
    for key in ("steps", "samples", "final_batch_size", "final_test_accuracy", "decisions"):
        assert summary(a)[key] == summary(b)[key], key


# ---------------------------------------------------------------------- bad input
def test_unknown_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quick/nope", *TINY]) == 1
    err = capsys.readouterr().err
    assert "suite 'quick' has no method 'nope'; valid: sgd-small, sgd-large" in err
    assert main(["run", "nope/divebatch", *TINY]) == 1
    err = capsys.readouterr().err
    assert "unknown experiment 'nope/divebatch'" in err and "adabatch list" in err
    assert main(["run", "quick", *TINY]) == 1
    assert "adabatch compare quick" in capsys.readouterr().err
    assert not Path("runs").exists()


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("--policy.dleta=0.1", ["unknown option policy.dleta", "did you mean delta?"]),
        ("--policy.every=abc", ["policy.every: expected an integer, got 'abc'"]),
        ("--optimizer.lr=0", ["optimizer.lr must be a positive finite number, got 0.0"]),
        ("--polcy.delta=0.1", ["unknown section 'polcy'", "did you mean policy?"]),
        ("--epochs", ["override '--epochs' has no value"]),
    ],
)
def test_bad_overrides_exit_1_without_a_run(
    override: str, fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*RUN, override, "--out", "x"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("adabatch: error: ")
    for fragment in fragments:
        assert fragment in captured.err
    assert "Traceback" not in captured.err
    assert not Path("x").exists()


def test_invalid_choice_fields_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    # train.batchnorm is "error" or "approximate"; anything else is a user error like the
    # others, not an uncaught ValueError from inside Trainer(...)
    assert main([*RUN, "--train.batchnorm=bogus", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert "batchnorm" in err and "approximate" in err


def test_bad_device_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--train.device=bogus", "--out", "x"]) == 1
    assert "train.device" in capsys.readouterr().err


def test_space_form_override_before_the_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    # `--key value` is a documented override form; before the positional EXPERIMENT argparse
    # takes the value for the experiment ("unknown experiment '1'").
    assert main(["run", "--epochs", "1", "quick/divebatch", *TINY[1:], "--out", "sp"]) == 0
    assert summary(Path("sp"))["epochs"] == 1


def test_space_form_override_after_the_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quick/divebatch", *TINY[1:], "--epochs", "1", "--out", "sp"]) == 0
    assert summary(Path("sp"))["epochs"] == 1


def test_diverging_run(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*RUN, "--optimizer.lr=1e6", "--train.checkpoint_every=1", "--out", "div"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("adabatch: error: quick/divebatch (seed 0): the training loss is ")
    assert "last good checkpoint is div/checkpoint.pt" in err
    assert "Lower the learning rate" in err
    assert "Traceback" not in err
    s = summary(Path("div"))
    assert s["status"] == "diverged"
    assert s["message"] in err
    state = checkpoint(Path("div"))
    assert state["scheduler"]["step_count"] == s["steps"]  # the last finite step
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert main([*args[:-2], "--out", "div"]) == 1  # not completed: refused
    assert "diverged" in capsys.readouterr().err


def test_divergence_leaves_the_last_finite_parameters() -> None:
    # DivergenceError promises "the parameters were not updated with it" (Trainer.fit: "the
    # parameters keep the last finite step"). The model's output turns NaN in step 3.
    from adabatch.experiments.build import build
    from adabatch.training import DivergenceError

    s, m = experiment("quick/sgd-small")
    built = build(experiment_config(s, m, parse_overrides(TINY[:5])))
    trainer = built.trainer()
    before: dict[str, torch.Tensor] = {}

    def poison(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> Any:
        if module.training and trainer.step_count == 2:
            if not before:
                before.update({k: v.clone() for k, v in module.state_dict().items()})
            return output * float("nan")
        return None

    built.model.register_forward_hook(poison)
    with pytest.raises(DivergenceError, match="the training loss is nan at epoch 1, step 3"):
        trainer.fit(1)
    assert before
    for key, value in built.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_missing_data_set_exits_1_with_the_fetch_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["run", "mnist-mlp/sgd-small", "--epochs=1", f"--data.root={tmp_path / 'empty'}"]
    assert main([*argv, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adabatch: error: data set 'mnist' not found")
    assert "adabatch data fetch mnist" in err
    assert "Traceback" not in err
    assert not Path("runs/mnist-mlp/sgd-small/seed0/config.json").exists()


def test_gpu_suite_on_a_cpu_warns_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["run", "cifar10/sgd-128", "--epochs=1", f"--data.root={tmp_path / 'empty'}"]
    if torch.cuda.is_available():
        assert main(argv) == 1
    else:
        with pytest.warns(RuntimeWarning, match="sized for a GPU"):
            assert main(argv) == 1
    assert "adabatch data fetch cifar10" in capsys.readouterr().err


# ---------------------------------------------------------------------- compare / report
def test_compare_then_report(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "quick", "--seeds", "2", "--methods", "sgd-small,divebatch", *TINY]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    root = Path("runs/quick")
    run_dirs = sorted(p.parent for p in root.rglob("config.json"))
    assert [str(p.relative_to(root)) for p in run_dirs] == [
        "divebatch/seed0",
        "divebatch/seed1",
        "sgd-small/seed0",
        "sgd-small/seed1",
    ]
    for p in run_dirs:
        assert summary(p)["status"] == "completed"
        assert json.loads((p / "config.json").read_text())["seed"] == int(p.name[4:])
    # seeds differ
    assert timeless(records(root / "sgd-small/seed0")) != timeless(
        records(root / "sgd-small/seed1")
    )

    table = stdout[stdout.index("quick: ") :]
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()[1:2] == ["2"]}
    assert set(rows) == {"sgd-small", "divebatch"}
    assert all("±" in row for row in rows.values())
    report = root / "report"
    assert f"written to {report}" in stdout
    names = sorted(p.name for p in report.iterdir())
    assert "report.md" in names and "report.json" in names
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 4
    for n in pngs:
        assert (report / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| sgd-small | 2 |" in (report / "report.md").read_text()

    data = json.loads((report / "report.json").read_text())
    by_method = {m["method"]: m for m in data["methods"]}
    assert set(by_method) == {"sgd-small", "divebatch"}
    for method, entry in by_method.items():
        accs = [summary(root / method / f"seed{i}")["final_test_accuracy"] for i in (0, 1)]
        assert entry["seeds"] == 2
        assert entry["seed_values"] == [0, 1]
        assert entry["final_mean"] == pytest.approx(sum(accs) / 2)
        assert entry["final_sem"] == pytest.approx(abs(accs[0] - accs[1]) / 2)

    # report: re-render from the files, no training
    before = snapshot(root)
    assert main(["report", str(root)]) == 0
    again = capsys.readouterr().out
    assert again.strip() == table.strip()
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.startswith("report/")} == {
        k: v for k, v in before.items() if not k.startswith("report/")
    }
    assert set(after) == set(before)

    # compare --resume: every run already complete, nothing trained
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.count("already completed") == 4
    assert {k: v for k, v in snapshot(root).items() if not k.startswith("report/")} == {
        k: v for k, v in before.items() if not k.startswith("report/")
    }


def test_report_of_an_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", "empty"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "adabatch: error: empty: no run directory (with a config.json) found\n"
    assert main(["report", "missing"]) == 1
    assert "missing: no such directory" in capsys.readouterr().err
    assert main(["report", "empty", "--foo=1"]) == 2


def test_compare_rejects_zero_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    # a user error: exit 1 (or a usage error, 2) with a message, not an uncaught ValueError
    assert main(["compare", "quick", "--seeds", "0", *TINY]) in (1, 2)
    assert "--seeds" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_compare_unknown_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "quick", "--methods", "sgd-small,nope", *TINY]) == 1
    assert "suite 'quick' has no method 'nope'" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_ctrl_c_stops_the_whole_comparison(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGINT stops the run in progress at a step boundary (checkpoint written) -- and should
    # stop `adabatch compare` too, not go on to train the next method.
    _stop_at(monkeypatch, 5, lambda trainer: os.kill(os.getpid(), signal.SIGINT))
    code = main(["compare", "quick", "--methods", "sgd-small,divebatch", "--seeds", "1", *TINY])
    capsys.readouterr()
    assert summary(Path("runs/quick/sgd-small/seed0"))["status"] == "interrupted"
    assert code != 0
    assert not Path("runs/quick/divebatch").exists()


def test_list_into_a_closed_pipe_stops_quietly() -> None:
    # `adabatch list | head -1`: the reader goes away before the output is written.
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "adabatch", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "error" not in err, err
    assert proc.returncode == 1
