"""The lm suite through the CLI: every method runs on a tiny corpus, and the report ranks them
by validation loss against tokens; --scale=gpu selects lm-gpu.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _offline import offline  # noqa: F401  (a fixture)
from adabatch.cli import main
from adabatch.experiments.plots import LM_PLOT_FILES
from adabatch.experiments.suites import SUITES
from test_text_lm import fake_fortunes

pytestmark = pytest.mark.usefixtures("offline")


def tiny(root: Path) -> list[str]:
    """The lm suite shrunk: 16-byte sequences of a generated corpus, sizes in tokens."""
    return [
        f"--data.root={root}",
        "--data.train_size=64",
        "--data.test_size=8",
        "--data.seq_len=16",
        "--model.dim=16",
        "--model.ff=32",
        "--model.layers=1",
        "--policy.batch_size=64",  # 4 sequences of 16
        "--policy.max_batch_size=256",
        "--train.eval_every=256",
        "--train.eval_batch_size=8",
        "--train.threads=1",
        "--train.log_every=1",
        "--epochs=1",
        "--no-progress",
    ]


def test_the_lm_suite_compares_every_method_by_validation_loss(tmp_path, capsys) -> None:
    fake_fortunes(tmp_path / "data")
    threads = torch.get_num_threads()
    out = tmp_path / "runs"
    # all but the ramp, whose start must be B0 (run below with its own ramp)
    methods = [m.label for m in SUITES["lm"].methods if m.label != "ramp"]
    chosen = f"--methods={','.join(methods)}"
    code = main(["compare", "lm", "--seeds=1", chosen, "--out", str(out), *tiny(tmp_path / "data")])
    torch.set_num_threads(threads)
    assert code == 0
    report = json.loads((out / "lm" / "report" / "report.json").read_text())
    assert report["metric"] == "test_loss" and report["axis"] == "evaluation"
    assert [m["method"] for m in report["methods"]] == methods
    for method in report["methods"]:
        assert method["total_tokens"] == 64 * 16  # one epoch of 64 sequences of 16 tokens
        assert 0 < method["final_mean"] < 6.0  # nats per byte, below ln 256 ≈ 5.5 + noise
    printed = capsys.readouterr().out
    assert "Target validation loss" in printed and "tokens→target" in printed
    for name in LM_PLOT_FILES:
        assert (out / "lm" / "report" / name).stat().st_size > 0
    # Megatron's ramp in tokens, shrunk with the budget: 64 → 256 tokens over 512 tokens
    ramp = tmp_path / "ramp"
    args = ["run", "lm/ramp", "--out", str(ramp), "--policy.rampup=64 64 512"]
    assert main([*args, *tiny(tmp_path / "data")]) == 0
    torch.set_num_threads(threads)
    records = [json.loads(line) for line in (ramp / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    # by hand: 3 increments of 64 spread over 512 tokens, one every 512/3 tokens consumed
    for before, record in zip([{"tokens": 0}, *steps], steps[:-1], strict=False):
        expected = min(64 + 64 * int(before["tokens"] // (512 / 3)), 256)
        assert record["batch_tokens"] == expected
    assert steps[-1]["tokens"] == 64 * 16  # the epoch's short rest ends it


def test_scale_gpu_picks_the_gpu_configuration(tmp_path, capsys) -> None:
    assert SUITES["lm"].gpu_scale == "lm-gpu" and SUITES["lm-gpu"].hardware == "gpu"
    gpu = SUITES["lm-gpu"].base
    assert (gpu.model.options["dim"], gpu.model.options["layers"]) == (768, 12)
    assert gpu.data.options["seq_len"] == 1024 and gpu.data.unit == "tokens"
    code = main(["compare", "quick", "--scale=gpu", "--out", str(tmp_path)])
    assert code == 1
    assert "suite 'quick' has no GPU configuration; --scale=gpu applies to: lm" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("name", ["lm", "lm-gpu"])
def test_every_method_is_a_valid_policy_in_whole_sequences(name) -> None:
    """The GPU configuration cannot run here; its sizes and policies are checked all the same."""
    from adabatch.experiments.run import experiment_config
    from adabatch.experiments.units import in_sequences
    from adabatch.policies import make_policy

    suite = SUITES[name]
    t = suite.base.data.options["seq_len"]
    for method in suite.methods:
        config = in_sequences(experiment_config(suite, method), t)
        options = dict(config.policy.options)
        if config.policy.name == "seesaw":
            options["thresholds"] = ((0, config.policy.batch_size),)  # derived at build
        policy = make_policy(
            config.policy.name, batch_size=config.policy.batch_size, dataset_size=10**6, **options
        )
        assert policy.batch_size * t == suite.base.policy.batch_size or method.label == (
            "const-large"
        )
        cap = options.get("max_batch_size")
        assert cap is None or cap * t == 16 * suite.base.policy.batch_size, method.label


def test_scale_gpu_runs_the_gpu_suite(tmp_path, monkeypatch) -> None:
    import adabatch.cli.compare as compare_cli

    seen = []

    def record(suite, method, config, *args, **kwargs):
        seen.append((suite.name, method.label, config.model.options["dim"]))
        raise compare_cli.DivergedRunError("stop here")  # a result, not a crash: next method

    monkeypatch.setattr(compare_cli, "run_experiment", record)
    monkeypatch.setattr(compare_cli, "write_report", lambda *a, **k: "")
    monkeypatch.setattr(compare_cli, "find_runs", lambda *a, **k: [])
    main(["compare", "lm", "--scale=gpu", "--seeds=1", "--methods=seesaw", "--out", str(tmp_path)])
    assert seen == [("lm-gpu", "seesaw", 768)]
