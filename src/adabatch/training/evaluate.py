"""Evaluation: the mean loss and the accuracy of a model over a whole data set.

Sums are taken per batch (the mean loss times the batch's size, the number of correct
argmax predictions) and divided once at the end, so the result does not depend on the
evaluation batch size. Under ``torch.distributed`` every rank evaluates its share of each
batch and the sums are all-reduced: every rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data import AdaptiveLoader
from ..distributed import is_distributed
from ..distributed.parallel import is_fsdp

__all__ = ["evaluate"]


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    batch_transform: Callable[[Any], Any] | None = None,
    count_tokens: Callable[[Any], int | Tensor] | None = None,
    tokens_per_sample: int | None = None,
) -> dict[str, float | None]:
    """``{"test_loss": mean loss, "test_accuracy": percent correct}`` over ``dataset``.

    Args:
        model: the model (evaluated in ``eval`` mode, restored afterwards).
        dataset: map-style data set of ``(input, target)`` pairs.
        loss_fn: the training loss, reducing by the mean over a batch.
        batch_size: evaluation batch size (global under DDP).
        device: where batches go (None: where they are).
        batch_transform: applied to each batch (e.g. normalisation).

        count_tokens: for padded sequences of variable length, whose loss sums the real
            tokens and divides by B·T (`adabatch.models.next_token_loss`): a batch's real
            tokens. The loss is then reported per real token, Σ loss·B·T / Σ
            ``count_tokens(batch)``, instead of per sample.
        tokens_per_sample: T, the padded length, with ``count_tokens`` (both or neither).

    ``test_accuracy`` is None when the outputs are not class scores (not ``N × K`` with integer
    targets of shape ``N``).
    """
    if (count_tokens is None) != (tokens_per_sample is None):
        raise ValueError(
            "count_tokens and tokens_per_sample go together (the loss per real token needs "
            f"both), got count_tokens={count_tokens!r}, tokens_per_sample={tokens_per_sample!r}"
        )
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise ValueError("the evaluation data set is empty")
    loader = AdaptiveLoader(
        dataset,
        min(batch_size, size),
        shuffle=False,
        device=device,
        batch_transform=batch_transform,
    )
    sharded = is_fsdp(model)
    was_training = model.training
    model.eval()
    # loss sum, correct, samples, batches that were not classification, real tokens: summed
    # on the device (no synchronisation per batch), read once at the end
    where = next((p.device for p in model.parameters()), torch.device("cpu"))
    total = torch.zeros(5, dtype=torch.float64, device=where)
    try:
        with torch.no_grad():
            for inputs, targets in loader:
                n = len(targets)
                if n == 0:  # this rank's share of a short last batch
                    if sharded:  # FSDP2 gathers parameters in forward: every rank must join
                        model(inputs)
                    continue
                outputs = model(inputs)
                total[0] += loss_fn(outputs, targets).detach().double() * n
                total[2] += n
                if count_tokens is not None:  # a tensor (no device wait) or an int
                    total[4] += count_tokens((inputs, targets))
                if _is_classification(outputs, targets):
                    total[1] += (outputs.argmax(dim=1) == targets).sum()
                else:
                    total[3] += 1
    finally:
        model.train(was_training)
    if is_distributed():
        dist.all_reduce(total)
    loss_sum, correct, count, other, tokens = total.tolist()
    classification = other == 0
    if count == 0:
        raise ValueError("the evaluation data set is empty")
    if tokens_per_sample is not None:
        if tokens == 0:
            raise ValueError("the evaluation data set has no real target token")
        mean_loss = loss_sum * tokens_per_sample / tokens  # per real token
    else:
        mean_loss = loss_sum / count
    return {
        "test_loss": mean_loss,
        "test_accuracy": 100.0 * correct / count if classification else None,
    }


def _is_classification(outputs: Tensor, targets: Tensor) -> bool:
    return (
        outputs.dim() == 2
        and targets.dim() == 1
        and not torch.is_floating_point(targets)
        and not torch.is_complex(targets)
    )
