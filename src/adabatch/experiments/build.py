"""From a `Config` to the objects the `Trainer` runs: model, optimizer, LR schedule, policy.

The registries of the configurable components live here (`OPTIMIZERS`, `SCHEDULES`) or in
their packages (`adabatch.models.MODELS`, `adabatch.policies.POLICIES`,
`adabatch.experiments.data.DATA`); `OPTION_LOOKUPS` gives the config system each one's
options, so that a wrong option is caught before anything is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ..data import AdaptiveLoader
from ..models import MODELS, build_model, model_options
from ..optim import AdaGradNorm
from ..policies import POLICIES, make_policy, policy_parameters
from ..policies.base import BatchSizePolicy
from ..scheduler import BatchSizeScheduler
from ..training import Callback, Trainer
from .config import Config, ConfigError, OptionsLookup
from .data import DataBundle, build_data, data_options

__all__ = [
    "OPTIMIZERS",
    "OPTION_LOOKUPS",
    "SCHEDULES",
    "Built",
    "EpochSchedule",
    "build",
    "resolve_device",
]

#: name → optimizer class; ``optimizer.options`` are its keyword arguments.
OPTIMIZERS: Mapping[str, type[torch.optim.Optimizer]] = MappingProxyType(
    {
        "sgd": torch.optim.SGD,
        "adamw": torch.optim.AdamW,
        "adam": torch.optim.Adam,
        "adagrad": torch.optim.Adagrad,
        "adagrad-norm": AdaGradNorm,
    }
)

# Options that the experiments never set (or set elsewhere): hidden from the option lists.
_OPTIMIZER_HIDDEN = {"params", "lr", "foreach", "fused", "capturable", "differentiable", "maximize"}


def optimizer_options(name: str) -> dict[str, Any]:
    """``optimizer.options`` of optimizer ``name`` with their defaults."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    params = inspect.signature(OPTIMIZERS[name]).parameters
    out: dict[str, Any] = {}
    for k, p in params.items():
        if k in _OPTIMIZER_HIDDEN or p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        # torch writes float hyper-parameters with int defaults (momentum=0, weight_decay=0)
        if isinstance(default, int) and not isinstance(default, bool):
            default = float(default)
        out[k] = default
    return out


# ---------------------------------------------------------------------- LR schedules
#: name → its options with defaults (``t_max=0``: the run's epochs).
SCHEDULES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "constant": {},
        "cosine": {"t_max": 0, "eta_min": 0.0},
        "multistep": {"milestones": (), "gamma": 0.1},
        "step": {"step_size": 30, "gamma": 0.1},
    }
)


def schedule_options(name: str) -> dict[str, Any]:
    """``schedule.options`` of schedule ``name`` with their defaults."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown LR schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    return dict(SCHEDULES[name])


@dataclasses.dataclass
class EpochSchedule:
    """The LR multiplier after ``e`` epochs, in closed form (a ``LambdaLR`` lambda).

    warm-up (e + 1)/(w + 1) for e < w, times the schedule's factor:
    constant 1; cosine η_min/lr + (1 − η_min/lr)(1 + cos(π·min(e, T)/T))/2;
    multistep γ^#{m ≤ e}; step γ^⌊e/s⌋.

    A dataclass (not a closure) so that ``LambdaLR.state_dict`` saves it as plain values.
    """

    name: str
    warmup_epochs: int = 0
    t_max: int = 1
    eta_min_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    step_size: int = 30

    def __call__(self, epoch: int) -> float:
        """The multiplier of the base LR in epoch ``epoch`` (counted from 0)."""
        if self.name == "cosine":
            t = min(epoch, self.t_max) / self.t_max
            factor = self.eta_min_ratio + (1 - self.eta_min_ratio) * (1 + math.cos(math.pi * t)) / 2
        elif self.name == "multistep":
            factor = self.gamma ** sum(1 for m in self.milestones if m <= epoch)
        elif self.name == "step":
            factor = self.gamma ** (epoch // self.step_size)
        else:
            factor = 1.0
        if epoch < self.warmup_epochs:
            factor *= (epoch + 1) / (self.warmup_epochs + 1)
        return factor


def build_lr_scheduler(
    config: Config, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The configured schedule as a ``LambdaLR`` stepped per epoch (None when constant)."""
    s = config.schedule
    if s.name == "constant" and s.warmup_epochs == 0:
        return None
    o = {**SCHEDULES[s.name], **s.options}
    t_max = int(o.get("t_max") or config.train.epochs)
    if o.get("step_size", 1) < 1 or t_max < 1:
        raise ConfigError("schedule.step_size and schedule.t_max must be >= 1")
    rule = EpochSchedule(
        name=s.name,
        warmup_epochs=s.warmup_epochs,
        t_max=t_max,
        eta_min_ratio=float(o.get("eta_min", 0.0)) / config.optimizer.lr,
        milestones=tuple(int(m) for m in o.get("milestones", ())),
        gamma=float(o.get("gamma", 0.1)),
        step_size=int(o.get("step_size", 30)),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)


# ---------------------------------------------------------------------- policies
_POLICY_BOUND = {"batch_size", "dataset_size"}  # set from policy.batch_size and the data


def policy_options(name: str) -> dict[str, Any]:
    """``policy.options`` of policy ``name`` with their defaults."""
    if name not in POLICIES:
        raise ConfigError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    return {k: v for k, v in policy_parameters(name).items() if k not in _POLICY_BOUND}


def _model_options(name: str) -> dict[str, Any]:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return model_options(name)


#: section → its component's options, for `adabatch.experiments.config.apply_overrides`.
OPTION_LOOKUPS: Mapping[str, OptionsLookup] = MappingProxyType(
    {
        "data": data_options,
        "model": _model_options,
        "optimizer": optimizer_options,
        "schedule": schedule_options,
        "policy": policy_options,
    }
)


# ---------------------------------------------------------------------- everything
def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; other names checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {exc} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use cpu or auto")
    return device


@dataclasses.dataclass
class Built:
    """Everything one run needs, built from its `Config`."""

    config: Config
    data: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    policy: BatchSizePolicy
    loader: AdaptiveLoader
    scheduler: BatchSizeScheduler
    device: torch.device

    def trainer(
        self, callbacks: list[Callback] | None = None, checkpoint_path: Path | None = None
    ) -> Trainer:
        """The `Trainer` for these objects."""
        t = self.config.train
        return Trainer(
            self.model,
            self.optimizer,
            self.scheduler,
            eval_data=self.data.test,
            eval_batch_size=t.eval_batch_size,
            eval_transform=self.data.eval_transform,
            tracker_options={"batchnorm": t.batchnorm},
            max_physical_batch_size=t.max_physical_batch_size,
            callbacks=callbacks or [],
            log_every=t.log_every,
            checkpoint_path=checkpoint_path,
            checkpoint_every_steps=t.checkpoint_every,
            generators=self.data.generators,
        )


def build(config: Config) -> Built:
    """Seed, then build data, model, optimizer, LR schedule, policy, loader and scheduler.

    The model is initialised right after ``torch.manual_seed(train.seed)``, so one seed gives
    one initialisation whatever the other settings.
    """
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    data = build_data(config.data, seed=t.seed)
    torch.manual_seed(t.seed)
    try:
        model = build_model(
            config.model.name,
            in_shape=data.in_shape,
            num_classes=data.num_classes,
            **config.model.options,
        ).to(device)
        optimizer = OPTIMIZERS[config.optimizer.name](
            model.parameters(), lr=config.optimizer.lr, **config.optimizer.options
        )
        policy = make_policy(
            config.policy.name,
            batch_size=config.policy.batch_size,
            dataset_size=len(data.train),
            **config.policy.options,
        )
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # the component's own check: a config error here
        raise ConfigError(str(exc)) from None
    lr_scheduler = build_lr_scheduler(config, optimizer)
    loader = AdaptiveLoader(
        data.train,
        policy.batch_size,
        seed=t.seed,
        device=device if device.type != "cpu" else None,
        batch_transform=data.train_transform,
        num_workers=t.num_workers,
    )
    try:
        scheduler = BatchSizeScheduler(
            policy,
            loader,
            optimizer,
            lr_rule=config.policy.lr_rule,
            lr_scheduler=lr_scheduler,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Built(config, data, model, optimizer, policy, loader, scheduler, device)


def describe(built: Built) -> str:
    """One paragraph: data, model size, optimizer, policy, epochs."""
    c = built.config
    params = sum(p.numel() for p in built.model.parameters())
    return (
        f"{built.data.description}; model {c.model.name} ({params:,} parameters); "
        f"{c.optimizer.name} lr {c.optimizer.lr:g}; policy {c.policy.name} from batch "
        f"{c.policy.batch_size} (LR rule {c.policy.lr_rule}); {c.train.epochs} epochs on "
        f"{built.device}"
    )
