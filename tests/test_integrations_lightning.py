"""`adabatch.integrations.lightning.AdaptiveBatchSize` inside a real Lightning Trainer."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl  # a test dependency (adabatch[lightning]): never skipped
import torch
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from _integrations import Indexed, by_epoch, flat_once, mlp, own_loop_value
from adabatch.integrations.lightning import AdaptiveBatchSize
from adabatch.policies import make_policy

ROOT = Path(__file__).parent.parent
N = 160


class Module(pl.LightningModule):
    def __init__(self, lr: float = 0.1, step_lr: bool = False, decay_steps: int = 0) -> None:
        super().__init__()
        self.net = mlp()
        self.lr = lr
        self.step_lr = step_lr
        self.decay_steps = decay_steps  # > 0: a per-step linear decay planned over so many

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        if self.decay_steps:
            total = self.decay_steps
            decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (total - t) / total)
            return [opt], [{"scheduler": decay, "interval": "step"}]
        if not self.step_lr:
            return opt
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


class Recorder(pl.Callback):
    """Per micro-batch: epoch, indices; per optimizer step: the LR in force inside step()."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []
        self.step_lrs: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        # Registered after the callback's own pre-hook: sees the coupled LR.
        opt.register_step_pre_hook(lambda o, a, k: self.step_lrs.append(o.param_groups[0]["lr"]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, batch[2].tolist()))

    def epochs(self) -> dict[int, list[list[int]]]:
        return by_epoch(self.batches)


def fit(
    policy, *, epochs=3, module=None, callbacks=(), ckpt_path=None, data=None,
    trainer_options=None, **options,
):  # fmt: skip
    module = module or Module()
    adaptive = AdaptiveBatchSize(policy, tracker_options={"check_layout": False}, **options)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[adaptive, recorder, *callbacks], logger=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        **(trainer_options or {}),
    )  # fmt: skip
    loader = DataLoader(data or Indexed(N), batch_size=policy.batch_size, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module, adaptive, recorder, trainer


def schedule():
    return make_policy("schedule", batch_size=16, every=1, factor=2, max_batch_size=64)


def test_a_schedule_gives_exactly_its_batch_sizes_and_every_sample_once() -> None:
    _, adaptive, rec, _ = fit(schedule())
    epochs = rec.epochs()
    sizes = {e: [len(b) for b in batches] for e, batches in epochs.items()}
    assert sizes == {0: [16] * 10, 1: [32] * 5, 2: [64, 64, 32]}
    assert all(flat_once(batches, N) for batches in epochs.values())
    decisions = adaptive.session.scheduler.decisions
    assert [(d.old_batch_size, d.new_batch_size) for d in decisions] == [(16, 32), (32, 64)]


def test_the_norm_test_grows_the_batch_from_the_next_batch_on() -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    _, adaptive, rec, _ = fit(policy, epochs=2)
    decisions = adaptive.session.scheduler.decisions
    assert decisions and decisions[0].step == 0
    sizes = [len(b) for _, b in rec.batches]
    # The decision after step 0 shapes batch 1 (no batch drawn ahead at the old size).
    assert sizes[0] == 16 and sizes[1] == min(decisions[0].new_batch_size, N - 16)
    assert max(sizes) > 16
    assert all(flat_once(b, N) for b in rec.epochs().values())


def test_the_statistics_equal_our_own_loop_on_the_same_batch() -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    _, adaptive, rec, _ = fit(policy, epochs=1)
    first = adaptive.session.scheduler.decisions[0]
    expected = own_loop_value(adaptive.session.policy, mlp(), Indexed(N), rec.batches[0][1])
    assert math.isclose(first.value, expected, rel_tol=1e-5)


def test_micro_batches_give_the_one_batch_gradient_and_the_same_statistics() -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    whole, a, _, _ = fit(policy, epochs=2)
    split, b, rec, _ = fit(policy, epochs=2, max_physical_batch_size=7)
    assert max(len(idx) for _, idx in rec.batches) <= 7
    da, db = a.session.scheduler.decisions, b.session.scheduler.decisions
    assert [(d.step, d.new_batch_size) for d in da] == [(d.step, d.new_batch_size) for d in db]
    assert all(math.isclose(x.value, y.value, rel_tol=1e-4) for x, y in zip(da, db, strict=True))
    for p, q in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_the_lr_follows_the_rule_and_composes_with_the_module_scheduler() -> None:
    _, _, rec, _ = fit(schedule(), module=Module(lr=0.1, step_lr=True), lr_rule="linear")
    sizes = [len(b) for _, b in rec.batches]
    epochs = [e for e, _ in rec.batches]
    requested = [16 * 2**e for e in epochs]  # the last batch of an epoch may be short
    expected = [0.1 * 0.5**e * r / 16 for e, r in zip(epochs, requested, strict=True)]
    assert len(rec.step_lrs) == len(sizes)
    for got, want in zip(rec.step_lrs, expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-12)


@pytest.mark.parametrize("unit", ["samples", "steps"])
def test_a_step_schedule_planned_at_b0_is_followed_in_samples_or_steps(unit) -> None:
    planned = 30  # 3 epochs of N/B0 = 10 steps at B0
    module = Module(lr=0.1, decay_steps=planned)
    _, _, rec, _ = fit(schedule(), module=module, lr_schedule_unit=unit)
    sizes = [len(b) for _, b in rec.batches]
    before = [sum(sizes[:t]) for t in range(len(sizes))]
    if unit == "samples":
        expected = [0.1 * (planned - s // 16) / planned for s in before]
    else:
        expected = [0.1 * (planned - t) / planned for t in range(len(sizes))]
    assert len(rec.step_lrs) == len(expected) == 18
    for got, want in zip(rec.step_lrs, expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


def test_adams_beta2_and_weight_decay_follow_their_rules() -> None:
    class AdamModule(Module):
        def configure_optimizers(self):
            return torch.optim.AdamW(
                self.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1
            )

    module = AdamModule()
    _, adaptive, _, trainer = fit(
        schedule(), module=module, lr_rule="sqrt", beta2_rule="half-life",
        weight_decay_rule="timescale",
    )  # fmt: skip
    group = trainer.optimizers[0].param_groups[0]
    assert adaptive.session.batch_size == 64  # 4 × B0
    assert group["betas"] == (0.9, pytest.approx(0.95**4))
    assert group["weight_decay"] == pytest.approx(0.1 * 4 / 2)  # (B/B0) / √(B/B0)


def test_a_checkpoint_mid_epoch_resumes_the_same_trajectory(tmp_path) -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    full, a, rec_a, _ = fit(policy, epochs=2, callbacks=[ckpt])
    path = tmp_path / "step=3.ckpt"
    assert path.exists()
    resumed, b, rec_b, _ = fit(policy, epochs=2, ckpt_path=str(path))
    # The resumed run draws exactly the batches the uninterrupted one drew after step 3.
    assert rec_b.batches == rec_a.batches[3:]
    da, db = a.session.scheduler.decisions, b.session.scheduler.decisions
    assert [(d.step, d.new_batch_size) for d in da] == [(d.step, d.new_batch_size) for d in db]
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_a_checkpoint_after_an_epochs_last_step_takes_its_end_on_resume(tmp_path) -> None:
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=10, save_top_k=-1, filename="{step}"
    )
    full, _, rec_a, _ = fit(schedule(), callbacks=[ckpt])
    resumed, b, rec_b, _ = fit(schedule(), ckpt_path=str(tmp_path / "step=10.ckpt"))
    assert [len(i) for _, i in rec_b.batches] == [32] * 5 + [64, 64, 32]
    assert [i for _, i in rec_b.batches] == [i for _, i in rec_a.batches[10:]]
    assert b.session.scheduler.epoch == 3
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_epochs_cut_short_by_limit_train_batches_continue_the_data_epoch() -> None:
    trainer_options = {"limit_train_batches": 3}
    module = Module()
    adaptive = AdaptiveBatchSize(schedule(), tracker_options={"check_layout": False})
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=6, callbacks=[adaptive, recorder], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **trainer_options,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(Indexed(N), batch_size=16, shuffle=True))
    sizes = [len(i) for _, i in recorder.batches]
    assert sizes == [16] * 10 + [32] * 5  # epoch-end decisions at the data's epoch ends only
    decisions = adaptive.session.scheduler.decisions
    assert [(d.old_batch_size, d.new_batch_size) for d in decisions] == [(16, 32), (32, 64)]
    data_epochs = [recorder.batches[:10], recorder.batches[10:]]
    assert all(flat_once([i for _, i in e], N) for e in data_epochs)
    with pytest.raises(ValueError, match="limit_train_batches"):
        fit(schedule(), trainer_options={"limit_train_batches": 3}, max_physical_batch_size=8)


def test_a_true_half_precision_module_gets_converted_batches() -> None:
    adaptive = AdaptiveBatchSize(schedule(), tracker_options={"check_layout": False})
    trainer = pl.Trainer(
        max_epochs=2, precision="bf16-true", callbacks=[adaptive], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), DataLoader(Indexed(N), batch_size=16, shuffle=True))
    assert adaptive.session.batch_size == 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 8}, "build the policy with batch_size=8"),
        ({"drop_last": True}, "drop_last=True is not supported"),
        ({"sampler": True}, "custom sampler"),
    ],
)
def test_a_loader_it_cannot_take_over_is_refused_clearly(change, message) -> None:
    data = Indexed(N)
    if "sampler" in change:

        class Odd(SequentialSampler):
            pass

        loader = DataLoader(data, batch_size=16, sampler=Odd(data))
    else:
        loader = DataLoader(data, **{"batch_size": 16, "shuffle": True, **change})
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[AdaptiveBatchSize(schedule())], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with pytest.raises((ValueError, TypeError), match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)


def test_its_own_accumulation_is_refused_with_the_fix() -> None:
    trainer = pl.Trainer(
        max_epochs=1, accumulate_grad_batches=2, callbacks=[AdaptiveBatchSize(schedule())],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
    )  # fmt: skip
    loader = DataLoader(Indexed(N), batch_size=16, shuffle=True)
    with pytest.raises(ValueError, match="max_physical_batch_size"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)


def test_the_callback_serves_the_lightning_distribution_too() -> None:
    """``lightning.pytorch`` is the same code under another name; its Trainer takes it."""
    import lightning.pytorch as lp

    class Other(lp.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()
            self.sizes: list[int] = []

        def training_step(self, batch, batch_idx):
            x, y, index = batch
            self.sizes.append(len(index))
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Other()
    trainer = lp.Trainer(
        max_epochs=3, callbacks=[AdaptiveBatchSize(schedule())], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(Indexed(N), batch_size=16, shuffle=True))
    assert module.sizes == [16] * 10 + [32] * 5 + [64, 64, 32]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="BatchSizePolicy"):
        AdaptiveBatchSize("norm-test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_physical_batch_size"):
        AdaptiveBatchSize(schedule(), max_physical_batch_size=0)


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("n", "per_rank", "limit"),
    [(N, 16, 0), (101, 17, 16)],
    ids=["even", "uneven-shares-micro-batched"],
)
def test_two_ddp_processes_decide_identically_and_share_each_batch(
    tmp_path, n, per_rank, limit
) -> None:
    """Uneven shares (101 samples) with micro-batches: every rank steps after the same count."""
    script = ROOT / "tests" / "_lightning_ddp.py"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(tmp_path), str(n), str(per_rank), str(limit),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["decisions"] == ranks[1]["decisions"] and ranks[0]["decisions"]
    # The two ranks' shares of every global batch together cover each epoch exactly once.
    for epoch in ("0", "1"):
        both = ranks[0]["epochs"][epoch] + ranks[1]["epochs"][epoch]
        assert flat_once(both, n)
    assert len(ranks[0]["sizes"]) == len(ranks[1]["sizes"])  # the same micro-batch count
    for a, b in zip(ranks[0]["sizes"], ranks[1]["sizes"], strict=True):
        assert abs(a - b) <= 1 and (not limit or max(a, b) <= limit)
    torch.testing.assert_close(torch.tensor(ranks[0]["params"]), torch.tensor(ranks[1]["params"]))


class _SmallMemory(Module):
    """Runs out of memory on any batch above 12 samples (as a device would)."""

    def training_step(self, batch, batch_idx):
        if len(batch[2]) > 12:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().training_step(batch, batch_idx)


def test_auto_probes_the_largest_micro_batch_and_keeps_the_exact_gradient() -> None:
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=128)
    whole, a, _, _ = fit(policy, epochs=2)
    small, b, rec, _ = fit(policy, epochs=2, module=_SmallMemory(), max_physical_batch_size="auto")
    assert b.physical_limit == 12  # the probe: 12 fits, 13 does not
    assert max(len(idx) for _, idx in rec.batches) <= 12
    da, db = a.session.scheduler.decisions, b.session.scheduler.decisions
    assert [(d.step, d.new_batch_size) for d in da] == [(d.step, d.new_batch_size) for d in db]
    for p, q in zip(whole.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match='positive int, "auto" or None'):
        AdaptiveBatchSize(schedule(), max_physical_batch_size="big")
