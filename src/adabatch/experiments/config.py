"""Typed experiment configurations, overridable with dotted keys (``policy.delta=0.1``).

A `Config` has six sections. Each names a component from a registry and carries its typed
fields; components with many options (the data set, the model, the optimizer, the LR
schedule, the policy) take them in an ``options`` mapping that is checked against the
component's own signature, so ``policy.delta=0.1`` is valid for DiveBatch and an error for
the norm test::

    data       name, root, train_size, test_size, augment, options
    model      name, options                       (adabatch.models.MODELS)
    optimizer  name, lr, options                   (sgd, adamw, adam, adagrad, adagrad-norm)
    schedule   name, warmup_epochs, options        (the LR schedule: constant, cosine, ...)
    policy     name, batch_size, lr_rule, options  (adabatch.policies.POLICIES)
    train      epochs, seed, device, ...

Overrides are ``section.field=value`` or ``section.option=value`` strings (the command line's
``--policy.delta=0.1``); a bare field name that exists in one section only (``epochs``,
``seed``) is accepted too. Values are parsed by the type of the field or of the option's
default: ``int``, ``float``, ``bool`` (true/false/yes/no/1/0), strings, tuples written
``1,2,3``, and ``none`` for optional values. Every error names the key, the value and what is
valid.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PolicyConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_keys",
    "join_override_values",
    "parse_overrides",
    "parse_value",
]


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what is valid."""


@dataclasses.dataclass
class DataConfig:
    """The data set (see `adabatch.experiments.data.DATA`).

    Attributes:
        name: a name in ``DATA`` (e.g. "synthetic-images", "mnist", "cifar10").
        root: where to look for downloaded files (None: the usual data roots).
        train_size: train on this many samples of a fixed random subset (None: all).
        test_size: evaluate on this many (None: all).
        augment: the papers' augmentation (random crop and flip) for image data.
        options: options of the data set's builder (e.g. ``num_train`` for synthetic data).
    """

    name: str = "synthetic-images"
    root: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    augment: bool = False
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
    lr: float = 0.1
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ScheduleConfig:
    """The LR schedule (on the unscaled LR; the batch-size coupling multiplies it).

    Attributes:
        name: "constant", "cosine" (``t_max`` epochs, default: all), "multistep"
            (``milestones``, ``gamma``) or "step" (``step_size``, ``gamma``).
        warmup_epochs: linear warm-up from ``lr / (warmup_epochs + 1)`` over this many epochs.
        options: the schedule's options.
    """

    name: str = "constant"
    warmup_epochs: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PolicyConfig:
    """The batch-size policy: a name in `adabatch.policies.POLICIES`, B₀, the LR rule, options.

    ``options`` are the policy's keywords (``delta``, ``every``, ``eta``, ``max_batch_size``,
    ...); ``dataset_size`` is filled in from the data.
    """

    name: str = "constant"
    batch_size: int = 32
    lr_rule: str = "none"
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
        checkpoint_every: also checkpoint every this many steps (0: at epoch ends only).
        batchnorm: per-sample statistics through BatchNorm: "error" or "approximate".
        num_workers: DataLoader workers (0: the in-memory fast path).
        tensorboard: also log to TensorBoard (when installed).
    """

    epochs: int = 10
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    max_physical_batch_size: int | None = None
    eval_batch_size: int = 1024
    log_every: int = 50
    checkpoint_every: int = 0
    batchnorm: str = "error"
    num_workers: int = 0
    tensorboard: bool = True


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
        sections: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            values = dict(data.get(name, {}))
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(
                    f"unknown field(s) {unknown} in section {name!r}; valid: {sorted(known)}"
                )
            sections[name] = section_cls(**values)
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; valid: {list(_SECTIONS)}")
        return cls(**sections)

    def copy(self) -> Config:
        """A deep copy."""
        return copy.deepcopy(self)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "policy": PolicyConfig,
    "train": TrainConfig,
}

# A function giving the valid options of a section's named component with their defaults
# (``...`` for a required one); registered by `adabatch.experiments.build`.
OptionsLookup = Callable[[str], Mapping[str, Any]]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------- value parsing
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null"}


def parse_value(text: str, kind: Any, *, key: str) -> Any:
    """Parse the command-line string ``text`` as type ``kind`` (a type or a type hint).

    ``kind=None`` (unknown type) parses a literal: none, a boolean word, an int, a float, a
    comma-separated tuple of those, else the string itself.
    """
    if kind is None:
        return _literal(text)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if text.strip().lower() in _NONE and type(None) in typing.get_args(kind):
            return None
        errors = []
        for arg in args:
            try:
                return parse_value(text, arg, key=key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: cannot parse {text!r}")
    if origin is tuple or kind is tuple:
        args = typing.get_args(kind)
        item = args[0] if args else None
        parts = [p for p in (s.strip() for s in text.strip("()[] ").split(",")) if p]
        return tuple(parse_value(p, item, key=key) for p in parts)
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if kind is str:
        return text
    if kind is Any:
        return _literal(text)
    raise ConfigError(f"{key}: values of type {kind} cannot be set from the command line")


def _literal(text: str) -> Any:
    word = text.strip()
    low = word.lower()
    if low in _NONE:
        return None
    if low in ("true", "false"):
        return low == "true"
    if "," in word:
        return tuple(_literal(p) for p in word.strip("()[] ").split(",") if p.strip())
    for convert in (int, float):
        try:
            return convert(word)
        except ValueError:
            pass
    return word


def _kind_of_default(default: Any) -> Any:
    """The type to parse an option with, from its default (None when unknown)."""
    if default is None or default is ...:
        return None
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, tuple):
        return tuple[_kind_of_default(default[0]), ...] if default else tuple
    return None


def _coerce_option(value: Any, default: Any, key: str) -> Any:
    """Check a typed (non-string) option value against its default's type."""
    if default is None or default is ... or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        return value
    if isinstance(value, bool) and isinstance(default, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, (int, float, str, tuple)) and not isinstance(value, type(default)):
        # int options (e.g. `every`) also accept a float default's int, not the reverse
        raise ConfigError(
            f"{key}: expected {type(default).__name__}, got {type(value).__name__} {value!r}"
        )
    return value


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
    keys = set()
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            keys.add(f.name)
            keys.add(f"{name}.{f.name}")
    return keys


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


def _resolve_key(key: str) -> tuple[str, str]:
    """``"policy.delta"`` → ("policy", "delta"); a unique bare field name → its section."""
    if "." in key:
        section, _, field = key.partition(".")
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown section {section!r} in {key!r}; valid sections: "
                f"{', '.join(_SECTIONS)}{_suggest(section, _SECTIONS)}"
            )
        if "." in field:
            raise ConfigError(f"{key!r}: keys have one dot (section.key)")
        return section, field
    owners = [
        name
        for name, cls in _SECTIONS.items()
        if key in {f.name for f in dataclasses.fields(cls)} and key != "options"
    ]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"{key!r} is ambiguous: write one of {[f'{o}.{key}' for o in owners]}")
    bare = {f.name: f"{n}.{f.name}" for n, c in _SECTIONS.items() for f in dataclasses.fields(c)}
    close = difflib.get_close_matches(key, list(bare), n=3)
    hint = f" (did you mean {', '.join(bare[c] for c in close)}?)" if close else ""
    raise ConfigError(f"unknown key {key!r}; write section.key (e.g. policy.delta){hint}")


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


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
        fields = {f.name: f for f in dataclasses.fields(target)}
        if field in fields and field != "options":
            hint = typing.get_type_hints(type(target))[field]
            if isinstance(value, str) and hint is not str:
                value = parse_value(value, hint, key=key)
            setattr(target, field, _check_field(value, hint, key))
            continue
        if "options" not in fields or field == "options":
            valid = [f for f in fields if f != "options"]
            raise ConfigError(
                f"unknown key {key!r}; section {section!r} has {', '.join(valid)}"
                f"{_suggest(field, valid)}"
            )
        valid_options = _options_of(section, target.name, lookups)
        if field not in valid_options:
            own = [f for f in fields if f != "options"]
            raise ConfigError(_unknown_option(section, target.name, field, valid_options, own))
        default = valid_options[field]
        if isinstance(value, str) and not isinstance(default, str):
            value = parse_value(value, _kind_of_default(default), key=key)
        target.options[field] = _coerce_option(value, default, key)
    validate(out, lookups)
    return out


def _options_of(section: str, name: str, lookups: Mapping[str, OptionsLookup]) -> Mapping[str, Any]:
    try:
        return lookups[section](name)
    except ConfigError:
        raise
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{section}.name: {exc}") from None


def _unknown_option(
    section: str, name: str, option: str, valid: Mapping[str, Any], fields: Sequence[str] = ()
) -> str:
    listed = ", ".join(valid) if valid else "(none)"
    own = f"; the section's own keys: {', '.join(fields)}" if fields else ""
    return (
        f"unknown option {section}.{option} for {section} {name!r}; valid options: {listed}"
        f"{own}{_suggest(option, [*fields, *valid])}"
    )


def _check_field(value: Any, hint: Any, key: str) -> Any:
    """Check a typed value against a dataclass field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        for arg in args:
            try:
                return _check_field(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {hint}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def validate(config: Config, lookups: Mapping[str, OptionsLookup]) -> None:
    """Check every section's component name and options (unknown ones, types, required)."""
    for section, lookup in lookups.items():
        target = getattr(config, section)
        valid = _options_of(section, target.name, {section: lookup})
        for option, value in list(target.options.items()):
            if option not in valid:
                raise ConfigError(_unknown_option(section, target.name, option, valid))
            target.options[option] = _coerce_option(value, valid[option], f"{section}.{option}")
        missing = sorted(k for k, v in valid.items() if v is ... and k not in target.options)
        if missing:
            raise ConfigError(
                f"{section} {target.name!r} needs option(s) {missing} "
                f"(e.g. --{section}.{missing[0]}=...)"
            )
    _check_positive(config)


def _check_positive(config: Config) -> None:
    checks = [
        ("train.epochs", config.train.epochs, 1),
        ("policy.batch_size", config.policy.batch_size, 1),
        ("train.eval_batch_size", config.train.eval_batch_size, 1),
        ("train.log_every", config.train.log_every, 1),
        ("train.checkpoint_every", config.train.checkpoint_every, 0),
        ("train.threads", config.train.threads, 0),
        ("train.num_workers", config.train.num_workers, 0),
        ("schedule.warmup_epochs", config.schedule.warmup_epochs, 0),
    ]
    for key, value, minimum in checks:
        if value < minimum:
            raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    for key, value in (
        ("data.train_size", config.data.train_size),
        ("data.test_size", config.data.test_size),
        ("train.max_physical_batch_size", config.train.max_physical_batch_size),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1 (or none), got {value}")
    if not (config.optimizer.lr > 0 and math.isfinite(config.optimizer.lr)):
        raise ConfigError(f"optimizer.lr must be a finite number > 0, got {config.optimizer.lr}")
    for key, value, choices in (
        ("train.batchnorm", config.train.batchnorm, ("error", "approximate")),
        ("policy.lr_rule", config.policy.lr_rule, ("none", "linear", "sqrt")),
    ):
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
