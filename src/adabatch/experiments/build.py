"""From a `Config` to the objects the `Trainer` runs: model, optimizer, LR schedule, policy.

The registries of the configurable components live here (`OPTIMIZERS`, `SCHEDULES`) or in
their packages (`adabatch.models.MODELS`, `adabatch.policies.POLICIES`,
`adabatch.experiments.bundles.DATA`); `OPTION_LOOKUPS` gives the config system each one's
options, read from the component itself (`adabatch.options.options_of`), so that a wrong
option is caught before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import lr_scheduler as lrs

from ..data import AdaptiveLoader
from ..distributed import DistributedEnv, is_distributed, world_size, wrap_model
from ..local import LocalSGD, OuterNesterov
from ..models import MODELS, build_model
from ..models.registry import derived_inputs
from ..optim import AdaGradNorm
from ..options import Option, options_of
from ..policies import POLICIES, make_policy, seesaw_thresholds
from ..scheduler import BatchSizeScheduler
from ..training import Callback, Trainer
from .bundles import DataBundle, build_data, data_options
from .config import Config, ConfigError, OptionsLookup
from .units import in_sequences

__all__ = [
    "OPTIMIZERS",
    "OPTION_LOOKUPS",
    "SCHEDULES",
    "Built",
    "build",
    "build_lr_scheduler",
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
_OPTIMIZER_HIDDEN = ("params", "lr", "foreach", "fused", "capturable", "differentiable", "maximize")


# ---------------------------------------------------------------------- LR schedules
# torch's own schedulers, stepped once per epoch on the unscaled LR (the batch-size coupling
# multiplies their LR; see adabatch.lr_coupling). Each builder's keyword options are the
# schedule's options; ``epochs`` is the run's length.
def _cosine(
    optimizer: torch.optim.Optimizer, epochs: int, *, t_max: int = 0, eta_min: float = 0.0
) -> lrs.LRScheduler:
    """Cosine from lr to ``eta_min`` over ``t_max`` epochs (0: the whole run), then held."""
    t_max = t_max or epochs
    if t_max < 1:
        raise ConfigError(f"schedule.t_max must be >= 1, got {t_max}")
    cosine = lrs.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    if t_max >= epochs:
        return cosine
    # torch's cosine would rise again after T_max: hold η_min for the epochs after it.
    base = optimizer.param_groups[0]["initial_lr"]
    hold = lrs.ConstantLR(optimizer, factor=eta_min / base, total_iters=epochs + 1)
    return lrs.SequentialLR(optimizer, [cosine, hold], milestones=[t_max])


def _multistep(
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> lrs.LRScheduler:
    """The LR times ``gamma`` at each epoch of ``milestones``."""
    return lrs.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def _step(
    optimizer: torch.optim.Optimizer, epochs: int, *, step_size: int = 30, gamma: float = 0.1
) -> lrs.LRScheduler:
    """The LR times ``gamma`` every ``step_size`` epochs."""
    if step_size < 1:
        raise ConfigError(f"schedule.step_size must be >= 1, got {step_size}")
    return lrs.StepLR(optimizer, step_size=step_size, gamma=gamma)


#: name → builder ``(optimizer, epochs, **options)`` (None: a constant LR).
SCHEDULES: Mapping[str, Callable[..., lrs.LRScheduler] | None] = MappingProxyType(
    {"constant": None, "cosine": _cosine, "multistep": _multistep, "step": _step}
)


def step_schedule_factor(config: Config, steps_per_epoch: int) -> Callable[[int], float] | None:
    """The configured schedule as a closed-form LR factor of the optimizer step at B₀.

    Epoch counts become ⌈N/B₀⌉ steps each: a cosine over ``t_max`` epochs (down to the
    ``eta_min`` ratio), a multistep or step decay at the corresponding steps, and a linear
    warm-up (t + 1)/(w + 1) over the first w warm-up steps, multiplied in. None: constant.
    """
    s, lr = config.schedule, config.optimizer.lr
    options = dict(s.options)
    if s.name == "constant":
        shape = None
    elif s.name == "cosine":
        t_max = (options.get("t_max") or config.train.epochs) * steps_per_epoch
        floor = options.get("eta_min", 0.0) / lr

        def shape(t: int) -> float:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, t_max) / t_max))
    elif s.name == "multistep":
        marks = [m * steps_per_epoch for m in options.get("milestones", ())]
        gamma = options.get("gamma", 0.1)

        def shape(t: int) -> float:
            return gamma ** sum(t >= m for m in marks)
    elif s.name == "step":
        every = options.get("step_size", 30) * steps_per_epoch
        gamma = options.get("gamma", 0.1)

        def shape(t: int) -> float:
            return gamma ** (t // every)
    else:  # pragma: no cover - the config check names the valid schedules
        raise ConfigError(f"schedule {s.name!r} has no per-step form")
    warm = s.warmup_epochs * steps_per_epoch
    if shape is None and not warm:
        return None

    def factor(t: int) -> float:
        value = shape(t) if shape is not None else 1.0
        return value * ((t + 1) / (warm + 1) if t < warm else 1.0)

    return factor


def _seesaw_thresholds(
    config: Config, options: dict[str, Any], factor: Callable[[int], float] | None, per_epoch: int
) -> str:
    """Seesaw's schedule from the run's own per-step LR schedule (see adabatch.policies.seesaw)."""
    if factor is None:
        raise ConfigError(
            "the seesaw policy trades the LR schedule's cuts for batch growth: give a decaying "
            "schedule stepped per step (schedule.name=cosine|multistep|step, "
            "schedule.interval=step)"
        )
    curve = [factor(t) for t in range(config.train.epochs * per_epoch)]
    pairs = seesaw_thresholds(
        curve,
        float(options.get("alpha", 0.5)),
        config.policy.batch_size,
        options.get("max_batch_size"),
    )
    return " ".join(f"{a}:{b}" for a, b in pairs)


def build_lr_scheduler(config: Config, optimizer: torch.optim.Optimizer) -> lrs.LRScheduler | None:
    """The configured schedule, stepped per epoch (None for a constant LR without warm-up).

    A warm-up of w epochs multiplies the LR by (e + 1)/(w + 1) in epoch e < w (torch's
    ``LinearLR``), chained with the schedule: both factors apply at once.
    """
    s = config.schedule
    builder = SCHEDULES[s.name]
    parts = []
    if builder is not None:
        parts.append(builder(optimizer, config.train.epochs, **s.options))
    if s.warmup_epochs:  # built second: SequentialLR resets the LR when it is built
        w = s.warmup_epochs
        parts.append(lrs.LinearLR(optimizer, start_factor=1 / (w + 1), total_iters=w))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else lrs.ChainedScheduler(parts, optimizer)


# ---------------------------------------------------------------------- option lookups
def _lookup(kind: str, registry: Mapping[str, Any], name: str) -> Any:
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(registry)}")
    return registry[name]


def optimizer_options(name: str) -> dict[str, Option]:
    """``optimizer.options`` of optimizer ``name`` (its keyword parameters)."""
    return options_of(_lookup("optimizer", OPTIMIZERS, name), exclude=_OPTIMIZER_HIDDEN)


def schedule_options(name: str) -> dict[str, Option]:
    """``schedule.options`` of schedule ``name`` (its builder's keyword parameters)."""
    builder = _lookup("LR schedule", SCHEDULES, name)
    return {} if builder is None else options_of(builder, exclude=("optimizer", "epochs"))


def policy_options(name: str) -> dict[str, Option]:
    """``policy.options`` of policy ``name`` (its fields but B₀ and N, set elsewhere)."""
    return options_of(_lookup("policy", POLICIES, name), exclude=("batch_size", "dataset_size"))


def model_options(name: str) -> dict[str, Option]:
    """``model.options`` of model ``name`` (its builder's parameters but the derived sizes)."""
    builder = _lookup("model", MODELS, name)
    return options_of(builder, exclude=(*derived_inputs(name), "num_classes"))


#: section → its component's options, for `adabatch.experiments.config.apply_overrides`.
OPTION_LOOKUPS: Mapping[str, OptionsLookup] = MappingProxyType(
    {
        "data": data_options,
        "model": model_options,
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
    sized: Config  # the config with every size in sequences (`units.in_sequences`)
    data: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: AdaptiveLoader
    scheduler: BatchSizeScheduler
    device: torch.device
    local_sgd: LocalSGD | None = None  # train.parallel=local

    def trainer(
        self, callbacks: list[Callback] | None = None, checkpoint_path: Path | None = None
    ) -> Trainer:
        """The `Trainer` for these objects."""
        t = self.sized.train
        loss = {} if self.data.loss_fn is None else {"loss_fn": self.data.loss_fn}
        return Trainer(
            self.model,
            self.optimizer,
            self.scheduler,
            **loss,
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
            tokens_per_sample=self.data.tokens_per_sample,
            eval_every_samples=t.eval_every,
            count_tokens=self.data.count_tokens,
            local_sgd=self.local_sgd,
        )


def build(config: Config, env: DistributedEnv | None = None) -> Built:
    """Seed, then build data, model, optimizer, LR schedule, policy, loader and scheduler.

    The model is initialised right after ``torch.manual_seed(train.seed)``, so one seed gives
    one initialisation whatever the other settings — the same on every rank. Under a process
    group (``env``, from `adabatch.distributed.init_from_env`) the model goes to the rank's
    device and is wrapped as ``train.parallel`` says before the optimizer sees its
    parameters (FSDP2 replaces them by shards); the loader reads each rank's slice of the
    global batch.
    """
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    distributed = env is not None and env.distributed
    device = env.device if distributed else resolve_device(t.device)
    data = build_data(config.data, seed=t.seed)
    original, config = config, in_sequences(config, data.tokens_per_sample)
    torch.manual_seed(t.seed)
    try:
        model = build_model(
            config.model.name,
            in_shape=data.in_shape,
            num_classes=data.num_classes,
            **config.model.options,
        ).to(device)
        local = t.parallel == "local"
        if distributed and not local:  # local SGD: every worker steps its own copy
            model = wrap_model(model, t.parallel, env)
        optimizer = OPTIMIZERS[config.optimizer.name](
            model.parameters(), lr=config.optimizer.lr, **config.optimizer.options
        )
        options = dict(config.policy.options)
        # local SGD: the policy's sizes are per worker, the global batch W times larger
        workers = world_size() if local else 1
        steps_per_epoch = math.ceil(len(data.train) / (config.policy.batch_size * workers))
        step_factor = (
            step_schedule_factor(config, steps_per_epoch)
            if config.schedule.interval == "step"
            else None
        )
        if config.policy.name == "seesaw" and "thresholds" not in options:
            options["thresholds"] = _seesaw_thresholds(
                config, options, step_factor, steps_per_epoch
            )
        if options.get("unit") == "tokens" and data.tokens_per_sample is not None:
            # A schedule in tokens on text: the sequence length is the data's.
            given = options.setdefault("tokens_per_sample", data.tokens_per_sample)
            if given != data.tokens_per_sample:
                raise ConfigError(
                    f"policy.tokens_per_sample={given} but the {config.data.name} sequences "
                    f"have {data.tokens_per_sample} tokens; leave it out (it is filled in)"
                )
        try:
            policy = make_policy(
                config.policy.name,
                batch_size=config.policy.batch_size,
                dataset_size=len(data.train) // workers,
                **options,
            )
        except (TypeError, ValueError) as exc:
            if original.data.unit != "tokens":
                raise
            # the policy saw sequences: say so, the user wrote tokens
            t = data.tokens_per_sample
            raise ConfigError(
                f"{exc} (sizes in sequences of {t} tokens: data.unit=tokens)"
            ) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # the component's own check: a config error here
        raise ConfigError(str(exc)) from None
    if config.schedule.interval == "step":
        lr_scheduler = None if step_factor is None else lrs.LambdaLR(optimizer, step_factor)
        per_step = {"lr_scheduler_interval": "step", "lr_schedule_unit": "samples"}
    else:
        lr_scheduler = build_lr_scheduler(config, optimizer)
        per_step = {}
    loader = AdaptiveLoader(
        data.train,
        policy.batch_size * workers,
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
            beta2_rule=config.policy.beta2_rule,
            weight_decay_rule=config.policy.weight_decay_rule,
            local_steps=t.local_steps if local else None,
            **(per_step if lr_scheduler is not None else {}),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    local_sgd = None
    if local:
        try:
            outer = (
                OuterNesterov(lr=t.outer_lr, momentum=t.outer_momentum)
                if t.outer == "nesterov"
                else None
            )
        except ValueError as exc:
            raise ConfigError(f"train.outer_*: {exc}") from None
        local_sgd = LocalSGD(model, scheduler, outer=outer)
    return Built(original, config, data, model, optimizer, loader, scheduler, device, local_sgd)


def describe(built: Built) -> str:
    """One paragraph: data, model size, optimizer, policy, epochs."""
    c = built.config
    params = sum(p.numel() for p in built.model.parameters())
    batch = f"{c.policy.batch_size}"
    if c.data.unit == "tokens":
        batch += f" tokens ({built.sized.policy.batch_size} sequences)"
    return (
        f"{built.data.description}; model {c.model.name} ({params:,} parameters); "
        f"{c.optimizer.name} lr {c.optimizer.lr:g}; policy {c.policy.name} from batch "
        f"{batch} (LR rule {c.policy.lr_rule}); {c.train.epochs} epochs on "
        f"{built.device}"
        + (
            f" × {world_size()} ranks ({dist.get_backend()}, {c.train.parallel}"
            + (
                f", a round every {c.train.local_steps} steps, {c.train.outer})"
                if c.train.parallel == "local"
                else ")"
            )
            if is_distributed()
            else ""
        )
    )
