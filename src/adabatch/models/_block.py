"""The residual BasicBlock (He et al. 2016) shared by ResNet-20/32/… and ResNet-18.

Two 3×3 convolutions, each followed by a norm layer, plus a shortcut. When the shape changes
(stride ≠ 1 or more channels) the shortcut follows one of the paper's options:

* ``"pad"`` (option A, the CIFAR ResNets): subsample with the stride and zero-pad the new
  channels — no parameters;
* ``"projection"`` (option B, ResNet-18): a 1×1 convolution with the stride, and a norm layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._norm import make_norm

SHORTCUTS = ("pad", "projection")


class BasicBlock(nn.Module):
    """relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, shortcut: str):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        # No conv biases: each convolution feeds a norm layer, which has its own shift.
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.stride = stride
        reshapes = stride != 1 or c_in != c_out
        self.shortcut: nn.Module = nn.Identity()
        if reshapes and shortcut == "projection":
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), make_norm(norm, c_out)
            )
        self.subsample = reshapes and shortcut == "pad"
        self.pad = c_out - c_in if self.subsample else 0  # channels zero-padded (option A)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.shortcut(x)
        if self.subsample:
            # Option A: subsample, then zero-pad the new channels (half on each side).
            shortcut = shortcut[:, :, :: self.stride, :: self.stride]
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)
