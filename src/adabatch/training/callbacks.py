"""Callbacks: what the `Trainer` tells the outside world, and the three loggers it ships.

A callback sees four events, in this order::

    on_fit_start(trainer)            once per fit() call (also after a resume)
    on_step_end(trainer)             after every optimizer step (keep it cheap)
    on_record(trainer, record)       every metrics record: a dict of flat values, "kind" =
                                     "step" (every ``log_every`` steps and at each decision)
                                     "epoch" (after each epoch's evaluation) or "eval"
                                     (an evaluation every ``eval_every_samples``)
    on_fit_end(trainer, status)      "completed", "interrupted" or "diverged"

A callback whose output must survive a resume implements ``state_dict`` /
``load_state_dict``; the trainer keeps that state in its checkpoints (the JSONL logger keeps
the length of its file there, and truncates the records written after the checkpoint).

Record keys (see the `Trainer` docstring for their meaning): ``kind, epoch, step, samples,
time, batch_size, lr`` and ``loss`` (step), ``elapsed, train_loss, test_loss, test_accuracy``
(epoch) or ``evaluation, test_loss, test_accuracy`` (eval), plus ``decision_statistic,
decision_value, next_batch_size`` when the policy decided at that point. Undefined values are
None (``null`` in JSON).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._json import json_safe

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Callback", "JsonlLogger", "ProgressBar", "TensorBoardLogger"]


class Callback:
    """Base class: every event is a no-op; override the ones you need.

    Attributes:
        rank_zero_only: under ``torch.distributed``, only rank 0 sees this callback's events
            (and restores its state): set by the loggers, so that a run has one writer even
            when every rank builds the same callbacks.
    """

    rank_zero_only: bool = False

    def on_fit_start(self, trainer: Trainer) -> None:
        """`Trainer.fit` starts (or resumes)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """An optimizer step finished (``trainer.step_count``, ``trainer.samples`` are updated)."""

    def on_record(self, trainer: Trainer, record: Mapping[str, Any]) -> None:
        """A metrics record was produced."""

    def on_fit_end(self, trainer: Trainer, status: str) -> None:
        """`Trainer.fit` returns (or raises, with status "diverged")."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this callback's output."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""


class JsonlLogger(Callback):
    """Append each record as one JSON line to ``path`` (the run's ``metrics.jsonl``).

    Lines are flushed as they are written, so a killed run loses at most the line in
    progress. The file's length is part of the checkpoint: a resumed run truncates the file
    to it and goes on, so the file ends up exactly as an uninterrupted run's (times aside).
    """

    rank_zero_only = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: Any = None

    def _open(self) -> Any:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        return self._file

    def on_record(self, trainer: Trainer, record: Mapping[str, Any]) -> None:  # noqa: D102
        line = json.dumps(json_safe(record), allow_nan=False)
        f = self._open()
        f.write(line + "\n")
        f.flush()

    def on_fit_end(self, trainer: Trainer, status: str) -> None:  # noqa: D102
        self.close()

    def close(self) -> None:
        """Close the file (it reopens on the next record)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return {"bytes": self.path.stat().st_size if self.path.exists() else 0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: D102
        self.close()
        size = int(state["bytes"])
        if not self.path.exists():
            if size:
                raise FileNotFoundError(
                    f"the checkpoint expects {size} bytes of records in {self.path}, which is "
                    "missing; resume in the run directory the checkpoint came from"
                )
            return
        if self.path.stat().st_size < size:
            raise ValueError(
                f"{self.path} is shorter ({self.path.stat().st_size} bytes) than when the "
                f"checkpoint was written ({size} bytes): it was edited or replaced"
            )
        with open(self.path, "r+b") as f:
            f.truncate(size)  # drop the records of steps the resumed run will redo


class ProgressBar(Callback):
    """A tqdm bar per epoch, counted in samples, showing the batch size, LR and loss.

    Samples rather than steps, because the number of steps in an epoch changes with the batch
    size. Without tqdm installed this callback does nothing.
    """

    rank_zero_only = True

    def __init__(self, *, leave: bool = False, disable: bool | None = None) -> None:
        self.leave = leave
        self.disable = disable
        self._bar: Any = None
        self._bar_epoch = -1
        self._shown = 0
        try:
            from tqdm.auto import tqdm
        except ImportError:  # optional dependency
            tqdm = None
        self._tqdm = tqdm

    def _ensure_bar(self, trainer: Trainer) -> Any:
        if self._tqdm is None:
            return None
        if self._bar is None or self._bar_epoch != trainer.epoch:
            self.close()
            total = trainer.samples_per_epoch
            self._bar = self._tqdm(
                total=total,
                desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
                unit="sample",
                unit_scale=True,
                leave=self.leave,
                disable=self.disable,
                dynamic_ncols=True,
            )
            self._bar_epoch = trainer.epoch
            self._shown = trainer.samples_in_epoch
            self._bar.update(self._shown)
        return self._bar

    def on_step_end(self, trainer: Trainer) -> None:  # noqa: D102
        bar = self._ensure_bar(trainer)
        if bar is not None:
            bar.update(trainer.samples_in_epoch - self._shown)
            self._shown = trainer.samples_in_epoch

    def on_record(self, trainer: Trainer, record: Mapping[str, Any]) -> None:  # noqa: D102
        if record.get("kind") == "eval":
            bar = self._ensure_bar(trainer)
            if bar is not None:
                bar.set_postfix(batch=record["batch_size"], test_loss=_fmt(record["test_loss"]))
            return
        if record.get("kind") == "epoch":
            if self._tqdm is not None and record.get("test_accuracy") is not None:
                self._tqdm.write(
                    f"epoch {record['epoch']}: batch {record['batch_size']}, "
                    f"lr {record['lr']:.3g}, train loss {_fmt(record.get('train_loss'))}, "
                    f"test loss {_fmt(record.get('test_loss'))}, "
                    f"test accuracy {_fmt(record.get('test_accuracy'), '.2f')}%"
                )
            self.close()
            return
        bar = self._ensure_bar(trainer)
        if bar is not None:
            bar.set_postfix(
                batch=record["batch_size"], lr=f"{record['lr']:.3g}", loss=_fmt(record["loss"])
            )

    def on_fit_end(self, trainer: Trainer, status: str) -> None:  # noqa: D102
        self.close()

    def close(self) -> None:
        """Close the bar in progress."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


class TensorBoardLogger(Callback):
    """Scalars to TensorBoard: ``train/*`` per step record, ``test/*`` per epoch, by samples.

    The x-axis is the number of samples seen, which compares runs whose batch sizes differ.
    On resume the writer purges the events after the checkpoint. Needs the ``tensorboard``
    package (``pip install "adabatch[experiments]"``).
    """

    rank_zero_only = True

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard missing
            raise ImportError(
                'TensorBoard logging needs the tensorboard package: pip install "adabatch['
                'experiments]" (or drop the TensorBoard callback)'
            ) from exc
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._purge: int | None = None
        self._last_samples = 0

    def on_fit_start(self, trainer: Trainer) -> None:  # noqa: D102
        if self._writer is None:
            self._writer = self._writer_cls(str(self.log_dir), purge_step=self._purge)

    def on_record(self, trainer: Trainer, record: Mapping[str, Any]) -> None:  # noqa: D102
        if self._writer is None:
            self.on_fit_start(trainer)
        x = int(record["samples"])
        self._last_samples = x
        if record["kind"] == "step":
            scalars = {
                "loss": record["loss"],
                "batch_size": record["batch_size"],
                "lr": record["lr"],
            }
            prefix = "train"
        elif record["kind"] == "eval":
            scalars = {"loss": record.get("test_loss"), "accuracy": record.get("test_accuracy")}
            prefix = "eval"
        else:
            scalars = {
                "loss": record.get("test_loss"),
                "accuracy": record.get("test_accuracy"),
                "epoch_train_loss": record.get("train_loss"),
            }
            prefix = "test"
        if record.get("decision_value") is not None:
            scalars[f"decision/{record['decision_statistic']}"] = record["decision_value"]
        for key, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self._writer.add_scalar(f"{prefix}/{key}", float(value), x)

    def on_fit_end(self, trainer: Trainer, status: str) -> None:  # noqa: D102
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        if self._writer is not None:
            self._writer.flush()
        return {"samples": self._last_samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: D102
        # Events logged after the checkpoint (at larger sample counts) are dropped.
        self._purge = int(state["samples"]) + 1
        self._last_samples = int(state["samples"])
