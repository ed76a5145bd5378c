"""`AdaptiveBatchSizeCallback`: a batch-size policy inside ``transformers.Trainer``.

::

    from adabatch.integrations.huggingface import AdaptiveBatchSizeCallback
    from adabatch.policies import make_policy

    policy = make_policy("norm-test", batch_size=16, eta=0.1, max_batch_size=512)
    args = TrainingArguments("out", per_device_train_batch_size=16, num_train_epochs=3)
    trainer = Trainer(model, args, train_dataset=data,
                      callbacks=[AdaptiveBatchSizeCallback(policy, lr_rule="sqrt")])
    trainer.train()

What the callback does, and where it meets the Trainer:

* **Batching.** ``per_device_train_batch_size`` × processes × ``gradient_accumulation_steps``
  is B₀, the policy's starting (global, logical) batch. At ``on_train_begin`` the callback puts
  an `adabatch.data.AdaptiveLoader` (same data set, collate function, workers) inside the
  Trainer's prepared data loader, in place of the plain ``DataLoader`` accelerate wraps (its
  ``base_dataloader``: the one internal this relies on). Each global batch is split across
  the processes by the sampler, every sample exactly once per epoch, and a resize applies from
  the next batch (NOTE [deferred batches] in ``_feed.py``).
* **Gradient accumulation.** The Trainer counts micro-batches modulo a fixed
  ``gradient_accumulation_steps`` (G) within an epoch, so each process's share of a logical
  batch is split into exactly G near-equal micro-batches: the logical batch is what the policy
  decided, and the physical one is share/G. ``max_physical_batch_size`` checks up front that
  the policy's largest batch fits (raise G if it does not). An epoch's rest too small to give
  every process G samples joins the batch before it; the last update the Trainer plans in an
  epoch fetches its plan's remainder of micro-batches, and gets a batch split into that many.
  The loss is normalised as the Trainer does it — by the token count when the model takes
  loss keyword arguments (``**kwargs`` in its ``forward``, as the library's language models
  do: exact over tokens), else 1/K per micro-batch (exact when the micro-batches are of equal
  size) — and the statistics use the same weight, so the per-sample gradients they see are
  exact either way. (A ``compute_loss_func`` given to the Trainer is not seen by the
  callback: its micro-batches are taken as 1/K-weighted.)
* **LR coupling** through `adabatch.lr_coupling.StepScaledLR` (applied inside
  ``optimizer.step()``): the Trainer's scheduler steps on its own LRs. The logged
  ``learning_rate`` is the scheduler's; ``adabatch/lr_factor`` is logged beside it.
* **Statistics** only on the steps the policy reads.
* **Logging**: ``adabatch/batch_size``, ``adabatch/lr_factor`` and the last decision's
  statistic are added to every log record (``trainer.state.log_history`` and the callbacks
  after this one). The ``report_to`` integrations run before callbacks passed to the Trainer;
  to have them record these values too, put this callback first:
  ``trainer.callback_handler.callbacks.insert(0, callback)``.
* **Checkpoints**: ``adabatch_state.pt`` in each ``checkpoint-<step>`` folder;
  ``trainer.train(resume_from_checkpoint=True)`` continues the same trajectory (the Trainer's
  own data skipping is turned off: the sampler knows its position).
* **Epochs**: the Trainer plans its epochs' lengths at B₀. With ``num_train_epochs`` the
  callback ends training after that many data epochs. With ``max_steps`` the Trainer bounds
  each of its epochs by a step count, which a grown batch would not reach within a data epoch:
  the feed then runs on through the data epochs (taking each one's end as it crosses it) and
  the Trainer stops at ``max_steps``.
* **A batch below B₀** (a policy with ``min_batch_size`` < B₀ that shrinks it) makes data
  epochs longer than the Trainer's plan: they continue across its epochs, and with
  ``num_train_epochs`` the Trainer may stop before the last data epoch ends.

* **The LR schedule in samples** (``lr_schedule_unit="samples"``, the default): the Trainer
  plans its schedule (warm-up, linear decay to 0 at ``max_steps``) in steps at B₀; with a
  growing batch far fewer steps are taken, and stepped once per step the schedule would stop
  partway. The callback sets the scheduler's step count to ⌊samples trained / B₀⌋ before each
  of the Trainer's ``lr_scheduler.step()`` calls, so the schedule ends where it would at B₀.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..lr_coupling import check_sample_schedule, place_schedule
from ..policies.base import BatchSizePolicy
from ._feed import MicroBatch, accumulation_count
from ._require import require
from ._session import AdaptiveSession, check_callback_options, loader_settings

_hf = require(
    ("transformers",), minimum="4.46", extra="huggingface", what="adabatch.integrations.huggingface"
)
from transformers import TrainerCallback  # noqa: E402  (after the check that names the extra)

__all__ = ["STATE_FILE", "AdaptiveBatchSizeCallback"]

STATE_FILE = "adabatch_state.pt"
_WHERE = "AdaptiveBatchSizeCallback"


def _accepts_loss_kwargs(model: Any) -> bool:
    """The Trainer's own test for normalising the loss by ``num_items_in_batch``."""
    declared = getattr(model, "accepts_loss_kwargs", None)
    if declared is not None:
        return bool(declared)
    parameters = inspect.signature(model.forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class AdaptiveBatchSizeCallback(TrainerCallback):
    """Adapt the batch size of a ``transformers.Trainer`` with a batch-size policy.

    Args:
        policy: a `BatchSizePolicy`; its ``batch_size`` must be
            ``per_device_train_batch_size`` × processes × ``gradient_accumulation_steps``.
        lr_rule: "none", "linear" or "sqrt" (Adam): lr = lr_sched · rule(B/B₀) · Π f_k.
        beta2_rule: "fixed" or "half-life" (Adam's β₂ at a fixed half-life in tokens).
        weight_decay_rule: "fixed" or "timescale" (AdamW's λ at a fixed B/(ηλD)).
        max_physical_batch_size: the largest micro-batch a process may run; checked against
            the policy's largest batch at the start (None: not checked).
        seed: seed of the per-epoch permutations; default ``args.data_seed``, else
            ``args.seed``.
        lr_schedule_unit: "samples" (default): the Trainer's LR schedule, planned in steps at
            B₀, is followed in samples — a step of k·B₀ samples advances it by k, so warm-up
            and decay end where they would at B₀; "steps": once per optimizer step, as the
            Trainer does.
        tracker_options: extra `adabatch.GradStatsTracker` options.

    Attributes:
        session: the run's `AdaptiveSession`, from ``on_train_begin`` on.
    """

    def __init__(
        self,
        policy: BatchSizePolicy,
        *,
        lr_rule: str = "none",
        beta2_rule: str = "fixed",
        weight_decay_rule: str = "fixed",
        max_physical_batch_size: int | None = None,
        seed: int | None = None,
        lr_schedule_unit: str = "samples",
        tracker_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_callback_options(
            _WHERE,
            policy,
            lr_rule=lr_rule,
            beta2_rule=beta2_rule,
            weight_decay_rule=weight_decay_rule,
            lr_schedule_unit=lr_schedule_unit,
            max_physical_batch_size=max_physical_batch_size,
        )
        self.policy = policy
        self.lr_rule = lr_rule
        self.beta2_rule = beta2_rule
        self.weight_decay_rule = weight_decay_rule
        self.max_physical_batch_size = max_physical_batch_size
        self.seed = seed
        self.lr_schedule_unit = lr_schedule_unit
        self.tracker_options = dict(tracker_options or {})
        self.session: AdaptiveSession | None = None
        self._epochs = 0  # num_train_epochs of the run
        self._token_weighted = False  # the Trainer normalises by num_items_in_batch
        self._lr_scheduler: Any = None  # the Trainer's scheduler, followed in samples

    # ------------------------------------------------------------------ set-up
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Turn off the Trainer's data skipping before it plans a resume.

        The sampler resumes at its own position; with skipping on, the Trainer would also
        skip batches, and with it turned off only at ``on_train_begin`` it would no longer
        restore its random state (dropout) for a resume mid-epoch.
        """
        args.ignore_data_skip = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Take over the training data, build the session, restore a checkpoint's state."""
        prepared = kwargs.get("train_dataloader")
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if prepared is None or model is None or optimizer is None:
            raise RuntimeError(
                f"{_WHERE}: the Trainer passed no train_dataloader/model/optimizer to "
                "on_train_begin; this transformers version is not supported"
            )
        base = getattr(prepared, "base_dataloader", None)
        if base is None:
            raise RuntimeError(
                f"{_WHERE}: the Trainer's training data loader ({type(prepared).__name__}) is "
                "not an accelerate DataLoaderShard; adabatch needs accelerate >= 1.0 and a "
                "map-style train_dataset"
            )
        settings = loader_settings(base, _WHERE)
        world = max(1, int(args.world_size))
        accumulation = int(args.gradient_accumulation_steps)
        expected = settings["batch_size"] * world * accumulation
        if self.policy.batch_size != expected:
            raise ValueError(
                f"{_WHERE}: the policy starts at batch_size={self.policy.batch_size} (global) but "
                f"per_device_train_batch_size {settings['batch_size']} × {world} process(es) × "
                f"gradient_accumulation_steps {accumulation} = {expected}; build the policy with "
                f"batch_size={expected}"
            )
        seed = self.seed
        if seed is None:
            seed = args.data_seed if args.data_seed is not None else args.seed
        session = AdaptiveSession(
            self.policy,
            settings,
            optimizer=optimizer,
            model=model,
            lr_rule=self.lr_rule,
            beta2_rule=self.beta2_rule,
            weight_decay_rule=self.weight_decay_rule,
            seed=int(seed),
            # What the Trainer fetches per update: G, and its plan's remainder at the end of
            # an epoch (its plan: the prepared loader's length at B0, read before the swap).
            count_of=accumulation_count(accumulation, len(prepared)),
            min_last_batch=world * accumulation,  # G non-empty micro-batches on every process
            # accelerate moves each batch to the device right before it is used; without a
            # device it hands the batch on untouched, so it must be real (drawn one ahead).
            deferred=getattr(prepared, "device", None) is not None,
            # With max_steps the Trainer plans its epochs from steps at B0, fewer than the
            # data needs once the batch grows: one iteration then runs through the epochs.
            continuous=args.max_steps > 0,
            tracker_options=self.tracker_options,
        )
        self._check_physical(session.policy.cap, world, accumulation)
        if state.global_step > 0:
            session.load_state_dict(self._saved_state(args, state))
        elif self.session is not None:
            # A second train() without a checkpoint starts over, as the Trainer does.
            self.session.close()
        # The sampler resumes at its position: the Trainer must not skip batches itself
        # (set at on_init_end already, so that the Trainer restores its random state).
        args.ignore_data_skip = True
        prepared.base_dataloader = session.feed
        self._lr_scheduler = self._sample_indexed(kwargs.get("lr_scheduler"))
        self.session = session
        self._token_weighted = _accepts_loss_kwargs(model)
        self._epochs = math.ceil(args.num_train_epochs) if args.max_steps <= 0 else 0

    def _sample_indexed(self, scheduler: Any) -> Any:
        if self.lr_schedule_unit != "samples" or scheduler is None:
            return None
        scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return None  # stepped on metrics, not per step
        check_sample_schedule(scheduler, _WHERE)
        return scheduler

    def _check_physical(self, cap: float, world: int, accumulation: int) -> None:
        limit = self.max_physical_batch_size
        if limit is None:
            return
        # cap: at most the data set size; an epoch's rest of < W·G samples may join a batch.
        share = math.ceil((cap + world * accumulation - 1) / world)
        largest = math.ceil(share / accumulation)
        if largest > limit:
            need = math.ceil(share / limit)
            raise ValueError(
                f"{_WHERE}: the policy's batch can reach {int(cap)}; over {world} "
                f"process(es) and gradient_accumulation_steps={accumulation} a micro-batch can "
                f"reach {largest} > max_physical_batch_size={limit}: set "
                f"gradient_accumulation_steps >= {need} (and per_device_train_batch_size so "
                "that B0 stays the policy's)"
            )

    @staticmethod
    def _path(args: Any, step: int) -> str:
        return os.path.join(args.output_dir, f"checkpoint-{step}", STATE_FILE)

    def _saved_state(self, args: Any, state: Any) -> Mapping[str, Any]:
        path = self._path(args, state.global_step)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{_WHERE}: the Trainer resumes at step {state.global_step} but {path} does "
                "not exist; resume from a checkpoint written with this callback (in "
                "args.output_dir), or start a new run"
            )
        return torch.load(path, map_location="cpu", weights_only=True)

    # ------------------------------------------------------------------ per step
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A resumed run takes the epoch-end decision a checkpoint cut off."""
        session = self.session
        assert session is not None
        if not session.feed.continuous:
            session.end_epoch_if_due()

    def _next_micro(self) -> MicroBatch:
        session = self.session
        if session is None or not session.feed.drawn:
            raise RuntimeError(
                f"{_WHERE}: a training batch arrived that the adaptive loader did not draw"
            )
        return session.feed.drawn.popleft()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The logical batch's micro-batches are drawn; the first one's forward is next."""
        assert self.session is not None
        self.session.begin_batch()
        self._begin_micro()

    def _begin_micro(self) -> None:
        assert self.session is not None
        micro = self._next_micro()
        # The weight on this micro-batch's mean loss in this process's backward.
        # (1/K: the Trainer divides by the micro-batches it fetched for this update.)
        weight = micro.weight if self._token_weighted else 1.0 / micro.count
        self.session.begin_micro(micro, weight)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Between two micro-batches of one logical batch."""
        assert self.session is not None
        self.session.end_micro()
        self._begin_micro()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After the last backward: the statistics go to the policy's window."""
        assert self.session is not None
        self.session.end_batch()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Before the Trainer steps its LR scheduler: place it at ⌊samples / B₀⌋."""
        if self._lr_scheduler is not None and self.session is not None:
            place_schedule(
                self._lr_scheduler, self.session.lr_clock, self.session.policy.batch_size
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After the optimizer step: the policy may decide (resize from the next batch)."""
        assert self.session is not None
        self.session.after_step()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Epoch-end decisions; stop after num_train_epochs real epochs."""
        session = self.session
        assert session is not None
        if session.feed.continuous:
            return  # the feed takes the data's epoch ends as it crosses them
        session.end_epoch_if_due()
        if self._epochs and session.scheduler.epoch >= self._epochs:
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        """Add the batch size, LR factor and statistic to the record."""
        if self.session is None or logs is None:
            return
        extra = {f"adabatch/{k}": v for k, v in self.session.metrics().items()}
        logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the session's state into the checkpoint folder the Trainer just wrote."""
        if self.session is None:
            return
        state_dict = self.session.state_dict()  # every rank (it may gather), one writes
        if state.is_world_process_zero:
            path = self._path(args, state.global_step)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            torch.save(state_dict, tmp)
            os.replace(tmp, path)  # never a half-written state

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Detach the hooks."""
        if self.session is not None:
            self.session.close()
