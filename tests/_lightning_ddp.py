"""Run by ``torchrun --nproc_per_node=2`` from test_integrations_lightning: one DDP fit."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from _dist import exit_worker
from _integrations import Indexed
from adabatch.integrations.lightning import AdaptiveBatchSize
from adabatch.policies import make_policy
from test_integrations_lightning import Module, Recorder


def main(out: Path, n: int, per_rank: int, limit: int | None) -> None:
    policy = make_policy("norm-test", batch_size=2 * per_rank, eta=0.5, max_batch_size=128)
    adaptive = AdaptiveBatchSize(
        policy, tracker_options={"check_layout": False}, max_physical_batch_size=limit
    )
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
        callbacks=[adaptive, recorder], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(Indexed(n), batch_size=per_rank, shuffle=True))
    decisions = [(d.step, d.new_batch_size) for d in adaptive.session.scheduler.decisions]
    epochs = {str(e): b for e, b in recorder.epochs().items()}
    params = torch.cat([p.detach().flatten() for p in module.parameters()]).tolist()
    record = {
        "decisions": decisions, "epochs": epochs, "params": params,
        "sizes": [len(b) for _, b in recorder.batches],
    }  # fmt: skip
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    # The record is written; exit without interpreter teardown, during which gloo's threads
    # can abort a finished rank ("terminate called without an active exception", SIGABRT,
    # about one run in fifteen on a loaded 2-core machine) and fail a run that passed.
    n, per_rank, limit = (int(a) for a in sys.argv[2:5])
    main(Path(sys.argv[1]), n, per_rank, limit or None)
    exit_worker()
