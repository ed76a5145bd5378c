"""ResNet-18 (He et al. 2016, Table 1): BasicBlocks [2, 2, 2, 2] with 64-128-256-512 channels.

Two stems:

* ``"cifar"``: one 3×3 convolution with stride 1 and no max-pool, for 32×32 images. This is the
  kuangliu/pytorch-cifar variant that the DiveBatch paper trains on CIFAR-10/100 (11,173,962
  parameters with 10 classes).
* ``"imagenet"``: the paper's 7×7 convolution with stride 2 and a 3×3 max-pool with stride 2,
  for 224 px images or 64×64 Tiny-ImageNet (which leaves 16×16 at the first stage, as
  torchvision's ResNet-18 does on Tiny-ImageNet).

Shortcuts are projections (1×1 convolution + norm, the paper's option B) where the shape
changes, identities elsewhere. The papers use BatchNorm (``norm="batch"``); the default here is
``norm="group"``, as for `resnet20`, because per-sample gradient statistics are exact only when
no layer mixes the samples of a batch.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._validate import as_int, check_choice
from ._block import BasicBlock
from ._norm import make_norm

STEMS = ("cifar", "imagenet")


class ResNet18(nn.Module):
    """ResNet-18: stem → 4 stages of 2 BasicBlocks → global average pool → Linear(512, classes).

    Args:
        num_classes: output classes.
        norm: "group" (default: GroupNorm, exact per-sample statistics), "batch" (the papers'
            BatchNorm) or "none".
        stem: "cifar" (3×3 conv, stride 1, no max-pool; for 32×32 inputs) or "imagenet"
            (7×7 conv, stride 2, then 3×3 max-pool, stride 2; for 64×64 or 224×224 inputs).
        in_channels: input channels (3 for RGB).

    Raises:
        TypeError: ``num_classes`` or ``in_channels`` is not an integer.
        ValueError: ``num_classes`` or ``in_channels`` is below 1, or ``norm`` or ``stem`` is
            unknown.
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: str = "group",
        stem: str = "cifar",
        in_channels: int = 3,
    ):
        super().__init__()
        num_classes = as_int(num_classes, "num_classes", minimum=1)
        in_channels = as_int(in_channels, "in_channels", minimum=1)
        check_choice("stem", stem, STEMS)
        if stem == "cifar":
            # 32×32 inputs are too small to downsample by 4 before the first stage.
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
                make_norm(norm, 64),
                nn.ReLU(),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
                make_norm(norm, 64),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages: list[nn.Module] = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    BasicBlock(c_in, c_out, stride, norm, "projection"),
                    BasicBlock(c_out, c_out, 1, norm, "projection"),
                )
            )
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        # He initialisation for the convolutions, as torchvision and `ResNetCIFAR` do; norm
        # layers keep PyTorch's defaults (scale 1, shift 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # A mean over the spatial dimensions, so any input size works (4×4 at the end for
        # 32×32 with the cifar stem, 2×2 for 64×64 with the imagenet stem).
        return self.fc(out.mean(dim=(2, 3)))


def resnet18_cifar(num_classes: int = 10, norm: str = "group", in_channels: int = 3) -> ResNet18:
    """ResNet-18 with the CIFAR stem, for 32×32 images (11.2 M parameters)."""
    return ResNet18(num_classes=num_classes, norm=norm, stem="cifar", in_channels=in_channels)


def resnet18_tiny(num_classes: int = 200, norm: str = "group", in_channels: int = 3) -> ResNet18:
    """ResNet-18 with the ImageNet stem, for 64×64 Tiny-ImageNet images (200 classes)."""
    return ResNet18(num_classes=num_classes, norm=norm, stem="imagenet", in_channels=in_channels)
