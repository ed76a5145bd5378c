"""Models used by the benchmarks and experiments, written here (no torchvision).

Every model with normalisation takes ``norm="group"`` (GroupNorm: per-sample statistics are
exact) or ``norm="batch"`` (BatchNorm: the papers' choice; per-sample statistics need
``batchnorm="approximate"``).
"""

from .cnn import SmallCNN
from .mlp import MLP
from .resnet import ResNetCIFAR, resnet20
from .transformer import TransformerClassifier

__all__ = ["MLP", "ResNetCIFAR", "SmallCNN", "TransformerClassifier", "resnet20"]
