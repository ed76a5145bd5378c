"""The registry of models: name → builder, and building one for a given input shape.

==============  ==========================================  ==============================
name            model                                       in_shape (one sample)
==============  ==========================================  ==============================
logistic        `LogisticRegression`                        any (flattened)
mlp             `MLP`                                       any (flattened)
small-cnn       `SmallCNN`                                  (channels, size, size)
resnet20        `ResNetCIFAR` of depth 20                   (channels, height, width)
resnet18        `ResNet18`, CIFAR stem                      (channels, height, width)
resnet18-tiny   `ResNet18`, ImageNet stem                   (channels, height, width)
transformer     `TransformerClassifier`                     (seq_len,) integer tokens
gpt             `GPT`, causal, next-token logits            (seq_len,) integer tokens
==============  ==========================================  ==============================

`build_model` derives the sizes a model needs from ``in_shape`` (``in_features``,
``in_channels``, ``image_size``, ``seq_len``); everything else is an option with a default,
listed by `model_options`.

Example::

    model = build_model("small-cnn", in_shape=(1, 28, 28), num_classes=10, norm="group")
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from torch import nn

from .._validate import as_int
from ..options import options_of
from .cnn import SmallCNN
from .gpt import GPT
from .logistic import LogisticRegression
from .mlp import MLP
from .resnet import ResNetCIFAR
from .resnet18 import resnet18_cifar, resnet18_tiny
from .transformer import TransformerClassifier

__all__ = ["MODELS", "build_model", "derived_inputs", "model_options"]


def _gpt(
    seq_len: int = 64,
    num_classes: int = 256,
    dim: int = 128,
    heads: int = 4,
    ff: int = 512,
    layers: int = 2,
) -> GPT:
    """`GPT` whose output classes are its vocabulary (the next token's 256 bytes by default)."""
    return GPT(vocab_size=num_classes, seq_len=seq_len, dim=dim, heads=heads, ff=ff, layers=layers)


def _resnet20(num_classes: int = 10, norm: str = "group", in_channels: int = 3) -> ResNetCIFAR:
    """ResNet-20 for 32×32 images (0.27 M parameters), with a choice of input channels."""
    # `models.resnet.resnet20` has no in_channels; the registry needs it for grey-scale inputs.
    return ResNetCIFAR(20, num_classes=num_classes, norm=norm, in_channels=in_channels)


MODELS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        "logistic": LogisticRegression,
        "mlp": MLP,
        "small-cnn": SmallCNN,
        "resnet20": _resnet20,
        "resnet18": resnet18_cifar,
        "resnet18-tiny": resnet18_tiny,
        "transformer": TransformerClassifier,
        "gpt": _gpt,
    }
)


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """How one model's size arguments follow from ``in_shape``."""

    keys: tuple[str, ...]  # the builder arguments derived from in_shape
    expected: str  # the shape the model takes, for error messages
    derive: Callable[[tuple[int, ...]], dict[str, int] | None]  # None: shape not accepted


def _image(shape: tuple[int, ...]) -> dict[str, int] | None:
    return {"in_channels": shape[0]} if len(shape) == 3 else None


def _square_image(shape: tuple[int, ...]) -> dict[str, int] | None:
    if len(shape) != 3 or shape[1] != shape[2]:
        return None
    return {"in_channels": shape[0], "image_size": shape[1]}


def _tokens(shape: tuple[int, ...]) -> dict[str, int] | None:
    return {"seq_len": shape[0]} if len(shape) == 1 else None


_FLAT = _Inputs(("in_features",), "any shape", lambda s: {"in_features": math.prod(s)})
_IMAGE = _Inputs(("in_channels",), "(channels, height, width)", _image)
_INPUTS: Mapping[str, _Inputs] = MappingProxyType(
    {
        "logistic": _FLAT,
        "mlp": _FLAT,
        "small-cnn": _Inputs(
            ("in_channels", "image_size"), "(channels, size, size), square images", _square_image
        ),
        "resnet20": _IMAGE,
        "resnet18": _IMAGE,
        "resnet18-tiny": _IMAGE,
        # Tokens are integer ids, so the vocabulary size cannot come from the shape: an option.
        "transformer": _Inputs(("seq_len",), "(seq_len,) of token ids", _tokens),
        "gpt": _Inputs(("seq_len",), "(seq_len,) of token ids", _tokens),
    }
)


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def derived_inputs(name: str) -> tuple[str, ...]:
    """The builder arguments of model ``name`` that `build_model` derives from ``in_shape``."""
    _lookup(name)
    return _INPUTS[name].keys


def model_options(name: str) -> dict[str, Any]:
    """The keyword options of model ``name`` with their defaults, in signature order.

    The sizes that `build_model` derives from ``in_shape``, and ``num_classes``, are not
    options (`derived_inputs`). Defaults are values of the options' types (a tuple for widths,
    a str for ``norm``); `adabatch.options.options_of` gives the types too.

    Raises:
        ValueError: ``name`` is not in `MODELS`.

    Example:
        >>> model_options("mlp")
        {'hidden': (512,)}
    """
    options = options_of(_lookup(name), exclude=(*derived_inputs(name), "num_classes"))
    return {k: o.default for k, o in options.items()}


def _check_shape(in_shape: Any) -> tuple[int, ...]:
    if isinstance(in_shape, (str, bytes)) or not isinstance(in_shape, Sequence) or not in_shape:
        raise ValueError(f"in_shape must be a non-empty tuple of sizes, got {in_shape!r}")
    return tuple(as_int(size, f"in_shape[{i}]", minimum=1) for i, size in enumerate(in_shape))


def build_model(
    name: str, /, *, in_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build model ``name`` for samples of shape ``in_shape`` and ``num_classes`` outputs.

    Args:
        name: a name in `MODELS`.
        in_shape: one sample's shape, without the batch dimension: ``(1, 28, 28)`` for MNIST,
            ``(64,)`` for flat features or for a sequence of 64 tokens.
        num_classes: output classes.
        **options: the model's options (see `model_options`), e.g. ``norm="batch"``.

    Returns:
        The model, freshly initialised.

    Raises:
        ValueError: ``name`` is unknown, an option is unknown (or is derived from
            ``in_shape``), or the model cannot take inputs of shape ``in_shape``.

    Example:
        >>> build_model("logistic", in_shape=(1, 28, 28), num_classes=10)
        LogisticRegression(
          (linear): Linear(in_features=784, out_features=10, bias=True)
        )
    """
    builder = _lookup(name)
    inputs = _INPUTS[name]
    valid = model_options(name)
    derived = sorted(set(options) & set(inputs.keys))
    if derived:
        raise ValueError(
            f"option(s) {derived} of model {name!r} are derived from in_shape; do not pass them"
        )
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    shape = _check_shape(in_shape)
    sizes = inputs.derive(shape)
    if sizes is None:
        raise ValueError(f"model {name!r} expects in_shape {inputs.expected}, got {shape}")
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    return builder(**sizes, num_classes=num_classes, **options)
