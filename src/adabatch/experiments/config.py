"""Typed experiment configurations, overridable with dotted keys (``policy.delta=0.1``).

A `Config` has six sections. Each names a component from a registry and carries its typed
fields; components with many options (the data set, the model, the optimizer, the LR
schedule, the policy) take them in an ``options`` mapping checked against the component's own
declaration (`adabatch.options.options_of`: the policy's dataclass fields, the builder's or
the optimizer's signature), so ``policy.delta=0.1`` is valid for DiveBatch and an error for
the norm test::

    data       name, root, train_size, test_size, augment, options
    model      name, options                       (adabatch.models.MODELS)
    optimizer  name, lr, options                   (sgd, adamw, adam, adagrad, adagrad-norm)
    schedule   name, warmup_epochs, options        (the LR schedule: constant, cosine, ...)
    policy     name, batch_size, lr_rule, options  (adabatch.policies.POLICIES)
    train      epochs, seed, device, ...

Overrides are ``section.field=value`` or ``section.option=value`` strings (the command line's
``--policy.delta=0.1``); a bare field name that exists in one section only (``epochs``,
``seed``) is accepted too. Strings are parsed, and typed values checked, by the type of the
field or the option (`adabatch.options.parse` and `check`: one set of rules for both), with
``none`` for optional values and ``1,2,3`` for tuples. Every error names the key, the value and
what is valid.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._types import BATCHNORM_MODES
from .._validate import as_int, as_optional_int, check_choice, check_nonnegative, check_positive
from ..distributed.launch import BACKENDS
from ..distributed.parallel import PARALLEL_MODES
from ..errors import ConfigError
from ..hparam_coupling import BETA2_RULES, WEIGHT_DECAY_RULES
from ..lr_coupling import LR_RULES
from ..options import Option, check, parse
from ..policies.sample_schedule import UNITS as AMOUNT_UNITS

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "OptionsLookup",
    "PolicyConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_keys",
    "join_override_values",
    "parse_overrides",
]

#: A function giving the options of a section's named component (registered by
#: `adabatch.experiments.build`).
OptionsLookup = Callable[[str], Mapping[str, Option]]


# ---------------------------------------------------------------------- range checks
# A field's metadata may hold its range check, ``valid(value, key) -> value``: `validate` runs
# it with the library's own argument checks, so the messages are the components' messages.
def _min(minimum: int) -> dict[str, Any]:
    return {"valid": lambda value, key: as_int(value, key, minimum)}


def _min_or_none(minimum: int) -> dict[str, Any]:
    return {"valid": lambda value, key: as_optional_int(value, key, minimum)}


def _one_of(choices: Iterable[str]) -> dict[str, Any]:
    return {"valid": lambda value, key: check_choice(key, value, choices)}


_POSITIVE: dict[str, Any] = {"valid": lambda value, key: check_positive(key, value)}
_NONNEGATIVE: dict[str, Any] = {"valid": lambda value, key: check_nonnegative(key, value)}


def _momentum(value: Any, key: str) -> float:
    mu = check_nonnegative(key, value)
    if mu >= 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value!r}")
    return mu


# ---------------------------------------------------------------------- the sections
@dataclasses.dataclass
class DataConfig:
    """The data set (see `adabatch.experiments.bundles.DATA`).

    Attributes:
        name: a name in ``DATA`` (e.g. "synthetic-images", "mnist", "cifar10").
        root: where to look for downloaded files (None: the usual data roots).
        train_size: train on this many samples of a fixed random subset (None: all).
        test_size: evaluate on this many (None: all).
        augment: the papers' augmentation (random crop and flip) for image data.
        unit: "samples", or "tokens" for text: every batch size of the configuration (the
            policy's, its schedule's, ``train.eval_every``) counts tokens
            (`adabatch.experiments.units`).
        options: options of the data set's builder (e.g. ``num_train`` for synthetic data).
    """

    name: str = "synthetic-images"
    root: str | None = None
    train_size: int | None = dataclasses.field(default=None, metadata=_min_or_none(1))
    test_size: int | None = dataclasses.field(default=None, metadata=_min_or_none(1))
    augment: bool = False
    unit: str = dataclasses.field(default="samples", metadata=_one_of(AMOUNT_UNITS))
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelConfig:
    """The model: a name in `adabatch.models.MODELS` and its options (e.g. ``hidden``, ``norm``)."""

    name: str = "mlp"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimizerConfig:
    """The optimizer: a name in ``OPTIMIZERS``, the base learning rate, other keywords.

    ``options`` go to the optimizer's constructor (``momentum``, ``weight_decay``,
    ``nesterov``, ``betas``, ``mode`` for AdaGrad-Norm, ...).
    """

    name: str = "sgd"
    lr: float = dataclasses.field(default=0.1, metadata=_POSITIVE)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ScheduleConfig:
    """The LR schedule (on the unscaled LR; the batch-size coupling multiplies it).

    Attributes:
        name: "constant", "cosine" (``t_max`` epochs, default: all), "multistep"
            (``milestones``, ``gamma``) or "step" (``step_size``, ``gamma``).
        warmup_epochs: linear warm-up from ``lr / (warmup_epochs + 1)`` over this many epochs.
        interval: "epoch" (stepped at each epoch's end) or "step": the same schedule in closed
            form over optimizer steps at B₀ (an epoch is ⌈N/B₀⌉ of them), followed in samples
            (`BatchSizeScheduler`'s ``lr_schedule_unit="samples"``), so that its shape holds in
            samples however the batch grows — what Seesaw trades against.
        options: the schedule's options.
    """

    name: str = "constant"
    warmup_epochs: int = dataclasses.field(default=0, metadata=_min(0))
    interval: str = dataclasses.field(default="epoch", metadata=_one_of(("epoch", "step")))
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PolicyConfig:
    """The batch-size policy: a name in `adabatch.policies.POLICIES`, B₀, the LR rule, options.

    ``options`` are the policy's fields (``delta``, ``every``, ``eta``, ``max_batch_size``,
    ...); ``dataset_size`` is filled in from the data, and so is ``tokens_per_sample`` for a
    schedule in tokens on a text data set. ``lr_rule`` is one of `LR_RULES`; ``beta2_rule``
    ("fixed", "half-life") and ``weight_decay_rule`` ("fixed", "timescale") couple Adam's β₂
    and AdamW's weight decay to the batch (`adabatch.hparam_coupling`).
    """

    name: str = "constant"
    batch_size: int = dataclasses.field(default=32, metadata=_min(1))
    lr_rule: str = dataclasses.field(default="none", metadata=_one_of(LR_RULES))
    beta2_rule: str = dataclasses.field(default="fixed", metadata=_one_of(BETA2_RULES))
    weight_decay_rule: str = dataclasses.field(
        default="fixed", metadata=_one_of(WEIGHT_DECAY_RULES)
    )
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainConfig:
    """The run itself.

    Attributes:
        epochs: epochs to train.
        seed: seeds the model's initialisation, the data order and the augmentation.
        device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
        threads: torch CPU threads (0: torch's default).
        max_physical_batch_size: micro-batch above this (None: probe on out-of-memory).
        eval_batch_size: evaluation batch size.
        log_every: a step record every this many steps.
        eval_every: also evaluate every this many training samples (tokens with
            ``data.unit=tokens``): the "eval" records language models are compared on; 0:
            at epoch ends only.
        checkpoint_every: also checkpoint every this many steps (0: at epoch ends only).
        batchnorm: per-sample statistics through BatchNorm: "error" or "approximate".
        num_workers: DataLoader workers (0: the in-memory fast path).
        tensorboard: also log to TensorBoard (when installed).
        backend: under torchrun, the process group's backend: "auto" (NCCL on CUDA, gloo
            on the CPU), "gloo" or "nccl". Ignored by a single process.
        parallel: under torchrun, "ddp" (replicate the model), "fsdp" (shard it, FSDP2) or
            "local" (local SGD, `adabatch.local`: each worker steps alone, a round every
            ``local_steps``; the policy's batch sizes are then per worker).
        local_steps: H, the local steps between two rounds of ``parallel=local``.
        outer: what a local-SGD round does: "average" the parameters, or "nesterov": a
            DiLoCo outer step (``outer_lr``, ``outer_momentum``) on the mean displacement.
        dist_timeout: seconds a collective waits for the other ranks before the run fails.
    """

    epochs: int = dataclasses.field(default=10, metadata=_min(1))
    seed: int = 0
    device: str = "cpu"
    threads: int = dataclasses.field(default=0, metadata=_min(0))
    max_physical_batch_size: int | None = dataclasses.field(default=None, metadata=_min_or_none(1))
    eval_batch_size: int = dataclasses.field(default=1024, metadata=_min(1))
    log_every: int = dataclasses.field(default=50, metadata=_min(1))
    eval_every: int = dataclasses.field(default=0, metadata=_min(0))
    checkpoint_every: int = dataclasses.field(default=0, metadata=_min(0))
    batchnorm: str = dataclasses.field(default="error", metadata=_one_of(BATCHNORM_MODES))
    num_workers: int = dataclasses.field(default=0, metadata=_min(0))
    tensorboard: bool = True
    backend: str = dataclasses.field(default="auto", metadata=_one_of(BACKENDS))
    parallel: str = dataclasses.field(default="ddp", metadata=_one_of((*PARALLEL_MODES, "local")))
    local_steps: int = dataclasses.field(default=8, metadata=_min(1))
    outer: str = dataclasses.field(default="average", metadata=_one_of(("average", "nesterov")))
    outer_lr: float = dataclasses.field(default=0.7, metadata=_POSITIVE)
    outer_momentum: float = dataclasses.field(default=0.9, metadata={"valid": _momentum})
    dist_timeout: float = dataclasses.field(default=600.0, metadata=_POSITIVE)


@dataclasses.dataclass
class Config:
    """A whole experiment (see the module docstring)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples become lists), for ``config.json``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Rebuild from `to_dict` output (unknown sections or fields raise `ConfigError`)."""
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; valid: {list(SECTIONS)}")
        sections: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            values = dict(data.get(name, {}))
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(
                    f"unknown field(s) {unknown} in section {name!r}; valid: {sorted(known)}"
                )
            sections[name] = section_cls(**values)
        return cls(**sections)

    def copy(self) -> Config:
        """A deep copy."""
        return copy.deepcopy(self)


#: The sections of a `Config`, in order: name → section class.
SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


# ---------------------------------------------------------------------- overrides
def parse_overrides(items: Iterable[str]) -> list[tuple[str, str]]:
    """``["--policy.delta=0.1", "--epochs", "5"]`` → ``[("policy.delta", "0.1"), ("epochs", "5")]``.

    Each override is ``--key=value`` or ``--key value`` (the leading ``--`` is optional).
    """
    pairs = []
    items = list(items)
    i = 0
    while i < len(items):
        item = items[i]
        text = item[2:] if item.startswith("--") else item
        key, sep, value = text.partition("=")
        if not sep and i + 1 < len(items) and not items[i + 1].startswith("--"):
            value, sep = items[i + 1], "="
            i += 1
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} has no value; write --section.key=value (e.g. "
                "--policy.delta=0.1, --epochs=5)"
            )
        pairs.append((key.strip(), value))
        i += 1
    return pairs


def config_keys() -> set[str]:
    """Every ``section.field`` and every bare field name (what an override may start with)."""
    return {k for name in SECTIONS for f in _fields(name) for k in (f, f"{name}.{f}")}


def join_override_values(argv: Iterable[str]) -> list[str]:
    """Rewrite the space form ``--policy.delta 0.1`` as ``--policy.delta=0.1``.

    A token is an override when it is ``--`` followed by a dotted key or a bare configuration
    field name; the command line then parses the same wherever the overrides stand.
    """
    argv = list(argv)
    bare = {k for k in config_keys() if "." not in k} - {"name", "options"}
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        key = token[2:]
        is_override = token.startswith("--") and "=" not in token and ("." in key or key in bare)
        if is_override and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _resolve_key(key: str) -> tuple[str, str]:
    """``"policy.delta"`` → ("policy", "delta"); a unique bare field name → its section."""
    if "." in key:
        section, _, field = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown section {section!r} in {key!r}; valid sections: "
                f"{', '.join(SECTIONS)}{_suggest(section, SECTIONS)}"
            )
        if "." in field:
            raise ConfigError(f"{key!r}: keys have one dot (section.key)")
        return section, field
    owners = [name for name in SECTIONS if key in _fields(name) and key != "options"]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"{key!r} is ambiguous: write one of {[f'{o}.{key}' for o in owners]}")
    bare = {f: f"{name}.{f}" for name in SECTIONS for f in _fields(name)}
    close = difflib.get_close_matches(key, list(bare), n=3)
    hint = f" (did you mean {', '.join(bare[c] for c in close)}?)" if close else ""
    raise ConfigError(f"unknown key {key!r}; write section.key (e.g. policy.delta){hint}")


def _value(value: Any, hint: Any, key: str) -> Any:
    """A string parsed by ``hint`` (unless the type is str), any other value checked."""
    if isinstance(value, str) and hint is not str:
        return parse(value, hint, key=key)
    return check(value, hint, key=key)


def apply_overrides(
    config: Config,
    overrides: Iterable[tuple[str, Any]] | Mapping[str, Any],
    lookups: Mapping[str, OptionsLookup],
) -> Config:
    """A copy of ``config`` with the overrides applied and every option validated.

    Values may be strings (parsed by type) or typed Python values (checked). Names
    (``section.name``) are applied first, so that options are checked against the new
    component. ``lookups`` maps a section to the function listing its component's options.
    """
    pairs = list(overrides.items() if isinstance(overrides, Mapping) else overrides)
    out = config.copy()
    resolved = [(*_resolve_key(k), k, v) for k, v in pairs]
    resolved.sort(key=lambda item: item[1] != "name")  # stable: names first
    for section, field, key, value in resolved:
        target = getattr(out, section)
        fields = _fields(section)
        own = [f for f in fields if f != "options"]
        if field in own:
            hint = typing.get_type_hints(type(target))[field]
            setattr(target, field, _value(value, hint, key))
            continue
        if "options" not in fields or field == "options":
            raise ConfigError(
                f"unknown key {key!r}; section {section!r} has {', '.join(own)}"
                f"{_suggest(field, own)}"
            )
        options = _options_of(section, target.name, lookups)
        if field not in options:
            raise ConfigError(_unknown_option(section, target.name, field, options, own))
        target.options[field] = _value(value, options[field].hint, key)
    validate(out, lookups)
    return out


def _options_of(
    section: str, name: str, lookups: Mapping[str, OptionsLookup]
) -> Mapping[str, Option]:
    try:
        return lookups[section](name)
    except ConfigError:
        raise
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{section}.name: {exc}") from None


def _unknown_option(
    section: str, name: str, option: str, valid: Mapping[str, Any], fields: Iterable[str] = ()
) -> str:
    fields = list(fields)
    listed = ", ".join(valid) if valid else "(none)"
    own = f"; the section's own keys: {', '.join(fields)}" if fields else ""
    return (
        f"unknown option {section}.{option} for {section} {name!r}; valid options: {listed}"
        f"{own}{_suggest(option, [*fields, *valid])}"
    )


def validate(config: Config, lookups: Mapping[str, OptionsLookup]) -> None:
    """Check every field's range, and every section's component name and options."""
    for section in SECTIONS:
        target = getattr(config, section)
        for f in dataclasses.fields(target):
            if (valid := f.metadata.get("valid")) is not None:
                try:
                    setattr(target, f.name, valid(getattr(target, f.name), f"{section}.{f.name}"))
                except (TypeError, ValueError) as exc:
                    raise ConfigError(str(exc)) from None
    for section, lookup in lookups.items():
        target = getattr(config, section)
        options = _options_of(section, target.name, {section: lookup})
        for name, value in list(target.options.items()):
            if name not in options:
                raise ConfigError(_unknown_option(section, target.name, name, options))
            target.options[name] = check(value, options[name].hint, key=f"{section}.{name}")
        missing = sorted(k for k, o in options.items() if o.required and k not in target.options)
        if missing:
            raise ConfigError(
                f"{section} {target.name!r} needs option(s) {missing} "
                f"(e.g. --{section}.{missing[0]}=...)"
            )
