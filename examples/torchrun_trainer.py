"""The Trainer in your own torchrun script: DDP (or FSDP2) with an adaptive batch size.

    torchrun --nproc_per_node=2 examples/torchrun_trainer.py            # 2 processes, DDP
    torchrun --nproc_per_node=2 examples/torchrun_trainer.py --fsdp     # the model sharded
    python examples/torchrun_trainer.py                                 # or one process

`init_from_env` starts the process group from torchrun's environment (gloo on the CPU, NCCL on
GPUs) and `wrap_model` wraps the model; everything else is the single-process code. The batch
size is global: each rank reads its slice, the statistics are all-reduced, and every rank takes
the same decision, so the run follows the trajectory of one process. Rank 0 alone prints and
writes the checkpoint.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.datasets import ArrayDataset
from adabatch.distributed import DistributedEnv, init_from_env, shutdown, wrap_model
from adabatch.training import Callback, Trainer


def make_data(n: int, seed: int) -> ArrayDataset:
    """Inputs with a linear 10-class structure."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    teacher = torch.randn(32, 10, generator=torch.Generator().manual_seed(99))
    return ArrayDataset(x, (x @ teacher).argmax(1), num_classes=10)


class PrintEpochs(Callback):
    """One line per epoch, from rank 0 only."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_record(self, trainer: Trainer, record: dict) -> None:
        """Print the epoch records."""
        if self.rank == 0 and record["kind"] == "epoch":
            print(
                f"epoch {record['epoch']}  batch {record['batch_size']}  steps {record['step']}"
                f"  test accuracy {record['test_accuracy']:.1f}%"
            )


def train(env: DistributedEnv, fsdp: bool, epochs: int) -> dict:
    """Train on this process's share; return the steps, the final batch and the world size."""
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).to(env.device)
    model = wrap_model(model, "fsdp" if fsdp else "ddp", env)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # after wrapping (FSDP2 shards)

    policy = make_policy("norm-test", batch_size=32, eta=1.0, max_batch_size=512)
    loader = AdaptiveLoader(make_data(2048, 0), policy.batch_size, seed=0)  # global batch
    scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt")
    checkpoint = Path(tempfile.gettempdir()) / f"adabatch_torchrun_example_{env.world_size}.pt"
    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        eval_data=make_data(512, 1),
        callbacks=[PrintEpochs(env.rank)],
        checkpoint_path=checkpoint,  # written by rank 0, gathered from all ranks
    )
    result = trainer.fit(epochs)
    if env.is_main:
        print(
            f"{env.world_size} process(es), {env.backend or 'no process group'}: "
            f"{result.steps} steps, final batch {trainer.batch_size}"
        )
    return {"steps": result.steps, "batch": trainer.batch_size, "world": env.world_size}


def main(fsdp: bool = False, epochs: int = 3) -> dict:
    """Start the process group, train, end the group once the wrapped model is gone."""
    env = init_from_env()  # rank, world size, backend, device (a single process: 0 of 1)
    try:
        return train(env, fsdp, epochs)  # the DDP model and the Trainer live in there only
    finally:
        shutdown()


if __name__ == "__main__":
    main(fsdp="--fsdp" in sys.argv[1:])
