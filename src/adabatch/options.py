"""The options of a component, with their types: one reading for listing, checking and parsing.

A configurable component — a batch-size policy (a frozen dataclass), a model builder, a torch
optimizer, a data set builder, an LR schedule builder — declares its options once: as dataclass
fields or as keyword parameters, each with a type annotation and a default. `options_of` reads
them; `check` validates a Python value against an option's type and `parse` turns a
command-line string into one. `adabatch list`, the experiment configuration and the CLI's
``--section.key=value`` all go through these three functions, so they cannot disagree.

Types understood: ``bool``, ``int``, ``float``, ``str``, ``None`` in unions (``int | None``),
unions tried in order (``float | str``), ``Literal[...]``, tuples (``tuple[int, ...]`` and fixed
``tuple[float, float]``) and ``Sequence[X]`` (taken as a tuple), and any class (checked with
``isinstance``; not settable from the command line). An option without an annotation takes
the type of its default. Conventions: an ``int`` option refuses floats (``2.0`` too) and
booleans; a ``float`` option takes ints; a ``bool`` option takes only booleans (or, from the
command line, true/false/yes/no/on/off/1/0).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ConfigError

__all__ = ["REQUIRED", "Option", "check", "options_of", "parse"]

#: The default of an option that has none (it must be given).
REQUIRED: Any = ...

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null"}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its name, its default (`REQUIRED` if none) and its type hint (or None)."""

    name: str
    default: Any
    hint: Any

    @property
    def required(self) -> bool:
        """Whether the option has no default."""
        return self.default is REQUIRED


def options_of(target: Any, *, exclude: Iterable[str] = ()) -> dict[str, Option]:
    """The options of a dataclass (its fields) or a callable (its keyword parameters).

    ``self``, ``*args``/``**kwargs`` and the names in ``exclude`` are left out. A default is
    normalised to its option's type (torch declares ``momentum: float = 0``: listed as 0.0).
    """
    skip = set(exclude)
    out: dict[str, Option] = {}
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        for f in dataclasses.fields(target):
            if f.name in skip or not f.init:
                continue
            default = REQUIRED if f.default is dataclasses.MISSING else f.default
            out[f.name] = _option(f.name, default, hints.get(f.name))
        return out
    for p in inspect.signature(target, eval_str=True).parameters.values():
        if p.name in skip or p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        hint = None if p.annotation is p.empty else p.annotation
        out[p.name] = _option(p.name, default, hint)
    return out


def _option(name: str, default: Any, hint: Any) -> Option:
    if hint is None and default is not REQUIRED and default is not None:
        hint = _hint_of_value(default)
    if default is not REQUIRED and default is not None and hint is not None:
        # A default of another type than declared is listed as it is.
        with contextlib.suppress(ConfigError):
            default = check(default, hint, key=name)
    return Option(name, default, hint)


def _hint_of_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple[_hint_of_value(value[0]), ...] if value else tuple
    return type(value) if isinstance(value, (bool, int, float, str)) else None


def _origin_args(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    origin = typing.get_origin(hint)
    if origin is types.UnionType:
        origin = typing.Union
    return origin, typing.get_args(hint)


def _is_sequence(origin: Any, hint: Any) -> bool:
    return origin in (tuple, collections.abc.Sequence) or hint is tuple


def _items(hint: Any, args: tuple[Any, ...], n: int) -> list[Any]:
    """The hint of each of ``n`` items of a tuple or sequence hint."""
    if (len(args) == 2 and args[1] is Ellipsis) or len(args) == 1:
        return [args[0]] * n
    return list(args) if args else [None] * n


# ---------------------------------------------------------------------- typed values
def check(value: Any, hint: Any, *, key: str) -> Any:
    """``value`` checked against ``hint`` (and converted: int → float, list → tuple)."""
    if hint is None or hint is Any:
        return value
    origin, args = _origin_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check(value, arg, key=key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(repr, args))
            raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
        return value
    if _is_sequence(origin, hint):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a sequence, got {value!r}")
        items = _items(hint, args, len(value))
        if len(items) != len(value):
            raise ConfigError(f"{key}: expected {len(items)} values, got {len(value)}")
        return tuple(check(v, h, key=key) for v, h in zip(value, items, strict=True))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {_describe(hint)}, got {value!r}")
    return value


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


# ---------------------------------------------------------------------- command-line strings
def parse(text: str, hint: Any, *, key: str) -> Any:
    """The command-line string ``text`` as a value of ``hint``.

    ``hint=None`` (unknown type) parses a literal: none, a boolean word, an int, a float, a
    comma-separated tuple of those, else the string itself.
    """
    if hint is None or hint is Any:
        return _literal(text)
    origin, args = _origin_args(hint)
    if origin is typing.Union:
        if text.strip().lower() in _NONE and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse(text, arg, key=key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: cannot parse {text!r}")
    if origin is typing.Literal:
        for arg in args:
            if str(arg) == text.strip():
                return arg
        return check(text, hint, key=key)  # the error lists the choices
    if _is_sequence(origin, hint):
        parts = [p for p in (s.strip() for s in text.strip("()[] ").split(",")) if p]
        items = _items(hint, args, len(parts))
        if len(items) != len(parts):
            raise ConfigError(f"{key}: expected {len(items)} values, got {text!r}")
        return tuple(parse(p, h, key=key) for p, h in zip(parts, items, strict=True))
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            what = "an integer" if hint is int else "a number"
            raise ConfigError(f"{key}: expected {what}, got {text!r}") from None
    if hint is str:
        return text
    raise ConfigError(f"{key}: values of type {hint} cannot be set from the command line")


def _literal(text: str) -> Any:
    word = text.strip()
    low = word.lower()
    if low in _NONE:
        return None
    if low in ("true", "false"):
        return low == "true"
    if "," in word:
        return tuple(_literal(p) for p in word.strip("()[] ").split(",") if p.strip())
    convert: Callable[[str], Any]
    for convert in (int, float):
        try:
            return convert(word)
        except ValueError:
            pass
    return word
