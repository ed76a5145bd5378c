"""Smoothed-noise images labelled by a random convolutional teacher with balanced classes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import ArrayDataset
from ._common import (
    _CALIBRATION,
    _SAMPLES,
    _TEACHER,
    _check_int,
    _check_seed,
    _check_teacher,
    _generator,
)

__all__ = [
    "ImageTeacher",
    "balance_offsets",
    "image_teacher",
    "smooth_noise_images",
    "synthetic_images",
]


def smooth_noise_images(
    n: int,
    *,
    channels: int = 3,
    image_size: int = 32,
    smoothing: float = 1.5,
    generator: torch.Generator,
) -> Tensor:
    """``n × C × H × W`` Gaussian noise blurred by a Gaussian kernel, with unit pixel variance.

    x = (k ⊛ z) / ‖k‖₂ with z ~ N(0, I) i.i.d. per pixel and channel, ⊛ the *circular* 2-D
    convolution and k the Gaussian of standard deviation ``smoothing`` pixels (truncated at
    4σ, wrapped onto the H × W torus). Circularity makes the field stationary, so every pixel
    is exactly N(0, 1), with correlation ≈ exp(−r² / 4σ²) at distance r. ``smoothing=0``
    gives white noise.
    """
    _check_int("n", n, 1, "pass the number of images to generate")
    _check_int("channels", channels, 1, "use 3 for colour images, 1 for grey")
    _check_int("image_size", image_size, 4, "pass the image side in pixels")
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a finite number >= 0 (pixels), got {smoothing!r}")
    z = torch.randn(n, channels, image_size, image_size, generator=generator)
    if smoothing == 0:
        return z
    radius = math.ceil(4 * smoothing)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / smoothing) ** 2)
    # Fold the 1-D kernel onto the circle of length image_size (its index 0 is the centre).
    folded = torch.zeros(image_size, dtype=torch.float64)
    folded.index_add_(0, offsets.long() % image_size, taps)
    kernel = torch.outer(folded, folded)
    kernel /= kernel.norm()  # unit variance: Var(Σ_m k_m z_{p−m}) = ‖k‖²
    spectrum = torch.fft.rfft2(kernel.float())
    out = torch.empty_like(z)
    for start in range(0, n, 4096):  # chunks bound the complex temporaries
        block = z[start : start + 4096]
        out[start : start + 4096] = torch.fft.irfft2(
            torch.fft.rfft2(block) * spectrum, s=(image_size, image_size)
        )
    return out


def balance_offsets(logits: Tensor, *, sweeps: int = 50) -> Tensor:
    """Per-class offsets b that make argmax_c(ℓ_ic − b_c) choose every class equally often.

    Block-coordinate ascent on the dual of the optimal transport from the m rows to the
    uniform law over the K classes: for each class c in turn, b_c is set midway between the
    q-th and (q+1)-th largest margins r_ic = ℓ_ic − max_{c'≠c}(ℓ_ic' − b_c'), q = ⌊m/K⌋, so
    that exactly q rows choose c given the other offsets. Sweeps repeat until every class
    holds q to q + (m mod K) rows, at most ``sweeps`` times (a few suffice in practice).

    Example: logits [[0, 1], [0, 2], [0, 3], [0, 4]] (class 1 always wins) give b ≈ (−1.25,
    1.25), after which rows 1, 2 choose class 0 and rows 3, 4 class 1.

    Returns:
        ``K`` offsets, centred (mean 0), in the dtype of ``logits``.
    """
    scores = logits.to(torch.float64)
    num, classes = scores.shape
    quota = num // classes
    if classes < 2 or quota < 1:
        raise ValueError(
            f"logits must be m × K with K >= 2 classes and m >= K rows, got {num} × {classes}"
        )
    b = torch.zeros(classes, dtype=torch.float64)
    for _ in range(sweeps):
        for c in range(classes):
            others = scores - b
            others[:, c] = -math.inf
            margin = scores[:, c] - others.max(1).values
            top = margin.topk(quota + 1).values  # quota < num because K >= 2
            b[c] = 0.5 * (top[quota - 1] + top[quota])
        counts = torch.bincount((scores - b).argmax(1), minlength=classes)
        if int(counts.min()) >= quota and int(counts.max()) <= quota + num % classes:
            break
    return (b - b.mean()).to(logits.dtype)


@dataclass(frozen=True, eq=False)
class ImageTeacher:
    """A random convolutional labelling rule for ``C × H × W`` images.

    logits(x) = A · pool₄(ReLU(conv(x))) − b, label = argmax of the logits, where conv is a
    5 × 5, stride-2, padding-2 convolution without bias, pool₄ the adaptive average pooling to
    a 4 × 4 grid (flattened), A the ``K × (hidden · 16)`` readout and b the class-balancing
    offsets of `balance_offsets`. Build one with `image_teacher`.

    Attributes:
        conv_weight: ``hidden × C × 5 × 5``.
        readout: ``K × (hidden · 16)``.
        offsets: ``K`` offsets subtracted from the logits.
    """

    conv_weight: Tensor
    readout: Tensor
    offsets: Tensor

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return int(self.readout.shape[0])

    @property
    def channels(self) -> int:
        """C, the number of input channels."""
        return int(self.conv_weight.shape[1])

    def logits(self, images: Tensor, *, balanced: bool = True) -> Tensor:
        """``N × K`` logits of ``N × C × H × W`` images (without the offsets if not balanced)."""
        hidden = F.relu(F.conv2d(images, self.conv_weight, stride=2, padding=2))
        scores = F.adaptive_avg_pool2d(hidden, 4).flatten(1) @ self.readout.T
        return scores - self.offsets if balanced else scores

    def __call__(self, images: Tensor) -> Tensor:
        """Int64 labels of ``N × C × H × W`` images, computed in chunks of 4096."""
        return torch.cat(
            [self.logits(images[i : i + 4096]).argmax(1) for i in range(0, len(images), 4096)]
        )


def image_teacher(
    *,
    num_classes: int = 10,
    channels: int = 3,
    image_size: int = 32,
    seed: int = 0,
    hidden: int = 16,
    smoothing: float = 1.5,
    calibration_size: int = 8192,
) -> ImageTeacher:
    """The random `ImageTeacher` of ``seed``, balanced on inputs like `synthetic_images`'.

    Weights (teacher stream of ``seed``) are He-scaled Gaussians: conv ~ N(0, 2/(25·C)),
    readout ~ N(0, 1/(16·hidden)). The offsets are fitted by `balance_offsets` on
    ``calibration_size`` images from `smooth_noise_images` (calibration stream of ``seed``),
    so every data set labelled by this teacher has class frequencies 1/K up to the
    calibration and sampling errors, whatever its own sample seed: within about ±10 % of 1/K
    with the default 8192 calibration images (measured), shrinking like 1/√calibration_size.
    """
    _check_int("num_classes", num_classes, 2, "a classification problem needs >= 2 classes")
    _check_int("channels", channels, 1, "use 3 for colour images, 1 for grey")
    _check_int("image_size", image_size, 4, "pass the image side in pixels")
    _check_int("hidden", hidden, 1, "pass the teacher's number of convolution channels")
    _check_int("calibration_size", calibration_size, num_classes, "use a few thousand")
    g = _generator(_check_seed("seed", seed), _TEACHER)
    conv = torch.randn(hidden, channels, 5, 5, generator=g) * math.sqrt(2 / (25 * channels))
    readout = torch.randn(num_classes, hidden * 16, generator=g) / math.sqrt(hidden * 16)
    unbalanced = ImageTeacher(conv, readout, torch.zeros(num_classes))
    calibration = smooth_noise_images(
        calibration_size,
        channels=channels,
        image_size=image_size,
        smoothing=smoothing,
        generator=_generator(seed, _CALIBRATION),
    )
    offsets = balance_offsets(unbalanced.logits(calibration, balanced=False))
    return ImageTeacher(conv, readout, offsets)


def synthetic_images(
    n: int,
    *,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
    teacher: int | ImageTeacher | None = None,
    smoothing: float = 1.5,
) -> ArrayDataset:
    """Smoothed-noise images labelled by a random convolutional teacher, classes balanced.

    x_i = `smooth_noise_images` (unit-variance Gaussian field, correlation length
    ``smoothing`` pixels; already standardised, so no `normalize` is needed);
    y_i = argmax_c(logits_c(x_i) − b_c) for the `ImageTeacher` of `image_teacher`, whose
    offsets b balance the classes on a calibration sample of the teacher's own. The smoothing
    gives the inputs spatial structure at the scale of the teacher's 5 × 5 filters, so a small
    CNN learns the rule (and a linear model already beats chance). The labels are not
    invariant to flips or crops; train without augmentation to learn the teacher exactly.

    Args:
        n: number of images.
        num_classes: K ≥ 2.
        image_size: H = W.
        channels: C.
        seed: seed of the images.
        teacher: seed of the teacher, an `ImageTeacher` (same C and K; built with the same
            ``image_size`` and ``smoothing`` to keep the classes balanced), or None to use
            ``seed``. Share it between a train and a test set.
        smoothing: blur standard deviation in pixels, ≥ 0.

    Returns:
        An `ArrayDataset` of float32 ``n × C × H × W`` images and int64 labels in [0, K).
    """
    _check_int("n", n, 1, "pass the number of images to generate")
    _check_seed("seed", seed)
    _check_teacher(teacher, ImageTeacher)
    if isinstance(teacher, ImageTeacher):
        if (teacher.channels, teacher.num_classes) != (channels, num_classes):
            raise ValueError(
                f"teacher takes {teacher.channels} channels and has {teacher.num_classes} "
                f"classes, but channels={channels} and num_classes={num_classes} were asked; "
                "pass matching values"
            )
        rule = teacher
    else:
        rule = image_teacher(
            num_classes=num_classes,
            channels=channels,
            image_size=image_size,
            seed=seed if teacher is None else teacher,
            smoothing=smoothing,
        )
    x = smooth_noise_images(
        n,
        channels=channels,
        image_size=image_size,
        smoothing=smoothing,
        generator=_generator(seed, _SAMPLES),
    )
    return ArrayDataset(
        x,
        rule(x),
        num_classes=num_classes,
        name="synthetic-images",
        classes=[str(c) for c in range(num_classes)],
    )
