"""The small two-convolution CNN of the MNIST experiments (AdAdaGrad), for any image size."""

from __future__ import annotations

from torch import Tensor, nn

from ._norm import make_norm


class SmallCNN(nn.Module):
    """Conv(32, 3×3) → norm → ReLU → pool → Conv(64, 3×3) → norm → ReLU → pool → FC(128) → FC.

    Args:
        in_channels: 1 for MNIST, 3 for CIFAR-shaped images.
        image_size: input height = width (28 or 32).
        num_classes: output classes.
        norm: "none" (default, as in the paper), "group" or "batch".
    """

    def __init__(
        self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, norm: str = "none"
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            make_norm(norm, 32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            make_norm(norm, 64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.classifier(self.features(x))
