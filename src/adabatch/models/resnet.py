"""ResNet for 32×32 images (He et al. 2016, §4.2): ResNet-20/32/44/56 with 16-32-64 channels.

Shortcuts are the paper's option A (identity, with a strided subsample and zero-padded
channels when the shape changes), so the network has no parameters outside its convolutions,
norm layers and classifier: ResNet-20 has 0.27 M parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._block import BasicBlock
from ._norm import make_norm


class ResNetCIFAR(nn.Module):
    """ResNet-(6n+2) for CIFAR-shaped inputs."""

    def __init__(
        self, depth: int = 20, num_classes: int = 10, norm: str = "group", in_channels: int = 3
    ):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn = make_norm(norm, 16)
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(
                    BasicBlock(c_in, c_out, stride if i == 0 else 1, norm, shortcut="pad")
                )
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        return self.fc(out.mean(dim=(2, 3)))


def resnet20(num_classes: int = 10, norm: str = "group") -> ResNetCIFAR:
    """ResNet-20 (0.27 M parameters)."""
    return ResNetCIFAR(20, num_classes=num_classes, norm=norm)
