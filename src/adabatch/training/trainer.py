"""`Trainer`: the adaptive-batch training loop, every piece in plain sight.

One optimizer step, in the order of the data flow (`Trainer.fit`)::

    for batch in loader:                         # resizable loader: the policy's batch size
        optimizer.zero_grad()
        with scheduler.measure(tracker):         # per-sample statistics, on the steps the
            loss = micro.backward(loss_of, batch)  # policy reads; micro-batches when the batch
                                                 # exceeds memory; p.grad = the mean gradient
        optimizer.step()                         # any torch optimizer
        scheduler.step()                         # policy at its cadence → LR rule → resize
    evaluate(); scheduler.step_epoch()           # epoch-cadence policies decide here

Around it: a metrics record every ``log_every`` steps and at every decision, an evaluation
record per epoch, callbacks (`adabatch.training.callbacks`), checkpoints written atomically,
a non-finite loss caught before it reaches the parameters, and a stop request honoured at the
next step boundary.

Checkpoints hold the model, the optimizer, the batch-size scheduler (policy, LR coupling, LR
scheduler, loader position), the micro-batcher's memory limit, the trainer's counters, the
callbacks' state and every random stream (`adabatch.training.checkpoint`). A run resumed from
one takes the identical trajectory: on CPU, the same batch sizes and bitwise the same
parameters as a run that never stopped (with the loader's in-memory fast path or no workers;
DataLoader workers draw their seeds when the iteration starts).

Time: ``time`` in the records is training time (steps, statistics, data loading, logging),
excluding evaluation and checkpointing — the measure the DiveBatch paper compares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import __version__
from .._validate import as_int, as_optional_int
from ..data import AdaptiveLoader, MicroBatcher
from ..distributed import is_distributed, rank, world_size
from ..distributed.parallel import unwrap
from ..distributed.state import (
    gather_objects,
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
)
from ..errors import DivergenceError
from ..policies.base import Decision
from ..scheduler import BatchSizeScheduler
from ..stats import GradStatsTracker
from .callbacks import Callback
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .clock import TrainingClock
from .evaluate import evaluate
from .records import Progress, with_decision

if TYPE_CHECKING:  # adabatch.local builds on the scheduler; the trainer only calls it
    from ..local import LocalSGD

__all__ = ["FitResult", "Trainer"]

# 1: adabatch 0.1; 2: the sampler owns the batch size and the position (adabatch 0.2).
_STATE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `Trainer.fit` did.

    Attributes:
        status: "completed" or "interrupted" (a stop was requested).
        epochs: completed epochs.
        steps: optimizer steps taken.
        samples: training samples consumed.
        train_time: training seconds (evaluation and checkpoints excluded).
        last_epoch: the last epoch record (None before the first evaluation).
        decisions: every decision that changed the batch size or the LR.
    """

    status: str
    epochs: int
    steps: int
    samples: int
    train_time: float
    last_epoch: dict[str, Any] | None
    decisions: tuple[Decision, ...]


class Trainer:
    """Train with an adaptive batch size: loader, statistics, optimizer, policy, LR rule.

    Args:
        model: the model; under ``torchrun``, wrapped by `adabatch.distributed.wrap_model`
            (DistributedDataParallel, or sharded by FSDP2) — every rank runs the same
            Trainer on its slice of each global batch, and rank 0 writes the checkpoints.
        optimizer: any ``torch.optim.Optimizer`` (SGD, AdamW, the AdaGrad family, ...).
        scheduler: the `BatchSizeScheduler` holding the policy, the `AdaptiveLoader` and the
            LR coupling (with your LR scheduler, if any).
        loss_fn: ``loss_fn(outputs, targets)``, reducing by the mean over the batch.
        eval_data: data set evaluated after every epoch (and before the first); None: none.
        eval_batch_size: its batch size.
        eval_transform: batch transform for evaluation (e.g. normalisation only).
        tracker_options: extra `GradStatsTracker` options (e.g. ``batchnorm="approximate"``)
            for the tracker built when the policy reads per-sample statistics.
        max_physical_batch_size: largest batch run at once; larger ones are micro-batched
            (None: probe on the first out-of-memory error, single process).
        callbacks: `Callback` objects (loggers, progress bar).
        log_every: a "step" record every this many steps (and at every decision).
        checkpoint_path: where to write checkpoints (None: no checkpoints).
        checkpoint_every_steps: also checkpoint every this many steps (0: epoch ends only).
        checkpoint_every_epochs: checkpoint every this many epochs (and at the last one).
        generators: extra ``torch.Generator`` objects whose state is checkpointed (e.g. the
            augmentation's).
        eval_at_start: evaluate before the first step (the epoch-0 record).
        monitor: the epoch record's key whose value goes to the LR scheduler's ``step`` at
            each epoch end (e.g. ``"test_loss"`` for ``ReduceLROnPlateau``); None: nothing.
        tokens_per_sample: T for fixed-length text: every record also counts ``tokens``
            (samples × T) and ``batch_tokens`` (the batch size × T).
        count_tokens: for text of variable length: ``count_tokens(batch)`` is the real target
            tokens of a batch, an int or a 0-dim tensor (e.g.
            `adabatch.datasets.text.count_tokens`); records then count those (summed over
            ranks) instead of samples × ``tokens_per_sample``, and the training and test
            losses are per real token (needs ``tokens_per_sample``, the padded T).
        local_sgd: an `adabatch.local.LocalSGD` on ``model`` and ``scheduler``: local SGD
            over the process group. The model is not wrapped; every worker steps alone and a
            round (average, or outer step, and the batch decision) follows every H steps and
            ends each epoch, so evaluations and checkpoints see the averaged model. Nothing is
            communicated between rounds: the step records' loss is this worker's (rank 0's),
            a stop is honoured at the next round, and checkpoints come at epoch ends (and at
            a stop) only. Each worker's optimizer state is checkpointed.
        eval_every_samples: also evaluate ``eval_data`` whenever the training samples pass a
            multiple k·N of this (at the end of the step that passes it; one evaluation per
            step even when a large batch passes several): an ``"eval"`` record with
            ``evaluation`` = k, the last multiple passed. 0: epoch ends only. Language models
            are compared on this (validation loss per N tokens is N / T samples).

    Example::

        policy = make_policy("divebatch", batch_size=32, max_batch_size=1024, delta=0.1, every=2)
        loader = AdaptiveLoader(train_set, policy.batch_size, seed=0)
        scheduler = BatchSizeScheduler(policy, loader, optimizer)
        result = Trainer(model, optimizer, scheduler, eval_data=test_set).fit(epochs=10)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: BatchSizeScheduler,
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        eval_data: Dataset | None = None,
        eval_batch_size: int = 1024,
        eval_transform: Callable[[Any], Any] | None = None,
        tracker_options: Mapping[str, Any] | None = None,
        max_physical_batch_size: int | None = None,
        callbacks: Iterable[Callback] = (),
        log_every: int = 50,
        checkpoint_path: str | Path | None = None,
        checkpoint_every_steps: int = 0,
        checkpoint_every_epochs: int = 1,
        generators: Sequence[torch.Generator] = (),
        eval_at_start: bool = True,
        monitor: str | None = None,
        tokens_per_sample: int | None = None,
        eval_every_samples: int = 0,
        count_tokens: Callable[[Any], int | Tensor] | None = None,
        local_sgd: LocalSGD | None = None,
    ) -> None:
        if not isinstance(scheduler, BatchSizeScheduler):
            raise TypeError(
                f"scheduler must be a BatchSizeScheduler, got {type(scheduler).__name__}"
            )
        if not isinstance(scheduler.loader, AdaptiveLoader):
            raise TypeError(
                "the scheduler's loader must be an adabatch AdaptiveLoader (the trainer iterates "
                f"it), got {type(scheduler.loader).__name__}"
            )
        if scheduler.optimizer is not None and scheduler.optimizer is not optimizer:
            raise ValueError("the scheduler couples the LR of a different optimizer")
        log_every = as_int(log_every, "log_every", minimum=1)
        tokens_per_sample = as_optional_int(tokens_per_sample, "tokens_per_sample", minimum=1)
        eval_every_samples = as_int(
            eval_every_samples, "eval_every_samples", 0, hint=" (0: epoch ends only)"
        )
        if eval_every_samples and eval_data is None:
            raise ValueError(
                f"eval_every_samples={eval_every_samples} needs eval_data to evaluate: pass a "
                "held-out data set, or eval_every_samples=0"
            )
        eval_batch_size = as_int(eval_batch_size, "eval_batch_size", minimum=1)
        checkpoint_every_epochs = as_int(checkpoint_every_epochs, "checkpoint_every_epochs", 1)
        checkpoint_every_steps = as_int(
            checkpoint_every_steps, "checkpoint_every_steps", 0, hint=" (0: epoch ends only)"
        )
        policy = scheduler.policy
        if policy.cadence.window > 0 and not policy.stats_request.per_sample:
            raise ValueError(
                f"this {policy.name} policy reads statistics that are not per-sample (e.g. a "
                "NoiseEstimate your loop computes); the Trainer computes per-sample statistics "
                "only: feed it with BatchSizeScheduler.observe in your own loop"
            )
        _check_monitor(scheduler, monitor, eval_data)
        if local_sgd is not None:
            if getattr(local_sgd, "scheduler", None) is not scheduler:
                raise ValueError(
                    "local_sgd must be the LocalSGD of this scheduler: LocalSGD(model, scheduler)"
                )
            if eval_every_samples:
                raise ValueError(
                    f"eval_every_samples={eval_every_samples} with local SGD: mid-round the "
                    "workers hold different parameters; local SGD evaluates at epoch ends, "
                    "which end a round (use eval_every_samples=0)"
                )
            if checkpoint_every_steps:
                raise ValueError(
                    f"checkpoint_every_steps={checkpoint_every_steps} with local SGD: between "
                    "rounds the workers hold different parameters, so checkpoints are taken at "
                    "epoch ends (rounds) only; use checkpoint_every_steps=0"
                )
        self.local_sgd = local_sgd
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader: AdaptiveLoader = scheduler.loader
        self.loss_fn = loss_fn
        self.eval_data = eval_data
        self.eval_batch_size = eval_batch_size
        self.eval_transform = eval_transform
        self.callbacks: list[Callback] = list(callbacks)
        self._listening = _listening(self.callbacks)  # refreshed by fit()
        self.log_every = log_every
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_every_steps = checkpoint_every_steps
        self.checkpoint_every_epochs = checkpoint_every_epochs
        self.generators = list(generators)
        self.eval_at_start = eval_at_start
        self.eval_every_samples = eval_every_samples
        self.monitor = monitor
        # Hooks only when the policy reads per-sample statistics: otherwise a plain backward.
        self.tracker: GradStatsTracker | None = None
        if policy.stats_request.per_sample:
            self.tracker = GradStatsTracker(
                unwrap(model),
                loss_reduction="mean",
                **scheduler.tracker_options,
                **dict(tracker_options or {}),
            )
        self.micro = MicroBatcher(
            model, max_physical_batch_size=max_physical_batch_size, tracker=self.tracker
        )
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.epochs = 0  # the target of the fit() in progress
        if count_tokens is not None and tokens_per_sample is None:
            raise ValueError(
                "count_tokens needs tokens_per_sample (the padded length T of a sequence), "
                "so that the test loss can be given per real token"
            )
        self.count_tokens = count_tokens
        self._batch_tokens = 0  # this rank's real tokens of the step in progress
        # samples (tokens), losses, clocks
        self.progress = Progress(tokens_per_sample, counted=count_tokens is not None)
        self.started = False  # the epoch-0 evaluation is done (or skipped)
        self._lr = self._current_lr()
        self._stop_requested = False
        self._stop_agreed: bool | None = None  # the ranks' agreed stop flag of this step
        self._local_divergence: str | None = None  # local SGD: this worker's loss diverged
        self._evaluated: tuple[int, dict[str, Any]] | None = None  # (step, metrics) of the last

    # ------------------------------------------------------------------ properties
    @property
    def step_count(self) -> int:
        """Optimizer steps taken."""
        return self.scheduler.step_count

    @property
    def epoch(self) -> int:
        """Completed epochs (the epoch in progress, counted from 0)."""
        return self.scheduler.epoch

    @property
    def samples(self) -> int:
        """Training samples consumed (global, over all ranks)."""
        return self.progress.samples

    @property
    def samples_in_epoch(self) -> int:
        """Training samples consumed in the epoch in progress."""
        return self.progress.samples_in_epoch

    @property
    def clock(self) -> TrainingClock:
        """Training time (evaluation and checkpoints excluded)."""
        return self.progress.clock

    @property
    def last_epoch_record(self) -> dict[str, Any] | None:
        """The last epoch record (None before the first evaluation)."""
        return self.progress.last_epoch_record

    @property
    def batch_size(self) -> int:
        """The global batch size in force (the sampler's)."""
        return self.scheduler.batch_size

    @property
    def step_batch_size(self) -> int:
        """The requested size of the last batch delivered (the initial size before any)."""
        last = self.loader.sampler.last
        return self.loader.batch_size if last is None else last.size

    @property
    def samples_per_epoch(self) -> int:
        """Samples in one epoch (the data set size, less a dropped last batch)."""
        sampler = self.loader.sampler
        size = sampler.dataset_size
        if sampler.drop_last:
            size -= size % self.loader.batch_size
        return size

    def request_stop(self) -> None:
        """Stop at the next step boundary, after writing a checkpoint (e.g. from a signal).

        Under a process group every rank stops after the same step: the one whose loss
        all-reduce first carries the request (`_check_loss`).
        """
        self._stop_requested = True

    # ------------------------------------------------------------------ the loop
    def fit(self, epochs: int) -> FitResult:
        """Train until ``epochs`` epochs are complete (counting those of a resumed run).

        Raises:
            DivergenceError: the loss became non-finite (the parameters keep the last
                finite step; the last checkpoint on disk is the last good one).
        """
        self.epochs = as_int(epochs, "epochs", minimum=1)
        self._stop_requested = False  # a stop honoured by an earlier fit() is spent
        # One writer: ranks other than 0 skip the rank_zero_only callbacks (the loggers).
        self._listening = _listening(self.callbacks)
        self.progress.wall.start()
        self._emit("on_fit_start")
        status = "completed"
        try:
            if not self.started:
                self.started = True
                if self.eval_at_start and self.eval_data is not None:
                    self._record_epoch(train_loss=None, decision=None)
            self.clock.start()
            while self.epoch < epochs:
                # A checkpoint taken after an epoch's last step resumes at its end.
                if not (self.loader.epoch_done and self.loader.epoch == self.epoch):
                    for batch in self.loader:  # the resizable loader: the policy's size
                        self.optimizer.zero_grad(set_to_none=True)
                        with self.scheduler.measure(self.tracker):  # statistics when read
                            loss = self._backward(batch)  # micro-batches; p.grad = mean
                        loss_sum = self._check_loss(loss)  # a NaN never reaches the weights
                        if self._local_divergence is None:  # (local SGD: see _check_loss)
                            self.optimizer.step()  # any torch optimizer
                        decision = self.scheduler.step()  # policy → LR rule → resize
                        local = self.local_sgd
                        if local is not None and (local.sync_due() or self.loader.epoch_done):
                            decision = local.sync()  # average; the local batch decision
                        self._after_step(loss_sum, decision)
                        if self._should_stop():
                            status = "interrupted"
                            self._save()
                            return self._result(status)
                self._end_epoch()
        except DivergenceError:
            status = "diverged"
            raise
        finally:
            self.clock.stop()
            self.progress.wall.stop()
            self._emit("on_fit_end", status)
        return self._result(status)

    def _backward(self, batch: Any) -> Tensor:
        """Forward and backward of one logical batch; returns its (local, mean) loss.

        Under DDP the ranks' shares of a batch may differ by one sample; ``loss_weight``
        (nᵣ·W/L) makes DDP's average of the ranks' gradients the exact global mean, and the
        tracker is told so that the statistics stay per sample.
        """
        # DDP averages the ranks' gradients: nᵣ·W/L makes that the global mean. A local-SGD
        # worker steps with its own batch's mean.
        weight = self.loader.loss_weight if self.local_sgd is None else 1.0

        def loss_of(chunk: Any) -> Tensor:
            inputs, targets = chunk
            loss = self.loss_fn(self.model(inputs), targets)
            return loss * weight if weight != 1.0 else loss

        self._lr = self._current_lr()  # the LR this step uses
        if self.count_tokens is not None:
            self._batch_tokens = int(self.count_tokens(batch))
        if self.tracker is not None and weight != 1.0:
            with self.tracker.loss_weight(weight):
                loss = self.micro.backward(loss_of, batch)
        else:
            loss = self.micro.backward(loss_of, batch)
        return loss / weight if weight not in (0.0, 1.0) else loss

    def _check_loss(self, loss: Tensor) -> float:
        """The batch's summed loss over all ranks; raise if it is not finite.

        Checked before the optimizer step, so that the parameters keep their last finite
        values. Under a process group one all-reduce carries the loss sum (every rank stops
        together when it diverges) and the stop flag: a signal reaches the ranks at different
        moments, and the flag makes them all stop after this same step, none left waiting in
        a collective (a stop requested later in the step is honoured after the next one).
        """
        n_local = self.loader.last_batch_size
        loss_sum = float(loss) * n_local if n_local else 0.0  # an empty share adds nothing
        if self.local_sgd is not None:
            # Nothing is communicated between rounds: this worker's mean, weighted as if it
            # were the global batch's; the stop flag is agreed at the rounds (`_should_stop`).
            loss_sum = float(loss) * self.loader.last_global_batch_size if n_local else 0.0
            self._stop_agreed = None
            self._batch_tokens *= self.local_sgd.world  # an estimate: this worker's × W
        elif is_distributed():
            packed = [loss_sum, float(self._stop_requested), float(self._batch_tokens)]
            total = torch.tensor(packed, dtype=torch.float64, device=loss.device)
            dist.all_reduce(total)
            loss_sum, self._stop_agreed = float(total[0]), bool(total[1] > 0)
            self._batch_tokens = round(float(total[2]))  # the global batch's tokens
        else:
            self._stop_agreed = None  # one process: read the request itself after the step
        if not math.isfinite(loss_sum) and self.local_sgd is not None:
            # One worker alone must not stop (the others would wait in the next round): it
            # keeps its last finite parameters, skips its steps, and every worker raises at
            # the round (`_should_stop`).
            if self._local_divergence is None:
                self._local_divergence = (
                    f"the training loss of worker {rank()} is {float(loss)} at epoch "
                    f"{self.epoch + 1}, step {self.step_count + 1}"
                )
            return 0.0
        if not math.isfinite(loss_sum):
            n = self.loader.last_global_batch_size
            raise DivergenceError(
                f"the training loss is {loss_sum / max(n, 1)} at epoch {self.epoch + 1}, step "
                f"{self.step_count + 1} (batch size {n}, lr {self._lr:.4g}); the run stops here "
                "with "
                "the parameters of the step before"
                + (
                    f"; the last good checkpoint is {self.checkpoint_path}"
                    if self.checkpoint_path is not None and self.checkpoint_path.exists()
                    else ""
                )
                + ". Lower the learning rate (or its coupling to the batch size)"
            )
        return loss_sum

    def _should_stop(self) -> bool:
        """Whether to stop after this step (every rank answers the same; see `_check_loss`).

        Under local SGD only right after a round, where the workers agree on the flag.
        """
        if self.local_sgd is not None:
            if self.local_sgd.in_round:
                return False
            diverged = self._local_divergence is not None
            stop, anyone_diverged = self._stop_requested, diverged
            if is_distributed():  # one small collective per round: [stop, diverged]
                flags = torch.tensor(
                    [float(stop), float(diverged)], dtype=torch.float64, device=self.device
                )
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                stop, anyone_diverged = bool(flags[0] > 0), bool(flags[1] > 0)
            if anyone_diverged:
                raise DivergenceError(
                    (self._local_divergence or "another worker's training loss became "
                     "non-finite")
                    + "; every worker stops at this round. Lower the learning rate (or its "
                    "coupling to the batch size)"
                )  # fmt: skip
            return stop
        return self._stop_requested if self._stop_agreed is None else self._stop_agreed

    def _after_step(self, loss_sum: float, decision: Decision | None) -> None:
        n = self.loader.last_global_batch_size
        self.progress.count_step(loss_sum, n, self._batch_tokens)
        self._emit("on_step_end")
        changed = decision is not None and (decision.changed or decision.lr_factor != 1.0)
        if self.step_count % self.log_every == 0 or changed:
            record = self._record("step", n)
            record["loss"] = self.progress.log_loss.take()
            self._emit("on_record", with_decision(record, decision))
        if self.eval_every_samples:
            reached = self.progress.samples // self.eval_every_samples
            if reached > self.progress.evaluations:
                self.progress.evaluations = reached
                with self.clock.paused():
                    metrics = self._evaluate()
                # an epoch ending on this step evaluates the same parameters: reuse these
                self._evaluated = (self.step_count, metrics)
                record = self._record("eval", n)
                record.update(evaluation=reached, **metrics)
                self._emit("on_record", record)
        if self.checkpoint_every_steps and self.step_count % self.checkpoint_every_steps == 0:
            self._save()

    def _end_epoch(self) -> None:
        """Evaluate, let epoch-cadence policies decide, record, checkpoint."""
        train_loss = self.progress.epoch_loss.take()
        if self._evaluated is not None and self._evaluated[0] == self.step_count:
            metrics = dict(self._evaluated[1])
        else:
            with self.clock.paused():
                metrics = self._evaluate()
        args = () if self.monitor is None else (metrics[self.monitor],)
        decision = self.scheduler.step_epoch(*args)
        self.progress.samples_in_epoch = 0
        self._record_epoch(train_loss=train_loss, decision=decision, metrics=metrics)
        if self.epoch % self.checkpoint_every_epochs == 0 or self.epoch == self.epochs:
            self._save()

    def _evaluate(self) -> dict[str, Any]:
        if self.eval_data is None:
            return {"test_loss": None, "test_accuracy": None}
        pause = self.tracker.paused() if self.tracker is not None else contextlib.nullcontext()
        with pause:
            return evaluate(
                self.model,
                self.eval_data,
                self.loss_fn,
                batch_size=self.eval_batch_size,
                device=self.device,
                batch_transform=self.eval_transform,
                count_tokens=self.count_tokens,
                tokens_per_sample=self.progress.tokens_per_sample if self.count_tokens else None,
            )

    def _record_epoch(
        self,
        *,
        train_loss: float | None,
        decision: Decision | None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        if metrics is None:
            with self.clock.paused():
                metrics = self._evaluate()
        # The batch size and LR of the epoch's last step (epoch 0: the initial ones); a
        # decision taken at the epoch's end is in the decision fields.
        record = self._record("epoch", self.step_batch_size)
        record.update(elapsed=self.progress.wall.read(), train_loss=train_loss, **metrics)
        record = with_decision(record, decision)
        self.progress.last_epoch_record = record
        self._emit("on_record", record)

    def _record(self, kind: str, batch_size: int) -> dict[str, Any]:
        record = self.progress.record(
            kind, epoch=self.epoch, step=self.step_count, batch_size=batch_size, lr=self._lr
        )
        if self.local_sgd is not None:
            record["rounds"] = self.local_sgd.rounds  # communication rounds so far
        return record

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self._listening:
            getattr(callback, event)(self, *args)

    def _result(self, status: str) -> FitResult:
        return FitResult(
            status=status,
            epochs=self.epoch,
            steps=self.step_count,
            samples=self.samples,
            train_time=self.clock.read(),
            last_epoch=self.last_epoch_record,
            decisions=tuple(self.scheduler.decisions),
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (see the module docstring)."""
        callbacks = [c.state_dict() for c in self.callbacks]
        return {
            "version": _STATE_VERSION,
            "model": model_state(self.model),  # gathered under FSDP2
            "optimizer": optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "micro": self.micro.state_dict(),
            "trainer": {"started": self.started, "lr": self._lr},
            "progress": self.progress.state_dict(),
            "callbacks": callbacks,
            "rng": rng_state(self.generators),
            # Under a process group, what differs between ranks: each one's streams and its
            # callbacks (which are often rank 0's loggers only).
            "ranks": gather_objects(
                {
                    "rng": rng_state(self.generators),
                    "callbacks": callbacks,
                    # local SGD: each worker's own optimizer (momentum, moments) differs
                    "optimizer": None
                    if self.local_sgd is None
                    else optimizer_state(self.model, self.optimizer),
                }
            )
            if is_distributed()
            else None,
            "local_sgd": None if self.local_sgd is None else self.local_sgd.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output into this trainer (built like the one that saved it)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"checkpoint format version {state.get('version')!r} is not the supported "
                f"{_STATE_VERSION} (adabatch {__version__}); version 1 was written by adabatch "
                "0.1: resume it with adabatch 0.1, or start the run again"
            )
        mine = _rank_state(state)
        if self.callbacks and len(mine["callbacks"]) != len(self.callbacks):
            raise ValueError(
                f"the checkpoint holds the state of {len(mine['callbacks'])} callbacks, this "
                f"trainer has {len(self.callbacks)}: build it with the same callbacks"
            )
        if (state.get("local_sgd") is None) != (self.local_sgd is None):
            raise ValueError(
                "the checkpoint and this trainer differ in local SGD: build it as the saved "
                "run was built"
            )
        if self.local_sgd is not None and state["local_sgd"]["world"] != world_size():
            raise ValueError(
                f"the checkpoint was written by {state['local_sgd']['world']} local-SGD "
                f"workers, this run has {world_size()}: each worker's optimizer state is its "
                "own, so resume with the same number of workers"
            )
        load_model_state(self.model, state["model"])
        own = mine.get("optimizer") if self.local_sgd is not None else None
        load_optimizer_state(self.model, self.optimizer, own or state["optimizer"])  # LRs
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro.load_state_dict(state["micro"])
        self.started = bool(state["trainer"]["started"])
        self._lr = float(state["trainer"]["lr"])
        self.progress.load_state_dict(state["progress"])
        if self.callbacks:
            listening = _listening(self.callbacks)
            for callback, c_state in zip(self.callbacks, mine["callbacks"], strict=True):
                if callback in listening:
                    callback.load_state_dict(c_state)
        set_rng_state(mine["rng"], self.generators)
        if self.local_sgd is not None:
            self.local_sgd.load_state_dict(state["local_sgd"])

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (atomically) to ``path`` or ``checkpoint_path``.

        Under a process group call it on every rank: the state is gathered from all of them
        (FSDP2 shards, every rank's random streams) and rank 0 alone writes the file.
        """
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path: pass one or build the Trainer with it")
        with self.clock.paused():
            state = self.state_dict()
            if rank() == 0:
                save_checkpoint(state, target)
            return target

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Resume from ``path`` (default ``checkpoint_path``): call before `fit`."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path: pass one or build the Trainer with it")
        self.load_state_dict(load_checkpoint(target, map_location=self.device))

    def _save(self) -> None:
        if self.checkpoint_path is not None:
            self.save_checkpoint()


def _listening(callbacks: list[Callback]) -> list[Callback]:
    """The callbacks this rank runs: all on rank 0, the others but the rank_zero_only ones."""
    main = rank() == 0
    return [c for c in callbacks if main or not c.rank_zero_only]


def _rank_state(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """This rank's random streams and callback states in a checkpoint.

    Saved by the same number of ranks: each rank its own (dropout masks differ across ranks,
    loggers live on rank 0). Otherwise (another world size, or one process): rank 0's for
    every rank; a rank without callbacks restores none.
    """
    per_rank = state.get("ranks")
    if per_rank is not None and len(per_rank) == world_size():
        return per_rank[rank()]
    return {"rng": state["rng"], "callbacks": state["callbacks"]}


def _check_monitor(scheduler: BatchSizeScheduler, monitor: str | None, eval_data: Any) -> None:
    """Refuse an LR scheduler whose ``step`` needs a metric the trainer was not told to pass."""
    coupling = scheduler.lr_coupling
    lr_scheduler = None if coupling is None else coupling.scheduler
    if monitor is not None:
        if lr_scheduler is None:
            raise ValueError(f"monitor={monitor!r} needs an LR scheduler to pass it to")
        if monitor.startswith("test_") and eval_data is None:
            raise ValueError(f"monitor={monitor!r} needs eval_data to read a test metric from")
        return
    if lr_scheduler is None or scheduler.lr_scheduler_interval != "epoch":
        return
    required = [
        p
        for p in inspect.signature(lr_scheduler.step).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if required:
        raise ValueError(
            f"the LR scheduler's step() needs an argument ({required[0].name}; e.g. "
            "ReduceLROnPlateau's metric): pass monitor='test_loss' (or another epoch record key)"
        )
