"""A multilayer perceptron on flattened inputs (784-512-10 for MNIST by default)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten → [Linear → ReLU] × len(hidden) → Linear."""

    def __init__(
        self, in_features: int = 784, hidden: Sequence[int] = (512,), num_classes: int = 10
    ):
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.net(x.flatten(1))
