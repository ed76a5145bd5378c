"""`adabatch.integrations.huggingface.AdaptiveBatchSizeCallback` inside transformers.Trainer."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

# transformers and accelerate are test dependencies (adabatch[huggingface]): never skipped.
from transformers import Trainer, TrainerCallback, TrainingArguments

from _integrations import Indexed, by_epoch, flat_once, mlp, own_loop_value
from adabatch.integrations.huggingface import STATE_FILE, AdaptiveBatchSizeCallback
from adabatch.policies import make_policy

ROOT = Path(__file__).parent.parent
N = 160


class Classifier(nn.Module):
    """An MLP with the Trainer's calling convention (a dict batch, a loss in the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x, labels, index=None):
        return {"loss": nn.functional.cross_entropy(self.net(x), labels)}


class Dicts(torch.utils.data.Dataset):
    def __init__(self, n: int = N) -> None:
        self.base = Indexed(n)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y, index = self.base[i]
        return {"x": x, "labels": y, "index": torch.tensor(index)}


class Recorder(TrainerCallback):
    """Per logical batch: the indices of its micro-batches; per step: the LR inside step()."""

    def __init__(self, adaptive: AdaptiveBatchSizeCallback) -> None:
        self.adaptive = adaptive
        self.batches: list[tuple[int, list[int]]] = []
        self.step_lrs: list[float] = []
        self._epoch = 0

    def on_train_begin(self, args, state, control, optimizer=None, model=None, **kw):
        inner = optimizer.optimizer
        inner.register_step_pre_hook(lambda o, a, k: self.step_lrs.append(o.param_groups[0]["lr"]))
        model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        if module.training and torch.is_grad_enabled():
            epoch = self.adaptive.session.scheduler.epoch
            self.batches.append((epoch, kwargs["index"].tolist()))

    def epochs(self) -> dict[int, list[list[int]]]:
        return by_epoch(self.batches)


def train(
    policy, out, *, epochs=3, accumulation=1, world=1, resume=None, save_steps=None,
    schedule_type="constant", n=N, max_steps=-1, **options,
):  # fmt: skip
    adaptive = AdaptiveBatchSizeCallback(policy, tracker_options={"check_layout": False}, **options)
    recorder = Recorder(adaptive)
    args = TrainingArguments(
        str(out), per_device_train_batch_size=policy.batch_size // (accumulation * world),
        gradient_accumulation_steps=accumulation, num_train_epochs=epochs, learning_rate=0.1,
        optim="sgd", lr_scheduler_type=schedule_type, weight_decay=0.0, max_grad_norm=0.0,
        report_to=[], logging_steps=1, save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500, use_cpu=True, remove_unused_columns=False,
        disable_tqdm=True, seed=0, data_seed=0, max_steps=max_steps,
    )  # fmt: skip
    model = Classifier()
    trainer = Trainer(
        model=model, args=args, train_dataset=Dicts(n), callbacks=[adaptive, recorder]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=resume)
    return model, adaptive, recorder, trainer


def schedule():
    return make_policy("schedule", batch_size=16, every=1, factor=2, max_batch_size=64)


def test_a_schedule_gives_exactly_its_batch_sizes_and_every_sample_once(tmp_path) -> None:
    _, _, rec, trainer = train(schedule(), tmp_path)
    epochs = rec.epochs()
    sizes = {e: [len(b) for b in batches] for e, batches in epochs.items()}
    assert sizes == {0: [16] * 10, 1: [32] * 5, 2: [64, 64, 32]}
    assert all(flat_once(batches, N) for batches in epochs.values())
    assert trainer.state.global_step == 18  # three real epochs, not three planned at B0
    logged = [h["adabatch/batch_size"] for h in trainer.state.log_history if "loss" in h]
    assert logged[:11] == [16.0] * 10 + [32.0]  # in force when logged (epoch end decides)


def test_the_norm_test_grows_the_batch_and_matches_our_own_loop(tmp_path) -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    _, adaptive, rec, _ = train(policy, tmp_path, epochs=2)
    decisions = adaptive.session.scheduler.decisions
    assert decisions and decisions[0].step == 0
    sizes = [len(b) for _, b in rec.batches]
    assert sizes[0] == 16 and sizes[1] == min(decisions[0].new_batch_size, N - 16)
    assert all(flat_once(b, N) for b in rec.epochs().values())
    expected = own_loop_value(adaptive.session.policy, mlp(), Indexed(N), rec.batches[0][1])
    assert math.isclose(decisions[0].value, expected, rel_tol=1e-5)


def test_gradient_accumulation_splits_each_batch_into_the_trainers_micro_batches(tmp_path) -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    _, a, _, _ = train(policy, tmp_path / "a", epochs=2)
    _, b, rec, _ = train(policy, tmp_path / "b", epochs=2, accumulation=4)
    da, db = a.session.scheduler.decisions, b.session.scheduler.decisions
    assert [(d.step, d.new_batch_size) for d in da] == [(d.step, d.new_batch_size) for d in db]
    assert all(math.isclose(x.value, y.value, rel_tol=1e-4) for x, y in zip(da, db, strict=True))
    assert all(flat_once(batches, N) for batches in rec.epochs().values())
    assert len(rec.batches) % 4 == 0 and min(len(i) for _, i in rec.batches) >= 1


@pytest.mark.parametrize("name", ["constant", "norm-test"])
def test_the_trainers_short_last_update_gets_a_batch_of_that_many_micro_batches(
    tmp_path, name
) -> None:
    """100 samples, 4 per micro-batch, G = 4: the Trainer plans 25 micro-batches per epoch,
    the last update only 1 — the last logical batch of an epoch is split into 1."""
    options = {"eta": 0.5, "max_batch_size": 128} if name == "norm-test" else {}
    policy = make_policy(name, batch_size=16, **options)
    _, adaptive, rec, trainer = train(policy, tmp_path, accumulation=4, n=100)
    epochs = rec.epochs()
    assert sorted(epochs) == [0, 1, 2]
    assert all(flat_once(batches, 100) for batches in epochs.values())
    if name == "constant":
        assert [len(b) for b in epochs[0]] == [4] * 25  # 6 batches of 4 × 4, then 1 × 4
        assert trainer.state.global_step == 3 * 7
    assert adaptive.session.scheduler.epoch == 3


def test_max_steps_runs_on_through_the_data_epochs(tmp_path) -> None:
    _, adaptive, rec, trainer = train(schedule(), tmp_path, max_steps=25)
    assert trainer.state.global_step == 25
    sizes = [len(b) for _, b in rec.batches]
    assert sizes == [16] * 10 + [32] * 5 + [64, 64, 32] * 3 + [64]
    epochs = rec.epochs()
    assert all(flat_once(epochs[e], N) for e in range(5))
    assert adaptive.session.scheduler.epoch == 5  # five data epochs ended, the sixth begun


def test_the_lr_follows_the_rule(tmp_path) -> None:
    _, _, rec, _ = train(schedule(), tmp_path, lr_rule="sqrt")
    epochs = [e for e, _ in rec.batches]
    expected = [0.1 * math.sqrt(2**e) for e in epochs]
    assert len(rec.step_lrs) == len(expected)
    assert all(
        math.isclose(g, w, rel_tol=1e-12) for g, w in zip(rec.step_lrs, expected, strict=True)
    )


@pytest.mark.parametrize("unit", ["samples", "steps"])
def test_the_trainers_linear_decay_is_followed_in_samples_or_steps(tmp_path, unit) -> None:
    _, _, rec, _ = train(schedule(), tmp_path, schedule_type="linear", lr_schedule_unit=unit)
    planned = 3 * 10  # the Trainer plans 3 epochs of N/B0 = 10 steps
    sizes = [len(b) for _, b in rec.batches]
    before = [sum(sizes[:t]) for t in range(len(sizes))]  # samples trained before step t
    if unit == "samples":
        expected = [0.1 * (planned - s // 16) / planned for s in before]
    else:
        expected = [0.1 * (planned - t) / planned for t in range(len(sizes))]
    assert len(rec.step_lrs) == len(expected) == 18
    for got, want in zip(rec.step_lrs, expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    if unit == "samples":  # the decay ends where it would at B0: the last step's LR is ~0
        assert rec.step_lrs[-1] == pytest.approx(0.1 * 2 / planned)


def test_a_chainable_schedule_cannot_be_followed_in_samples() -> None:
    from adabatch.lr_coupling import check_sample_schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="lr_schedule_unit='steps'"):
        check_sample_schedule(torch.optim.lr_scheduler.StepLR(opt, 3), "here")
    with pytest.raises(ValueError, match="lr_schedule_unit"):
        AdaptiveBatchSizeCallback(schedule(), lr_schedule_unit="epochs")


def test_a_checkpoint_mid_epoch_resumes_the_same_trajectory(tmp_path) -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    full, a, rec_a, _ = train(policy, tmp_path, epochs=2, save_steps=3)
    assert (tmp_path / "checkpoint-3" / STATE_FILE).exists()
    resumed, b, rec_b, _ = train(policy, tmp_path, epochs=2, resume=str(tmp_path / "checkpoint-3"))
    assert rec_b.batches == rec_a.batches[3:]
    da, db = a.session.scheduler.decisions, b.session.scheduler.decisions
    assert [(d.step, d.new_batch_size) for d in da] == [(d.step, d.new_batch_size) for d in db]
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_a_resume_without_its_state_is_refused(tmp_path) -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    train(policy, tmp_path, epochs=1, save_steps=3)
    (tmp_path / "checkpoint-3" / STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="resumes at step 3"):
        train(policy, tmp_path, epochs=1, resume=str(tmp_path / "checkpoint-3"))


def test_mismatched_starting_batch_and_a_too_small_physical_limit_are_refused(tmp_path) -> None:
    policy = make_policy("norm-test", batch_size=32, eta=0.5, max_batch_size=128)
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=16, use_cpu=True,
                             report_to=[], remove_unused_columns=False)  # fmt: skip
    trainer = Trainer(Classifier(), args, train_dataset=Dicts(),
                      callbacks=[AdaptiveBatchSizeCallback(policy)])  # fmt: skip
    with pytest.raises(ValueError, match="build the policy with batch_size=16"):
        trainer.train()
    with pytest.raises(ValueError, match="gradient_accumulation_steps >= 4"):
        train(make_policy("norm-test", batch_size=16, max_batch_size=128), tmp_path,
              max_physical_batch_size=32)  # fmt: skip


@pytest.mark.distributed
def test_two_processes_decide_identically_and_share_each_batch(tmp_path) -> None:
    script = ROOT / "tests" / "_hf_ddp.py"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(tmp_path),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["decisions"] == ranks[1]["decisions"] and ranks[0]["decisions"]
    for epoch in ("0", "1"):
        assert flat_once(ranks[0]["epochs"][epoch] + ranks[1]["epochs"][epoch], N)
    torch.testing.assert_close(torch.tensor(ranks[0]["params"]), torch.tensor(ranks[1]["params"]))


def test_reporters_see_the_values_when_the_callback_runs_first(tmp_path) -> None:
    """A report_to integration is a callback that logs what on_log hands it."""

    class Reporter(TrainerCallback):
        def __init__(self) -> None:
            self.keys: set[str] = set()

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.keys |= set(logs or {})

    adaptive = AdaptiveBatchSizeCallback(schedule(), tracker_options={"check_layout": False})
    reporter = Reporter()
    args = TrainingArguments(
        str(tmp_path), per_device_train_batch_size=16, num_train_epochs=1, report_to=[],
        logging_steps=1, save_strategy="no", use_cpu=True, remove_unused_columns=False,
        disable_tqdm=True, lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = Trainer(Classifier(), args, train_dataset=Dicts(), callbacks=[reporter])
    trainer.callback_handler.callbacks.insert(0, adaptive)  # the README's placement
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert {"adabatch/batch_size", "adabatch/lr_factor"} <= reporter.keys
