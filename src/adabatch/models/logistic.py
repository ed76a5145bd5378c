"""Multinomial logistic regression: flatten, then one Linear layer (the AdAdaGrad MNIST model).

The loss (cross-entropy on the logits) is convex in the parameters, which is the setting of the
convex experiments in Lau, Liu & Kolar (AdAdaGrad, arXiv 2402.11215).
"""

from __future__ import annotations

from torch import Tensor, nn

from .._validate import as_int


class LogisticRegression(nn.Module):
    """Flatten → Linear(in_features, num_classes); 7,850 parameters for MNIST.

    The softmax lives in the loss (``nn.CrossEntropyLoss``), so the model returns logits.

    Args:
        in_features: the number of input features (784 for 28×28 MNIST images).
        num_classes: output classes.

    Raises:
        TypeError: an argument is not an integer.
        ValueError: an argument is below 1.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        in_features = as_int(in_features, "in_features", minimum=1)
        num_classes = as_int(num_classes, "num_classes", minimum=1)
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.linear(x.flatten(1))
