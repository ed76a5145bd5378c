"""`AdaptiveBatchSize`: a batch-size policy inside Lightning's ``Trainer``, as one callback.

::

    from adabatch.integrations.lightning import AdaptiveBatchSize
    from adabatch.policies import make_policy

    policy = make_policy("norm-test", batch_size=32, eta=0.1, max_batch_size=1024)
    trainer = L.Trainer(max_epochs=5, callbacks=[AdaptiveBatchSize(policy, lr_rule="sqrt")])
    trainer.fit(module, DataLoader(dataset, batch_size=32, shuffle=True))

The module, its ``training_step``, its optimizers and LR schedulers stay as they are. What the
callback does, and where it meets Lightning:

* **Batching.** At ``on_fit_start`` it takes the training ``DataLoader`` the user supplied (its
  data set, collate function, workers) and gives Lightning an `adabatch.data.AdaptiveLoader`
  behind a feed of micro-batches instead (NOTE [deferred batches] in ``_feed.py``: a resize
  applies from the next batch although Lightning fetches one ahead). The feed has no length,
  so Lightning ends each epoch when the data is used up — every sample exactly once per epoch
  whatever the batch does; it splits each global batch across DDP ranks itself (so Lightning's
  ``DistributedSampler`` is not used). This swap is the one place that touches a Lightning
  internal (``trainer.fit_loop._data_source``): there is no public way to replace the training
  data from a callback. Because the number of batches is not known ahead, a
  ``val_check_interval`` below 1.0 and ``trainer.estimated_stepping_batches`` (e.g. for a
  OneCycle schedule) are not available; validation runs at each epoch end or every k steps.
* **Statistics** only on the steps the policy reads (the tracker is paused otherwise), with
  the same tracker and weights as our own loop.
* **Micro-batching** (``max_physical_batch_size``, a number or ``"auto"``: probed before the
  first batch with trial steps of the module's ``training_step``, which must then tolerate
  being called there once per trial size): a larger batch runs as ⌈N/limit⌉
  near-equal micro-batches through Lightning's own gradient accumulation. Lightning steps
  when its batch count within the epoch reaches a multiple of ``accumulate_grad_batches``;
  the callback sets that to (micro-batches run so far in the epoch) + K at each batch's first
  micro-batch, so the step falls exactly after the batch's K-th. A hook on each micro-batch's
  loss gradient turns Lightning's 1/``accumulate_grad_batches`` into the exact weight nₖ·W/L,
  so ``p.grad`` is the mean gradient over the logical batch (also when DDP shares differ);
  the callback zeroes the gradients before a batch's first micro-batch, where Lightning's own
  rule (a batch index divisible by ``accumulate_grad_batches``) would not.
* **LR coupling** through `adabatch.lr_coupling.StepScaledLR`: the factor rule(B/B₀)·Π f_k is
  applied only inside ``optimizer.step()``, so the module's own LR schedulers (any interval)
  step on their own values. ``LearningRateMonitor`` shows the scheduler's LR; the callback logs
  ``adabatch/lr_factor`` beside it.
* **Logging** through ``pl_module.log``: ``adabatch/batch_size``, ``adabatch/lr_factor`` and
  the last decision's statistic (``adabatch/T``, ``adabatch/diversity``, ...).
* **Checkpoints**: its state (policy state, statistics window, sampler position, LR factors)
  is the callback's ``state_dict`` in Lightning's checkpoints; ``trainer.fit(ckpt_path=...)``
  continues the same trajectory, mid-epoch included.
* **DDP**: decisions come from statistics all-reduced across ranks, and every rank checks that
  it reached the same one.

Epochs are the data's: an epoch cut short (``limit_train_batches``) continues where it stopped
in the next one, and the policy's epoch-end decisions come at the data epoch's end.

Not supported (each refused with a message): manual optimization, several optimizers, a
``Trainer(accumulate_grad_batches=k)`` of the user's own (use ``max_physical_batch_size``),
``limit_train_batches`` together with ``max_physical_batch_size``, ``drop_last=True``,
iterable data sets, custom samplers.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data._utils.collate import default_collate

from ..data.memory import probe_max_batch_size
from ..lr_coupling import check_sample_schedule, place_schedule
from ..policies.base import BatchSizePolicy
from ._feed import MicroBatch, physical_count
from ._require import require
from ._session import AdaptiveSession, check_callback_options, loader_settings

_pl = require(
    ("lightning.pytorch", "pytorch_lightning"),
    minimum="2.2",
    extra="lightning",
    what="adabatch.integrations.lightning",
)


def _callback_bases() -> tuple[type, ...]:
    """The ``Callback`` class of every Lightning distribution installed.

    ``lightning.pytorch`` and ``pytorch_lightning`` are the same code under two names, and a
    Trainer of one refuses a callback of the other: subclassing both serves either.
    """
    bases = [_pl.Callback]
    other = "pytorch_lightning" if _pl.__name__.startswith("lightning") else "lightning.pytorch"
    with contextlib.suppress(ImportError):
        bases.append(importlib.import_module(other).Callback)
    return tuple(bases)


__all__ = ["AdaptiveBatchSize"]

_WHERE = "AdaptiveBatchSize"


class AdaptiveBatchSize(*_callback_bases()):  # type: ignore[misc]
    """Adapt the batch size of a Lightning ``Trainer`` with a batch-size policy.

    Args:
        policy: a `BatchSizePolicy` (`adabatch.policies.make_policy`); its ``batch_size`` is
            the global B₀ and must equal the DataLoader's ``batch_size`` × the world size.
        lr_rule: "none", "linear" (SGD) or "sqrt" (Adam): lr = lr_sched · rule(B/B₀) · Π f_k.
        beta2_rule: "fixed" or "half-life" (Adam's β₂ at a fixed half-life in tokens).
        weight_decay_rule: "fixed" or "timescale" (AdamW's λ at a fixed B/(ηλD)).
        max_physical_batch_size: the largest micro-batch per process; a larger share of a
            batch is split into near-equal micro-batches (exact mean gradient). None: never.
            "auto": found before the first batch, by trial steps of the module's own
            ``training_step`` at growing sizes up to the largest share the policy can reach
            (`adabatch.data.probe_max_batch_size`; the minimum over the processes).
        seed: seed of the per-epoch permutations; default: ``PL_GLOBAL_SEED`` (set by
            ``seed_everything``), else 0. The same on every rank.
        lr_schedule_unit: "steps" (default): LR schedulers with ``interval="step"`` step once
            per optimizer step, as Lightning does; "samples": they follow ⌊samples / B₀⌋ (a
            step of k·B₀ samples advances them by k), for a schedule planned at B₀ (a
            LambdaLR or OneCycleLR). Epoch-interval schedulers follow real epochs either way.
        tracker_options: extra `adabatch.GradStatsTracker` options (e.g.
            ``{"batchnorm": "approximate"}``).
        log: log the batch size, LR factor and statistic through ``pl_module.log`` (every
            ``log_every_n_steps`` steps and at every decision).

    Attributes:
        session: the run's `AdaptiveSession` (scheduler, loader, tracker), from
            ``on_fit_start`` on.
    """

    def __init__(
        self,
        policy: BatchSizePolicy,
        *,
        lr_rule: str = "none",
        beta2_rule: str = "fixed",
        weight_decay_rule: str = "fixed",
        max_physical_batch_size: int | str | None = None,
        seed: int | None = None,
        lr_schedule_unit: str = "steps",
        tracker_options: Mapping[str, Any] | None = None,
        log: bool = True,
    ) -> None:
        check_callback_options(
            _WHERE,
            policy,
            lr_rule=lr_rule,
            beta2_rule=beta2_rule,
            weight_decay_rule=weight_decay_rule,
            lr_schedule_unit=lr_schedule_unit,
            max_physical_batch_size=max_physical_batch_size,
            allow_auto=True,
        )
        self.policy = policy
        self.lr_rule = lr_rule
        self.beta2_rule = beta2_rule
        self.weight_decay_rule = weight_decay_rule
        self.max_physical_batch_size = max_physical_batch_size
        self.seed = seed
        self.lr_schedule_unit = lr_schedule_unit
        self.tracker_options = dict(tracker_options or {})
        self.log_metrics = log
        self.session: AdaptiveSession | None = None
        self._pending_state: Mapping[str, Any] | None = None
        self._replaced: tuple[Any, Any] | None = None  # (data source, the user's loader)
        self._accumulating = False
        self._auto = max_physical_batch_size == "auto"
        self.physical_limit: int | None = None  # the limit in force ("auto": once probed)
        self._current: MicroBatch | None = None  # the micro-batch running now
        self._sample_schedulers: list[Any] = []  # step-interval schedulers followed in samples

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Refuse what cannot work before anything runs."""
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            raise ValueError(
                f"{_WHERE}: manual optimization is not supported (the callback places the "
                "optimizer step); use automatic optimization"
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"{_WHERE}: Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) "
                "would multiply the adaptive batch; the callback owns accumulation: pass "
                "max_physical_batch_size=<largest micro-batch> instead"
            )
        limit = trainer.limit_train_batches
        if self.max_physical_batch_size is not None and limit not in (1.0, None):
            raise ValueError(
                f"{_WHERE}: limit_train_batches={limit} can end an epoch between two "
                "micro-batches of one batch (a step on part of it); with "
                "max_physical_batch_size, train on whole epochs (limit_train_batches=1.0) or "
                "bound the run with max_steps"
            )
        others = [
            type(cb).__name__
            for cb in trainer.callbacks
            if type(cb).__name__ in ("GradientAccumulationScheduler", "BatchSizeFinder")
        ]
        if others:
            raise ValueError(
                f"{_WHERE}: cannot run beside {', '.join(others)}, which also sets the batch "
                "or its accumulation"
            )

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Take over the training data, build the session, restore a checkpoint's state."""
        source = getattr(trainer.fit_loop, "_data_source", None)
        if source is None or not hasattr(source, "instance"):
            raise RuntimeError(
                f"{_WHERE}: this Lightning version ({_pl.__version__}) keeps its training data "
                "elsewhere than fit_loop._data_source; adabatch supports Lightning 2.2 to 2.6"
            )
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"{_WHERE}: the module configures {len(trainer.optimizers)} optimizers; the "
                "callback couples the LR of exactly one"
            )
        user_loader = self._replaced[1] if self._replaced else source.dataloader()
        settings = loader_settings(user_loader, _WHERE)
        world = trainer.world_size
        expected = settings["batch_size"] * world
        if self.policy.batch_size != expected:
            raise ValueError(
                f"{_WHERE}: the policy starts at batch_size={self.policy.batch_size} (global) but "
                f"the DataLoader's batch_size {settings['batch_size']} × {world} process(es) is "
                f"{expected}; build the policy with batch_size={expected} or the DataLoader with "
                f"batch_size={self.policy.batch_size // max(world, 1)}"
            )
        seed = self.seed
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if self.session is not None and self._pending_state is None:
            # A second fit() continues the first: the policy's state carries over.
            self._pending_state = self.session.state_dict()
        self.session = AdaptiveSession(
            self.policy,
            settings,
            optimizer=trainer.optimizers[0],
            model=pl_module,
            lr_rule=self.lr_rule,
            beta2_rule=self.beta2_rule,
            weight_decay_rule=self.weight_decay_rule,
            seed=seed,
            count_of=physical_count(None if self._auto else self.max_physical_batch_size),
            min_last_batch=world,  # no rank gets an empty share (its mean loss would be NaN)
            deferred=True,
            # What Lightning's precision plugin does to a batch ("bf16-true" casts it); it
            # cannot see inside a placeholder, so the feed applies it when drawing.
            on_draw=trainer.precision_plugin.convert_input,
            tracker_options=self.tracker_options,
        )
        if self._pending_state is not None:
            self.session.load_state_dict(self._pending_state)
            self._pending_state = None
            # Resumed right after an epoch's last step: Lightning reads ahead into the next
            # epoch (setup_data) and skips the epoch hooks of the one it restarts, so the
            # cut-off epoch end is taken now.
            self.session.end_epoch_if_due()
        self._accumulating = self.max_physical_batch_size is not None
        if not self._auto:
            self.physical_limit = self.max_physical_batch_size  # type: ignore[assignment]
        self._sample_schedulers = []
        if self.lr_schedule_unit == "samples":
            for config in trainer.lr_scheduler_configs:
                if config.interval == "step":
                    check_sample_schedule(config.scheduler, _WHERE)
                    self._sample_schedulers.append(config.scheduler)
        self._collate = settings["collate_fn"] or default_collate
        self._replaced = (source, user_loader)
        source.instance = self.session.feed

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """With ``max_physical_batch_size="auto"``: probe the largest micro-batch that fits."""
        session = self.session
        if not self._auto or session is None or self.physical_limit is not None:
            return
        world = trainer.world_size
        cap = min(session.policy.cap, session.loader.sampler.dataset_size)
        share = math.ceil((cap + world - 1) / world)  # the largest share, a merged rest included
        dataset, collate = session.loader.dataset, self._collate
        optimizer = trainer.optimizers[0]

        def trial(size: int) -> None:
            batch = collate([dataset[i] for i in range(size)])
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            pause = session.tracker.paused() if session.tracker else contextlib.nullcontext()
            try:
                with pause, torch.enable_grad():
                    output = pl_module.training_step(batch, 0)
                    loss = output["loss"] if isinstance(output, Mapping) else output
                    loss.backward()
            finally:
                optimizer.zero_grad(set_to_none=True)  # a trial leaves no gradient behind

        start = max(1, session.policy.batch_size // world)
        self.physical_limit = probe_max_batch_size(trial, start=min(start, share), limit=share)
        session.feed.count_of = physical_count(self.physical_limit)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Give Lightning its data source back and detach the hooks."""
        if stage != "fit":
            return
        if self._replaced is not None:
            source, user_loader = self._replaced
            source.instance = user_loader
            self._replaced = None
        if self.session is not None:
            self.session.close()

    # ------------------------------------------------------------------ per batch
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """A resumed run takes the epoch-end decision a checkpoint cut off."""
        assert self.session is not None
        self.session.end_epoch_if_due()

    def _micro(self) -> MicroBatch:
        if self._current is None:
            raise RuntimeError(f"{_WHERE}: no micro-batch is running")
        return self._current

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        """A micro-batch is about to run (Lightning has moved it to the device: it is drawn)."""
        session = self.session
        if session is None or not session.feed.drawn:
            raise RuntimeError(
                f"{_WHERE}: a training batch arrived that the adaptive loader did not draw; "
                "the callback must own the training data (is another callback replacing it?)"
            )
        micro = self._current = session.feed.drawn.popleft()
        if micro.index == 0:
            session.begin_batch()
            if self._accumulating:
                # Lightning steps when its count of batches in the epoch is a multiple of
                # accumulate_grad_batches: R run before this batch, + K, lands on the K-th.
                ready = trainer.fit_loop.epoch_loop.batch_progress.current.ready
                trainer.accumulate_grad_batches = (ready - 1) + micro.count
                if ready > 1:
                    # Lightning zeroes the gradients at a batch index that is a multiple of
                    # accumulate_grad_batches, which (ready - 1) is not: zero them here.
                    trainer.optimizers[0].zero_grad()
        session.begin_micro(micro)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        """Weigh this micro-batch's loss gradient by nₖ·W/L (Lightning divided it by its count)."""
        factor = trainer.accumulate_grad_batches * self._micro().weight
        if factor != 1.0 and loss.requires_grad:
            loss.register_hook(lambda grad: grad * factor)

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        """The micro-batch's backward is done."""
        assert self.session is not None
        self.session.end_micro()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """After the logical batch's last backward: the statistics go to the policy's window."""
        session = self.session
        assert session is not None
        session.end_batch()
        for scheduler in self._sample_schedulers:  # Lightning steps them after this step
            place_schedule(scheduler, session.lr_clock, session.policy.batch_size)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After the optimizer step of a logical batch: the policy may decide."""
        micro = self._micro()
        if not micro.is_last:
            return
        assert self.session is not None
        decision = self.session.after_step()
        # pl_module.log costs ~0.5 ms a value (it moves the results to the device): log on
        # the steps Lightning writes to its loggers, and whenever a decision is taken.
        step = trainer.global_step
        if decision is not None or step % max(1, trainer.log_every_n_steps) == 0:
            self._log(pl_module, epoch_end=False)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Epoch-end decisions (DiveBatch, epoch schedules)."""
        assert self.session is not None
        # Only a data epoch's end: not one cut short by limit_train_batches or a stop.
        if self.session.end_epoch_if_due() is not None:
            self._log(pl_module, epoch_end=True)

    def _log(self, pl_module: Any, *, epoch_end: bool) -> None:
        if not self.log_metrics or self.session is None:
            return
        for name, value in self.session.metrics().items():
            # Lightning accepts only epoch-level values from on_train_epoch_end.
            pl_module.log(
                f"adabatch/{name}", value, on_step=not epoch_end, on_epoch=epoch_end, batch_size=1
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The session's state (saved in Lightning checkpoints under this callback's key)."""
        if self.session is None:
            return dict(self._pending_state or {})
        return self.session.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Keep a checkpoint's state until ``on_fit_start`` builds the session."""
        if not state_dict:
            return
        if self.session is not None:
            self.session.load_state_dict(state_dict)
        else:
            self._pending_state = state_dict
