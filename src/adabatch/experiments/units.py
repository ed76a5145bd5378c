"""Batch sizes counted in tokens: ``data.unit=tokens`` turned into the sequences drawn.

Language-model schedules are written in tokens (Megatron-LM's ``"0:768 250B:1536"`` counts
its thresholds in tokens; a "batch of 1M tokens" is 1M / T sequences of T tokens). With
``data.unit=tokens`` every size of a configuration is in tokens:

- ``policy.batch_size`` and the policy's ``max_batch_size``, ``min_batch_size`` and
  ``multiple_of``;
- the batch sizes inside ``thresholds`` and ``rampup`` (whose amounts are then in tokens too,
  unless ``policy.options.unit`` says "samples");
- ``train.eval_every`` and ``train.max_physical_batch_size``.

The sampler draws whole sequences, so each size must be a whole number of sequences of the
data's T tokens; anything else is refused with the nearest valid sizes. ``eval_batch_size``
stays in sequences (it changes no result). Records count both: ``batch_size``/``samples`` in
sequences, ``batch_tokens``/``tokens`` in tokens, and the reports use tokens for text data.

Sequences here have a fixed length T (packed pre-training data): a batch of B sequences is
exactly B·T tokens. Sequences of variable length (``packing="documents"``) are refused: there
a size in tokens could only count capacity (sequences × T) while the records count real
tokens, and the two axes would disagree; size those runs in samples (their records still
count real tokens, and `adabatch.models.next_token_loss` weighs each sequence by its tokens).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from ..policies.ramps import parse_megatron_rampup, parse_thresholds
from .config import Config

__all__ = ["in_sequences", "tokens_to_sequences"]

#: Policy options that are batch sizes.
SIZE_OPTIONS = ("max_batch_size", "min_batch_size", "multiple_of")


def tokens_to_sequences(tokens: int, tokens_per_sample: int, what: str) -> int:
    """``tokens`` as a number of T-token sequences; a `ConfigError` unless it divides exactly.

    Example:
        >>> tokens_to_sequences(8192, 64, "policy.batch_size")
        128
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise ConfigError(f"{what} must be an integer number of tokens, got {tokens!r}")
    count, rest = divmod(tokens, tokens_per_sample)
    if rest or count < 1:
        below = max(count, 1) * tokens_per_sample
        above = (count + 1) * tokens_per_sample
        nearest = f"{below} or {above}" if count >= 1 else f"{tokens_per_sample}"
        raise ConfigError(
            f"{what}={tokens} tokens is not a whole number of sequences of "
            f"{tokens_per_sample} tokens (data.unit=tokens); use a multiple of "
            f"{tokens_per_sample}, e.g. {nearest}"
        )
    return count


def _thresholds(value: Any, t: int, key: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = parse_thresholds(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return tuple(
        (amount, tokens_to_sequences(size, t, f"{key} batch size at {amount}"))
        for amount, size in pairs
    )


def _rampup(value: Any, t: int, key: str) -> tuple[int, int, int]:
    try:
        start, increment, ramp = parse_megatron_rampup(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return (
        tokens_to_sequences(start, t, f"{key} start"),
        tokens_to_sequences(increment, t, f"{key} increment"),
        ramp,
    )


def in_sequences(config: Config, tokens_per_sample: int | None) -> Config:
    """``config`` with every size in sequences (itself when ``data.unit`` is "samples").

    Raises:
        ConfigError: ``data.unit`` is "tokens" but the data set is not text (no T), or a size
            is not a whole number of sequences.
    """
    if config.data.unit == "samples":  # the config checked it is "samples" or "tokens"
        return config
    if tokens_per_sample is None:
        raise ConfigError(
            f"data.unit=tokens needs a text data set (sequences of a known length); "
            f"{config.data.name!r} has none: use data.unit=samples"
        )
    if config.data.options.get("packing") == "documents":
        raise ConfigError(
            "data.unit=tokens needs sequences of one length; with data.packing=documents a "
            "size in tokens would count capacity (sequences × T) while the records count real "
            "tokens: use data.unit=samples (the records still count real tokens)"
        )
    t = tokens_per_sample
    options = dict(config.policy.options)
    for key in SIZE_OPTIONS:
        if options.get(key) is not None:
            options[key] = tokens_to_sequences(options[key], t, f"policy.{key}")
    if options.get("thresholds") is not None:
        options["thresholds"] = _thresholds(options["thresholds"], t, "policy.thresholds")
        options.setdefault("unit", "tokens")
    if options.get("rampup") is not None:
        options["rampup"] = _rampup(options["rampup"], t, "policy.rampup")
        options.setdefault("unit", "tokens")
        start = options["rampup"][0] * t
        if start != config.policy.batch_size:
            raise ConfigError(
                f"policy.rampup starts at {start} tokens but policy.batch_size is "
                f"{config.policy.batch_size} tokens: make them equal"
            )
    if options.get("unit") == "tokens":
        options.setdefault("tokens_per_sample", t)  # build checks a given one against T
    policy = dataclasses.replace(
        config.policy,
        batch_size=tokens_to_sequences(config.policy.batch_size, t, "policy.batch_size"),
        options=options,
    )
    train = config.train
    physical = train.max_physical_batch_size
    train = dataclasses.replace(
        train,
        eval_every=0
        if not train.eval_every
        else tokens_to_sequences(train.eval_every, t, "train.eval_every"),
        max_physical_batch_size=None
        if physical is None
        else tokens_to_sequences(physical, t, "train.max_physical_batch_size"),
    )
    return dataclasses.replace(config, policy=policy, train=train)
