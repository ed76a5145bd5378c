"""The small two-convolution CNN of the MNIST experiments (AdAdaGrad), for any image size."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._validate import as_int
from ._norm import make_norm


class SmallCNN(nn.Module):
    """Conv(32, 3×3) → norm → ReLU → pool → Conv(64, 3×3) → norm → ReLU → pool → FC(128) → FC.

    The widths are the paper's by default; ``SmallCNN(channels=(16, 32), hidden=64)`` is a
    narrower variant for CPU runs.

    Args:
        in_channels: 1 for MNIST, 3 for CIFAR-shaped images.
        image_size: input height = width (28 or 32), divisible by 4 (two 2×2 poolings).
        num_classes: output classes.
        norm: "none" (default, as in the paper), "group" or "batch".
        channels: output channels of the two convolutions (any sequence of two integers).
        hidden: width of the hidden fully connected layer.

    Raises:
        TypeError: a size is not an integer.
        ValueError: a size is below 1, ``channels`` does not have two entries, ``image_size``
            is not divisible by 4, or ``norm`` is unknown.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        norm: str = "none",
        *,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
    ):
        super().__init__()
        in_channels = as_int(in_channels, "in_channels", minimum=1)
        image_size = as_int(image_size, "image_size", minimum=4)
        num_classes = as_int(num_classes, "num_classes", minimum=1)
        hidden = as_int(hidden, "hidden", minimum=1)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
            raise TypeError(f"channels must be a pair of integers, got {channels!r}")
        if len(channels) != 2:
            raise ValueError(f"channels must have two entries (one per conv), got {channels!r}")
        c1, c2 = (as_int(c, f"channels[{i}]", minimum=1) for i, c in enumerate(channels))
        if image_size % 4:
            # Two 2×2 poolings: a size not divisible by 4 would silently drop border pixels.
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            make_norm(norm, c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            make_norm(norm, c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.classifier(self.features(x))
