"""The experiments' data sets by name, ready to train on: splits, shapes, transforms.

=================  ==============================================  =====================
name               what                                            needs
=================  ==============================================  =====================
synthetic-images   smoothed-noise images labelled by a random      nothing (generated)
                   CNN teacher (`adabatch.datasets.synthetic_images`)
digits             scikit-learn's bundled 8×8 digits (1797)         scikit-learn
mnist              MNIST, 60000 + 10000 28×28 grey                 ``adabatch data fetch mnist``
fashion-mnist      Fashion-MNIST, same shapes                      ``... fetch fashion-mnist``
cifar10/cifar100   32×32 colour, 50000 + 10000                     ``... fetch cifar10``
tiny-imagenet      64×64 colour, 200 classes, 100000 + 10000       ``... fetch tiny-imagenet``
fortunes           fortune-mod's English quotations as byte         ``... fetch fortunes``
                   sequences of ``seq_len`` (next-token targets)
=================  ==============================================  =====================

A text data set is a language-modelling task: its bundle's ``loss_fn`` is the mean
next-token cross-entropy (`adabatch.models.next_token_loss`) and ``tokens_per_sample`` its
sequence length, so that records can count tokens.

Inputs are standardised once in memory (per-channel mean and std of the training split, the
papers' constants where they exist), so training batches need no per-batch work unless
``augment`` is on (random crop with padding and horizontal flip, drawn from a generator whose
state is checkpointed). Tiny-ImageNet stays uint8 in memory (1.2 GB instead of 4.9) and is
converted per batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from ..data.transforms import CHANNEL_STATS, Augment, normalize
from ..datasets import (
    ArrayDataset,
    load_cifar10,
    load_cifar100,
    load_mnist,
    load_text,
    load_tiny_imagenet,
    synthetic_images,
)
from ..datasets.text import count_tokens
from ..errors import ConfigError
from ..models import next_token_loss
from ..options import Option, options_of
from .config import DataConfig

__all__ = ["DATA", "DataBundle", "build_data", "data_options"]

# Subsets (train_size / test_size) are drawn with this seed, not the run's: every seed of a
# comparison trains on the same samples.
_SUBSET_SEED = 20261121


@dataclasses.dataclass
class DataBundle:
    """Train and test sets with what the model and the loop need to know about them.

    Attributes:
        train, test: map-style data sets of (input, target) with a ``gather`` fast path.
        num_classes: K.
        in_shape: one input's shape, e.g. ``(1, 28, 28)``.
        train_transform: per-batch transform of training batches (augmentation), or None.
        eval_transform: per-batch transform of evaluation batches, or None.
        generators: random generators the transforms draw from (checkpointed).
        description: one line for logs.
        loss_fn: the task's loss (None: cross-entropy over classes).
        tokens_per_sample: tokens per sample of a text data set (None otherwise); with
            ``packing="documents"`` the capacity T of a padded sample.
        count_tokens: a batch's real target tokens, for text of variable length (None:
            every sample has ``tokens_per_sample``).
    """

    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    in_shape: tuple[int, ...]
    train_transform: Callable[[Any], Any] | None = None
    eval_transform: Callable[[Any], Any] | None = None
    generators: tuple[torch.Generator, ...] = ()
    description: str = ""
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    tokens_per_sample: int | None = None
    count_tokens: Callable[[Any], int | Tensor] | None = None


def _with_inputs(ds: ArrayDataset, inputs: Tensor) -> ArrayDataset:
    return ArrayDataset(inputs, ds.targets, num_classes=ds.num_classes, name=ds.name)


def _synthetic_images(
    *,
    num_train: int = 20000,
    num_test: int = 5000,
    image_size: int = 16,
    channels: int = 1,
    num_classes: int = 10,
    smoothing: float = 1.5,
    data_seed: int = 0,
    root: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset, tuple[Any, Any] | None]:
    common = {
        "num_classes": num_classes,
        "image_size": image_size,
        "channels": channels,
        "teacher": data_seed,
        "smoothing": smoothing,
    }
    train = synthetic_images(num_train, seed=2 * data_seed + 1, **common)
    test = synthetic_images(num_test, seed=2 * data_seed + 2, **common)
    return train, test, None  # already standardised


def _digits(*, root: str | None = None) -> tuple[ArrayDataset, ArrayDataset, tuple[Any, Any]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ConfigError(
            'the digits data set comes with scikit-learn: pip install "adabatch[data]"'
        ) from exc
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SUBSET_SEED))
    cut = len(y) * 4 // 5  # a fixed 80/20 split: 1437 train, 360 test
    train = ArrayDataset(x[order[:cut]], y[order[:cut]], num_classes=10, name="digits-train")
    test = ArrayDataset(x[order[cut:]], y[order[cut:]], num_classes=10, name="digits-test")
    mean, std = train.inputs.mean().item(), train.inputs.std().item()
    return train, test, ((mean,), (std,))


def _mnist_like(kind: str) -> Callable[..., Any]:
    def load(*, root: str | None = None) -> tuple[ArrayDataset, ArrayDataset, Any]:
        train = load_mnist(root, train=True, kind=kind)  # type: ignore[arg-type]
        test = load_mnist(root, train=False, kind=kind)  # type: ignore[arg-type]
        return train, test, CHANNEL_STATS[kind]

    return load


def _cifar(kind: str) -> Callable[..., Any]:
    loader = load_cifar10 if kind == "cifar10" else load_cifar100

    def load(*, root: str | None = None) -> tuple[ArrayDataset, ArrayDataset, Any]:
        return loader(root, train=True), loader(root, train=False), CHANNEL_STATS[kind]

    return load


def _tiny_imagenet(*, root: str | None = None) -> tuple[ArrayDataset, ArrayDataset, Any]:
    train = load_tiny_imagenet(root, split="train")
    test = load_tiny_imagenet(root, split="val")
    return train, test, ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821))


def _fortunes(
    *,
    seq_len: int = 64,
    held_out: float = 0.1,
    packing: str = "windows",
    root: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset, None]:
    # packing: "windows" (every sample seq_len tokens) or "documents" (a quotation each)
    both = {"seq_len": seq_len, "held_out": held_out, "packing": packing}
    train = load_text("fortunes", root, split="train", **both)  # type: ignore[arg-type]
    test = load_text("fortunes", root, split="test", **both)  # type: ignore[arg-type]
    return train, test, None


#: name → builder returning (train, test, channel stats or None); keyword options are the
#: data set's ``data.options``.
DATA: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "synthetic-images": _synthetic_images,
        "digits": _digits,
        "mnist": _mnist_like("mnist"),
        "fashion-mnist": _mnist_like("fashion-mnist"),
        "cifar10": _cifar("cifar10"),
        "cifar100": _cifar("cifar100"),
        "tiny-imagenet": _tiny_imagenet,
        "fortunes": _fortunes,
    }
)


def data_options(name: str) -> dict[str, Option]:
    """The ``data.options`` of data set ``name``: its builder's keyword parameters but root."""
    if name not in DATA:
        raise ConfigError(f"unknown data set {name!r}; valid: {', '.join(DATA)}")
    return options_of(DATA[name], exclude=("root",))


def _subset(ds: ArrayDataset, size: int | None, key: str) -> ArrayDataset:
    if size is None or size >= len(ds):
        if size is not None and size > len(ds):
            raise ConfigError(f"{key}={size} exceeds the {len(ds)} samples of {ds.name or 'it'}")
        return ds
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(_SUBSET_SEED))
    keep = order[:size].sort().values
    return ArrayDataset(
        ds.inputs.index_select(0, keep),
        ds.targets.index_select(0, keep),
        num_classes=ds.num_classes,
        name=ds.name,
    )


def build_data(config: DataConfig, *, seed: int) -> DataBundle:
    """Load (or generate) the data set of ``config``, subset, standardise, add augmentation.

    Raises `DatasetNotFoundError` (naming ``adabatch data fetch NAME``) for missing files.
    """
    options = data_options(config.name)
    unknown = sorted(set(config.options) - set(options))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for data set {config.name!r}; valid: "
            f"{', '.join(options) or '(none)'}"
        )
    train, test, stats = DATA[config.name](root=config.root, **config.options)
    tokens_per_sample = getattr(train, "tokens_per_sample", None)
    train = _subset(train, config.train_size, "data.train_size")
    test = _subset(test, config.test_size, "data.test_size")
    uint8 = train.inputs.dtype == torch.uint8
    eval_transform: Callable[[Any], Any] | None = None
    if stats is not None and not uint8:
        mean, std = stats
        train = _with_inputs(train, normalize(train.inputs.float(), mean, std))
        test = _with_inputs(test, normalize(test.inputs.float(), mean, std))
        stats = None  # done
    elif uint8:
        mean, std = stats if stats is not None else ((0.5,), (0.5,))
        to_float = Augment(mean=tuple(mean), std=tuple(std))

        def eval_transform(batch: Any) -> Any:
            x, y = batch
            return to_float(x.float() / 255.0), y

    in_shape = tuple(train.inputs.shape[1:])
    generators: tuple[torch.Generator, ...] = ()
    train_transform = eval_transform
    if config.augment:
        if len(in_shape) != 3:
            raise ConfigError(
                f"data.augment needs images (C × H × W), {config.name} has {in_shape}"
            )
        generator = torch.Generator().manual_seed(seed + 7919)
        size = in_shape[1]
        crop = Augment(crop_size=size, padding=size // 8, flip_p=0.5)
        before = eval_transform

        def train_transform(batch: Any) -> Any:
            if before is not None:
                batch = before(batch)
            x, y = batch
            # Padding of the standardised image is 0, the mean pixel: no black border bias.
            return crop(x, generator=generator), y

        generators = (generator,)
    num_classes = train.num_classes or int(train.targets.max()) + 1
    return DataBundle(
        train=train,
        test=test,
        num_classes=int(num_classes),
        in_shape=in_shape,
        train_transform=train_transform,
        eval_transform=eval_transform,
        generators=generators,
        description=f"{config.name}: {len(train)} train, {len(test)} test, shape {in_shape}",
        loss_fn=None if tokens_per_sample is None else next_token_loss,
        tokens_per_sample=tokens_per_sample,
        count_tokens=count_tokens if config.options.get("packing") == "documents" else None,
    )
