"""One run of one experiment into a run directory, and whole suites of them.

A run directory holds::

    config.json     what ran: the experiment, suite, method, seed, the full configuration,
                    the report settings of the suite, versions and machine
    metrics.jsonl   the records (see `adabatch.training.callbacks`)
    checkpoint.pt   the last checkpoint (written atomically)
    summary.json    written when the run stops: status, final accuracy, totals
    tensorboard/    TensorBoard events, when tensorboard is installed

A directory that already holds a run is refused unless ``resume`` (continue it: its saved
configuration must equal the requested one) or ``overwrite`` (delete it and start again).

Under ``torchrun`` a run is one distributed run: the process group is initialised from the
environment (`adabatch.distributed.init_from_env`, backend ``train.backend``), the model is
wrapped (``train.parallel``), and **rank 0 alone** checks and writes the run directory, the
logs, the progress bar and the summary; its verdict on the directory is broadcast, so every
rank starts, resumes or refuses together. ``config.json`` records the world size and the
backend. The number of ranks is not part of the configuration: the batch is global, so a run
may resume with another number of ranks and follow the same trajectory (to float tolerance).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .. import __version__
from .._json import read_json, write_json
from ..distributed import DistributedEnv, init_from_env, is_distributed
from ..errors import ConfigError, DivergedRunError, RunError
from ..training import DivergenceError, FitResult, JsonlLogger, ProgressBar, TensorBoardLogger
from ..training.callbacks import Callback
from .build import OPTION_LOOKUPS, build, describe
from .config import Config, apply_overrides
from .suites import Method, Suite

__all__ = [
    "RUN_FILES",
    "DivergedRunError",
    "RunError",
    "RunOutcome",
    "default_run_dir",
    "experiment_config",
    "run_experiment",
]

#: The files (and folder) of a run directory.
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "tensorboard")


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: ``status`` and the `FitResult` (None if nothing ran)."""

    path: Path
    status: str
    result: FitResult | None
    summary: dict[str, Any]


def default_run_dir(suite: Suite, method: Method, seed: int, root: str | Path = "runs") -> Path:
    """Where a run goes unless told: ``root/SUITE/METHOD/seedN``."""
    return Path(root) / suite.name / method.label / f"seed{seed}"


def experiment_config(
    suite: Suite, method: Method, overrides: Sequence[tuple[str, Any]] = ()
) -> Config:
    """The suite's base configuration with the method's, then the user's overrides."""
    config = apply_overrides(suite.base, dict(method.overrides), OPTION_LOOKUPS)
    return apply_overrides(config, list(overrides), OPTION_LOOKUPS)


def _run_record(
    suite: Suite, method: Method, config: Config, env: DistributedEnv
) -> dict[str, Any]:
    return {
        "experiment": f"{suite.name}/{method.label}",
        "suite": suite.name,
        "method": method.label,
        "description": method.description,
        "seed": config.train.seed,
        "report": suite.report_info(),
        "config": config.to_dict(),
        "distributed": {
            "world_size": env.world_size,
            "backend": env.backend,
            "parallel": config.train.parallel if env.distributed else None,
        },
        "versions": {
            "adabatch": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }


def _diff(saved: Any, mine: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(mine, dict):
        out = []
        for key in sorted(saved.keys() | mine.keys()):
            out += _diff(saved.get(key), mine.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == mine else [f"{prefix[:-1]}: saved {saved!r}, requested {mine!r}"]


def _prepare_directory(
    out: Path, record: Mapping[str, Any], *, resume: bool, overwrite: bool
) -> str:
    """Check ``out`` and return "fresh", "overwrite", "resume" or "done"."""
    if resume and overwrite:
        raise RunError("pass either --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} exists and is not a directory")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return "fresh"
    if overwrite:
        return "overwrite"  # deleted once the new run has been built without error
    config_path = out / "config.json"
    if not config_path.exists():
        raise RunError(
            f"{out} holds run files ({', '.join(present)}) but no config.json; pass "
            "--overwrite to start a new run there"
        )
    saved = read_json(config_path, RunError)
    status = "running or killed"
    if (out / "summary.json").exists():
        status = read_json(out / "summary.json", RunError).get("status", "unknown")
    if not resume:
        raise RunError(
            f"{out} already holds a run ({saved.get('experiment')}, seed {saved.get('seed')}, "
            f"{status}); pass --resume to continue it or --overwrite to replace it, or choose "
            "another --out"
        )
    diffs = _diff(saved.get("config"), record["config"])
    if saved.get("experiment") != record["experiment"]:
        diffs.insert(
            0, f"experiment: saved {saved.get('experiment')!r}, requested {record['experiment']!r}"
        )
    if diffs:
        raise RunError(
            f"cannot resume {out}: its configuration differs from the requested one: "
            + "; ".join(diffs)
            + ". Resume with the same settings, or pass --overwrite"
        )
    return "done" if status == "completed" else "resume"


@contextlib.contextmanager
def _stop_on_signals(request_stop: Any) -> Iterator[None]:
    """SIGINT/SIGTERM ask the trainer to stop at the next step (checkpoint written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        request_stop()
        # A second signal is not gentle any more.
        for sig, prev in previous.items():
            signal.signal(sig, prev)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


def _distributed_env(config: Config) -> DistributedEnv:
    """This process's place: the group from torchrun's environment, or a single process."""
    t = config.train
    device = "cuda" if t.device.startswith("cuda") else t.device
    try:
        return init_from_env(t.backend, device=device, timeout_s=t.dist_timeout)
    except ValueError as exc:
        raise ConfigError(f"train.backend/train.device: {exc}") from None


def _agree_on(verdict: Any) -> Any:
    """Rank 0's ``verdict`` on every rank (itself without a process group)."""
    if not is_distributed():
        return verdict
    box = [verdict]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _callbacks(out: Path, config: Config, progress: bool) -> list[Callback]:
    callbacks: list[Callback] = [JsonlLogger(out / "metrics.jsonl")]
    if progress:
        callbacks.append(ProgressBar())
    if config.train.tensorboard:
        # optional: the JSONL file has everything
        with contextlib.suppress(ImportError):
            callbacks.append(TensorBoardLogger(out / "tensorboard"))
    return callbacks


def run_experiment(
    suite: Suite,
    method: Method,
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Any = print,
) -> RunOutcome:
    """Train ``config`` into the run directory ``out`` and write its summary.

    Raises:
        RunError: the directory holds another run, the resumed run's configuration differs,
            or the loss diverged (the message names the last good checkpoint).
        ConfigError: an invalid configuration.
    """
    out = Path(out)
    env = _distributed_env(config)
    main = env.is_main
    if not main:
        log = _quiet  # rank 0 speaks for the run
    record = _run_record(suite, method, config, env)
    verdict: Any
    try:
        verdict = (
            _prepare_directory(out, record, resume=resume, overwrite=overwrite) if main else None
        )
    except RunError as exc:
        verdict = exc
    verdict = _agree_on(verdict)  # every rank starts, resumes or refuses together
    if isinstance(verdict, RunError):
        raise verdict
    state = verdict
    if state == "done":
        summary = read_json(out / "summary.json", RunError)
        log(f"{out}: already completed ({record['experiment']}, seed {config.train.seed})")
        return RunOutcome(out, "completed", None, summary)
    if suite.workers > 1 and env.world_size != suite.workers:
        raise RunError(
            f"suite {suite.name!r} compares {suite.workers} workers; this is "
            f"{env.world_size} process(es): run it as torchrun --nproc_per_node="
            f"{suite.workers} -m adabatch {'compare' if suite.methods else 'run'} {suite.name}"
        )
    if suite.hardware == "gpu" and not torch.cuda.is_available():
        warnings.warn(
            f"suite {suite.name!r} is sized for a GPU; on this CPU it will take very long "
            "(shorten it with --epochs=N or data.train_size=N)",
            RuntimeWarning,
            stacklevel=2,
        )
    built = build(config, env)  # configuration errors surface before anything is deleted
    if main:
        if state == "overwrite":
            for name in RUN_FILES:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
    log(f"{record['experiment']} (seed {config.train.seed}) → {out}")
    log(f"  {describe(built)}")
    checkpoint = out / "checkpoint.pt"
    # The same callbacks on every rank: the loggers are rank_zero_only, rank 0 writes.
    trainer = built.trainer(_callbacks(out, config, progress), checkpoint_path=checkpoint)
    # Rank 0 says whether there is a checkpoint; every rank then reads the same file (on one
    # machine, or on a file system all machines share).
    resuming = _agree_on(state == "resume" and checkpoint.exists())
    if resuming:
        trainer.load_checkpoint(checkpoint)
        log(f"  resumed at epoch {trainer.epoch}, step {trainer.step_count}")
    elif main:
        (out / "metrics.jsonl").unlink(missing_ok=True)  # a run killed before its checkpoint
        write_json(out / "config.json", record)
    if main:
        (out / "summary.json").unlink(missing_ok=True)
    try:
        with _stop_on_signals(trainer.request_stop):
            result = trainer.fit(config.train.epochs)
    except DivergenceError as exc:
        summary = _summary("diverged", trainer, None, message=str(exc))
        if main:
            write_json(out / "summary.json", summary)
        raise DivergedRunError(
            f"{record['experiment']} (seed {config.train.seed}): {exc}"
        ) from None
    summary = _summary(result.status, trainer, result)
    if main:
        write_json(out / "summary.json", summary)
    if result.status == "interrupted":
        log(f"  interrupted; continue with --resume (checkpoint {checkpoint})")
    return RunOutcome(out, result.status, result, summary)


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The log of ranks other than 0: nothing."""


def _summary(
    status: str, trainer: Any, result: FitResult | None, message: str | None = None
) -> dict[str, Any]:
    last = trainer.last_epoch_record or {}
    summary = {
        "status": status,
        "epochs": trainer.epoch,
        "steps": trainer.step_count,
        "samples": trainer.samples,
        "train_time": trainer.clock.read(),
        "final_batch_size": trainer.batch_size,
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "decisions": len(trainer.scheduler.decisions),
        "world_size": trainer.loader.world_size,
    }
    if message is not None:
        summary["message"] = message
    return summary
