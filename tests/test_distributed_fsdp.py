"""Two gloo processes, the model sharded by FSDP2: exact per-sample statistics and gradients.

Under ``fully_shard`` every rank holds a shard of each parameter; a block's parameters are
gathered for its forward and backward. The tracker must tap the gathered parameters (not the
shards registered between calls), so that (1) ``p.grad`` — reduce-scattered by FSDP — is the
untracked gradient and (2) each rank's statistics are exact for its samples, and their sum over
ranks is the statistics of the union (P2 pooled per rank, as under DDP). Checked for plain FSDP
and for the two 2-D meshes of HSDP that 2 processes allow: (replicate 1, shard 2) and
(replicate 2, shard 1) — every rank of either dimension holds different samples, so the sum
over all ranks is right for both.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from _dist import run_on_ranks
from adabatch.distributed import all_reduce_stats, fsdp_available
from adabatch.stats import GradStatsTracker, compute_stats

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not fsdp_available(), reason="FSDP2 (fully_shard) needs torch >= 2.6"),
]

WORLD = 2


class AttendThenRecur(nn.Module):
    """Attention and a GRU: the layers whose statistics recompute their forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.rnn = nn.GRU(8, 4, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.rnn(h)[1][-1])


def _models() -> dict[str, Any]:
    from _models import SeqClassifier, SmallCNN, mlp

    g = torch.Generator().manual_seed(5)
    return {
        "mlp": (mlp, torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g)),
        "cnn": (
            SmallCNN,
            torch.randn(6, 3, 6, 6, generator=g),
            torch.randint(0, 4, (6,), generator=g),
        ),
        "attention-gru": (
            AttendThenRecur,
            torch.randn(6, 5, 3, generator=g),
            torch.randint(0, 3, (6,), generator=g),
        ),
        "seq": (
            SeqClassifier,
            torch.randint(0, 11, (6, 4), generator=g),
            torch.randint(0, 3, (6,), generator=g),
        ),
    }


def _shard(model: nn.Module, mesh_shape: tuple[int, int] | None) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    options: dict[str, Any] = {}
    if mesh_shape is not None:  # HSDP: replicate × shard
        options["mesh"] = init_device_mesh("cpu", mesh_shape, mesh_dim_names=("rep", "shard"))
    for child in model.children():
        # Attention and RNNs stay in the root's block (as adabatch.distributed.wrap_model does).
        recomputed = isinstance(child, (nn.MultiheadAttention, nn.GRU))
        if any(True for _ in child.parameters()) and not recomputed:
            fully_shard(child, **options)
    fully_shard(model, **options)
    return model


def _check(rank: int, out_dir: str, mesh_shape: tuple[int, int] | None) -> bool:
    from _compare import assert_stats_close, close

    opts = dict(inner_products=True, coordinates=True)
    for name, (make, x, y) in _models().items():
        torch.manual_seed(0)
        reference = make().double()
        x = x.double() if x.is_floating_point() else x
        sharded = _shard(copy.deepcopy(reference), mesh_shape)
        mine = slice(3 * rank, 3 * rank + 3)  # equal shares: FSDP's average is the mean

        tracker = GradStatsTracker(sharded, loss_reduction="mean", **opts)
        nn.functional.cross_entropy(sharded(x[mine]), y[mine]).backward()
        merged = all_reduce_stats(tracker.pop())
        tracker.remove()

        # (2) the statistics: the sum over ranks of each share's exact statistics
        shares = [
            compute_stats(
                copy.deepcopy(reference),
                nn.CrossEntropyLoss(),
                x[3 * r : 3 * r + 3],
                y[3 * r : 3 * r + 3],
                engine="reference",
                **opts,
            )
            for r in range(WORLD)
        ]
        assert_stats_close(merged, sum(shares))
        # (1) the gradients: those of one untracked backward over the whole batch
        nn.functional.cross_entropy(reference(x), y).backward()
        for (pname, p), q in zip(sharded.named_parameters(), reference.parameters(), strict=True):
            close(p.grad.full_tensor(), q.grad, 1e-9, f"{name}: {pname}.grad")
    return True


@pytest.mark.parametrize(
    "mesh_shape", [None, (1, 2), (2, 1)], ids=["fsdp", "hsdp-shard2", "hsdp-replicate2"]
)
def test_fsdp2_statistics_and_gradients_are_exact(tmp_path, mesh_shape) -> None:
    assert run_on_ranks(_check, tmp_path, mesh_shape, world=WORLD) == [True, True]
