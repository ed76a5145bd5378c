"""What the trainer's records count: samples, mean losses, training time and wall time.

`Progress` accumulates between records and builds them; it is part of a checkpoint, so a
resumed run's records continue where the interrupted run's stopped (times aside).

A record is a flat dict of numbers (see `adabatch.training.callbacks.JsonlLogger`)::

    kind       "step" (every log_every steps and at every decision), "epoch", or "eval"
               (every eval_every_samples samples)
    epoch      completed epochs            step      optimizer steps taken
    samples    training samples consumed   time      training seconds (evaluation excluded)
    tokens     training tokens (text data: samples × T, or the real tokens counted)
    batch_tokens  the batch size × T, or the step's real tokens counted (text data)
    batch_size the step's requested size   lr        the LR the step used
    loss       mean training loss since the last step record (step records); per sample,
               or per real token when tokens are counted (as test_loss then)
    train_loss, test_loss, test_accuracy, elapsed (wall seconds)   (epoch records)
    evaluation, test_loss, test_accuracy                            (eval records)
    decision_statistic, decision_value, next_batch_size             (where a decision fell)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..policies.base import Decision
from .clock import TrainingClock

__all__ = ["MeanLoss", "Progress", "with_decision"]


class MeanLoss:
    """A running sum of per-batch loss sums and their weights (samples, or counted tokens)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, loss_sum: float, samples: int) -> None:
        """Add one batch: its summed loss and its weight (its samples or tokens)."""
        self.total += loss_sum
        self.count += samples

    def take(self) -> float | None:
        """The mean loss so far (None without samples), and start again."""
        mean = self.total / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return mean

    def state(self) -> list[float]:
        """[sum, count], for checkpoints."""
        return [self.total, self.count]

    def load(self, state: list[float]) -> None:
        """Inverse of `state`."""
        self.total, self.count = float(state[0]), int(state[1])


class Progress:
    """Samples, losses and clocks of a training run, and the records built from them."""

    def __init__(self, tokens_per_sample: int | None = None, counted: bool = False) -> None:
        # Fixed-length text: every record also counts tokens = samples × T; variable-length
        # text (``counted``): the real tokens of each step, given to `count_step`.
        self.tokens_per_sample = tokens_per_sample
        self.counted = counted
        self.tokens = 0  # training tokens consumed (global), when counted
        self.step_tokens = 0  # those of the last step
        self.samples = 0  # training samples consumed (global)
        self.samples_in_epoch = 0
        self.clock = TrainingClock()  # training time: paused for evaluation and checkpoints
        self.wall = TrainingClock()  # wall time: runs whenever `Trainer.fit` does
        self.epoch_loss = MeanLoss()
        self.log_loss = MeanLoss()  # since the last step record
        self.last_epoch_record: dict[str, Any] | None = None
        self.evaluations = 0  # the last multiple of eval_every_samples evaluated at

    def count_step(self, loss_sum: float, samples: int, tokens: int = 0) -> None:
        """Add one optimizer step's global batch, its summed loss (and its real tokens).

        Counted tokens (variable-length text, whose loss per sample is Σ real tokens / T):
        the training losses are kept per real token, like the test loss, as
        Σ (loss_sum · T) / Σ tokens.
        """
        self.tokens += tokens
        self.step_tokens = tokens
        self.samples += samples
        self.samples_in_epoch += samples
        if self.counted and self.tokens_per_sample is not None:
            loss_sum, weight = loss_sum * self.tokens_per_sample, tokens
        else:
            weight = samples
        self.epoch_loss.add(loss_sum, weight)
        self.log_loss.add(loss_sum, weight)

    def record(
        self, kind: str, *, epoch: int, step: int, batch_size: int, lr: float
    ) -> dict[str, Any]:
        """A record of ``kind`` at this point: the loop's counters with samples and time."""
        record = {
            "kind": kind,
            "epoch": epoch,
            "step": step,
            "samples": self.samples,
            "time": self.clock.read(),
            "batch_size": batch_size,
            "lr": lr,
        }
        if self.counted:
            record["tokens"] = self.tokens
            record["batch_tokens"] = self.step_tokens
        elif self.tokens_per_sample is not None:
            record["tokens"] = self.samples * self.tokens_per_sample
            record["batch_tokens"] = batch_size * self.tokens_per_sample
        return record

    def state_dict(self) -> dict[str, Any]:
        """Counters, loss sums, both clocks and the last epoch record."""
        return {
            "samples": self.samples,
            "samples_in_epoch": self.samples_in_epoch,
            "train_time": self.clock.read(),
            "elapsed": self.wall.read(),
            "epoch_loss": self.epoch_loss.state(),
            "log_loss": self.log_loss.state(),
            "last_epoch_record": self.last_epoch_record,
            "evaluations": self.evaluations,
            "tokens": self.tokens,
            "step_tokens": self.step_tokens,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output (both clocks go on from their saved times)."""
        self.samples = int(state["samples"])
        self.samples_in_epoch = int(state["samples_in_epoch"])
        self.clock = TrainingClock(float(state["train_time"]))
        self.wall = TrainingClock(float(state["elapsed"]))
        self.epoch_loss.load(state["epoch_loss"])
        self.log_loss.load(state["log_loss"])
        self.last_epoch_record = state["last_epoch_record"]
        self.evaluations = int(state.get("evaluations", 0))  # absent in older checkpoints
        self.tokens = int(state.get("tokens", 0))
        self.step_tokens = int(state.get("step_tokens", 0))


def with_decision(record: dict[str, Any], decision: Decision | None) -> dict[str, Any]:
    """Add the statistic behind a decision taken at this point (any decision, also "keep")."""
    if decision is not None:
        record["decision_statistic"] = decision.statistic
        record["decision_value"] = decision.value
        record["next_batch_size"] = decision.new_batch_size
    return record
