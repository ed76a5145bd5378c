"""Bad input to compute_stats: each a clear error that says what and how to fix it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adabatch.stats import ENGINES, compute_stats


@pytest.fixture
def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3))


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_empty_batch(model: nn.Module, engine: str) -> None:
    with pytest.raises(ValueError, match=r"batch is empty \(inputs.shape\[0\] == 0\)"):
        compute_stats(
            model,
            nn.CrossEntropyLoss(),
            torch.randn(0, 4),
            torch.zeros(0, dtype=torch.long),
            engine=engine,
        )


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_mismatched_batch_sizes(model: nn.Module, engine: str) -> None:
    with pytest.raises(ValueError, match="5 inputs but 4 targets"):
        compute_stats(
            model,
            nn.CrossEntropyLoss(),
            torch.randn(5, 4),
            torch.zeros(4, dtype=torch.long),
            engine=engine,
        )


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_non_scalar_loss(model: nn.Module, engine: str) -> None:
    with pytest.raises(ValueError, match=r"reduced to a scalar, got shape \((3|1),\)"):
        compute_stats(
            model,
            nn.CrossEntropyLoss(reduction="none"),
            torch.randn(3, 4),
            torch.zeros(3, dtype=torch.long),
            engine=engine,
        )


def test_unknown_engine_and_reduction(model: nn.Module) -> None:
    x, y = torch.randn(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(
        ValueError, match=r"engine must be one of \['functorch', 'hooks', 'reference'\], got 'fast'"
    ):
        compute_stats(model, nn.CrossEntropyLoss(), x, y, engine="fast")
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        compute_stats(model, nn.CrossEntropyLoss(), x, y, loss_reduction="none")
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        compute_stats(model, nn.CrossEntropyLoss(), [1, 2], y)


def test_declared_reduction_is_checked_by_the_reference(model: nn.Module) -> None:
    x, y = torch.randn(3, 4), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="loss_reduction='mean' but the batch loss"):
        compute_stats(model, nn.CrossEntropyLoss(reduction="sum"), x, y, engine="reference")


def test_no_trainable_parameters(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="does not require grad"):
        compute_stats(
            model, nn.CrossEntropyLoss(), torch.randn(2, 4), torch.zeros(2, dtype=torch.long)
        )


def test_unsupported_layer_error_names_the_module_and_fix() -> None:
    from adabatch.stats import GradStatsTracker

    model = nn.Sequential(nn.Linear(4, 3), nn.PReLU())
    with pytest.raises(
        TypeError, match=r"1 \(PReLU\) has trainable parameters and no per-sample rule"
    ):
        GradStatsTracker(model, fallback="error")
