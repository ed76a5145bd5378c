"""Models used by the benchmarks and experiments, written here (no torchvision).

``LogisticRegression``, ``MLP`` and ``SmallCNN`` are the AdAdaGrad MNIST models; ``resnet20``
(`ResNetCIFAR`) and ``ResNet18`` (CIFAR stem, as in DiveBatch, or ImageNet stem for
Tiny-ImageNet) the image-classification ones; ``TransformerClassifier`` a sequence classifier;
``GPT`` a small decoder-only language model (with `next_token_loss`).
`MODELS` names them, and `build_model` builds one for a given input shape, with the options
that `model_options` lists.

Every model with normalisation takes ``norm="group"`` (GroupNorm: per-sample statistics are
exact) or ``norm="batch"`` (BatchNorm: the papers' choice; per-sample statistics need
``batchnorm="approximate"``).
"""

from .cnn import SmallCNN
from .gpt import GPT, next_token_loss
from .logistic import LogisticRegression
from .mlp import MLP
from .registry import MODELS, build_model, model_options
from .resnet import ResNetCIFAR, resnet20
from .resnet18 import ResNet18, resnet18_cifar, resnet18_tiny
from .transformer import TransformerClassifier

__all__ = [
    "GPT",
    "MLP",
    "MODELS",
    "LogisticRegression",
    "ResNet18",
    "ResNetCIFAR",
    "SmallCNN",
    "TransformerClassifier",
    "build_model",
    "model_options",
    "next_token_loss",
    "resnet18_cifar",
    "resnet18_tiny",
    "resnet20",
]
