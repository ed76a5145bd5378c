"""Image augmentations as plain tensor operations (no torchvision).

Every function takes one image ``C × H × W`` or a batch ``N × C × H × W``. A batch gets
independent randomness per sample, drawn in one call and applied with one indexing or
``where`` operation, so augmenting on the device costs a few kernels per batch instead of a
Python loop. Randomness comes from ``generator`` (deterministic), or from torch's global RNG
for the input's device when it is None.

The CIFAR training recipe of the papers (DiveBatch's kuangliu and weiaicunzai trainers) is
``RandomCrop(32, padding=4)`` → ``RandomHorizontalFlip()`` → ``ToTensor()`` →
``Normalize(mean, std)``; `cifar_train_augment` is its equivalent on ``[0, 1]`` tensors: pad
with 0 (black), crop, flip, then normalise, so the border is (0 − mean)/std as there.

Per-channel statistics of the training sets, as ``[0, 1]`` pixel values:

* MNIST, Fashion-MNIST: computed here from the 60 000 training images (population std over
  all pixels): 0.1307/0.3081 and 0.2860/0.3530.
* CIFAR-10: mean (0.4914, 0.4822, 0.4465); ``CIFAR10_STD`` (0.2470, 0.2435, 0.2616) is the
  per-pixel std; ``CIFAR10_STD_KUANGLIU`` (0.2023, 0.1994, 0.2010) is the value in
  kuangliu/pytorch-cifar ``main.py``, which the DiveBatch CIFAR-10 code uses.
* CIFAR-100: weiaicunzai/pytorch-cifar100 ``conf/global_settings.py`` (used by the
  DiveBatch CIFAR-100 code), rounded to 4 digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CHANNEL_STATS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_STD_KUANGLIU",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "Augment",
    "cifar_train_augment",
    "crop",
    "crop_offsets",
    "flip_mask",
    "normalize",
    "random_crop",
    "random_horizontal_flip",
]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_STD_KUANGLIU = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: ``(mean, std)`` per data set name, for configuration files and the CLI.
CHANNEL_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": (MNIST_MEAN, MNIST_STD),
    "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
}


def _as_batch(x: Tensor, what: str) -> Tensor:
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() == 4:
        return x
    raise ValueError(
        f"{what} takes an image C × H × W or a batch N × C × H × W, got shape {tuple(x.shape)}"
    )


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    # Draw where the generator lives; with the global RNG, on the input's device.
    return generator.device if generator is not None else x.device


def crop_offsets(
    batch: int,
    height: int,
    width: int,
    size: int | tuple[int, int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Uniform crop positions: top ~ U{0, …, height − h}, left ~ U{0, …, width − w}.

    Two draws, in this order: ``torch.randint(height − h + 1, (batch,))`` for the tops, then
    the same for the lefts, from ``generator`` (or the global RNG of ``device``).
    """
    h, w = _pair(size)
    if h > height or w > width:
        raise ValueError(
            f"crop size {h} × {w} does not fit in the (padded) image {height} × {width}; "
            "use a smaller size or more padding"
        )
    top = torch.randint(height - h + 1, (batch,), generator=generator, device=device)
    left = torch.randint(width - w + 1, (batch,), generator=generator, device=device)
    return top, left


def crop(x: Tensor, top: Tensor, left: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Window ``[top_i : top_i + h, left_i : left_i + w]`` of each image, in one gather.

    Args:
        x: ``N × C × H × W`` batch.
        top: ``N`` int64 row offsets.
        left: ``N`` int64 column offsets.
        size: h or (h, w).
    """
    h, w = _pair(size)
    n, c = x.shape[:2]
    dev = x.device
    rows = top.to(dev).view(n, 1, 1, 1) + torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = left.to(dev).view(n, 1, 1, 1) + torch.arange(w, device=dev).view(1, 1, 1, w)
    samples = torch.arange(n, device=dev).view(n, 1, 1, 1)
    channels = torch.arange(c, device=dev).view(1, c, 1, 1)
    return x[samples, channels, rows, cols]


def random_crop(
    x: Tensor,
    size: int | tuple[int, int],
    padding: int = 4,
    *,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> Tensor:
    """Pad each side by ``padding`` with ``fill``, then crop ``size`` at a uniform position.

    out_i = pad(x_i)[:, t_i : t_i + h, l_i : l_i + w] with (t_i, l_i) from `crop_offsets` on
    the padded size, independently per sample. ``size = H`` and ``padding = 0`` is the
    identity; ``RandomCrop(32, padding=4)`` is ``random_crop(x, 32, 4)``.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    batch = _as_batch(x, "random_crop")
    if padding:
        batch = F.pad(batch, (padding,) * 4, value=fill)
    top, left = crop_offsets(
        batch.shape[0],
        batch.shape[2],
        batch.shape[3],
        size,
        generator=generator,
        device=_device(x, generator),
    )
    out = crop(batch, top, left, size)
    return out if x.dim() == 4 else out[0]


def flip_mask(
    batch: int,
    p: float = 0.5,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Which samples to flip: 1[u_i < p], u_i ~ U[0, 1), one ``torch.rand(batch)`` draw."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability p must be in [0, 1], got {p!r}")
    return torch.rand(batch, generator=generator, device=device) < p


def random_horizontal_flip(
    x: Tensor, p: float = 0.5, *, generator: torch.Generator | None = None
) -> Tensor:
    """Mirror the width axis of each sample independently with probability ``p``.

    out_i = flip(x_i, W) if m_i else x_i, with m from `flip_mask`.
    """
    batch = _as_batch(x, "random_horizontal_flip")
    mask = flip_mask(batch.shape[0], p, generator=generator, device=_device(x, generator))
    out = torch.where(mask.to(x.device).view(-1, 1, 1, 1), batch.flip(-1), batch)
    return out if x.dim() == 4 else out[0]


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Per-channel standardisation: out[..., c, :, :] = (x[..., c, :, :] − mean_c) / std_c.

    Args:
        x: floating ``C × H × W`` or ``N × C × H × W`` tensor (pixels in [0, 1] for the
            constants of this module).
        mean: C channel means.
        std: C channel standard deviations, all > 0.
    """
    batch = _as_batch(x, "normalize")
    if not batch.is_floating_point():
        raise TypeError(
            f"normalize needs floating inputs, got {x.dtype}; convert uint8 pixels with "
            "x.float() / 255"
        )
    c = batch.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).flatten()
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).flatten()
    if m.numel() != c or s.numel() != c:
        raise ValueError(
            f"mean and std need one value per channel: the input has {c} channels, got "
            f"{m.numel()} means and {s.numel()} stds"
        )
    if not bool((s > 0).all()):
        raise ValueError(f"std must be > 0 in every channel, got {s.tolist()}")
    return (x - m.view(c, 1, 1)) / s.view(c, 1, 1)


@dataclass(frozen=True)
class Augment:
    """A fixed pipeline: random crop → random horizontal flip → normalise (each optional).

    Calling it on a batch applies the enabled steps in that order, drawing from one
    ``generator``: crop tops, crop lefts, then flip coins (see `crop_offsets`, `flip_mask`).

    Attributes:
        crop_size: output size of `random_crop`, or None for no crop.
        padding: padding of `random_crop`.
        fill: padding value, in input units (0 is black for [0, 1] pixels).
        flip_p: flip probability; 0 disables the flip.
        mean: channel means for `normalize`, or None for no normalisation.
        std: channel stds for `normalize` (required with ``mean``).
    """

    crop_size: int | tuple[int, int] | None = None
    padding: int = 4
    fill: float = 0.0
    flip_p: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.crop_size is not None:
            _pair(self.crop_size)
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("pass both mean and std to normalise, or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(
                    f"mean and std must have one value per channel each, got "
                    f"{len(self.mean)} means and {len(self.std)} stds"
                )
            if min(self.std) <= 0:
                raise ValueError(f"std must be > 0 in every channel, got {self.std}")

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Augment an image or a batch (see the class docstring for the order of draws)."""
        if self.crop_size is not None:
            x = random_crop(x, self.crop_size, self.padding, generator=generator, fill=self.fill)
        if self.flip_p > 0:
            x = random_horizontal_flip(x, self.flip_p, generator=generator)
        if self.mean is not None and self.std is not None:
            x = normalize(x, self.mean, self.std)
        return x


def cifar_train_augment(
    mean: Sequence[float], std: Sequence[float], *, size: int = 32, padding: int = 4
) -> Augment:
    """The CIFAR training pipeline: crop ``size`` after ``padding`` zeros, flip at 1/2, normalise.

    Example: ``cifar_train_augment(CIFAR10_MEAN, CIFAR10_STD)(images01, generator=g)``;
    evaluation uses ``Augment(mean=..., std=...)`` (normalisation only).
    """
    return Augment(crop_size=size, padding=padding, flip_p=0.5, mean=tuple(mean), std=tuple(std))
