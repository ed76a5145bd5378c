"""Run by ``torchrun --nproc_per_node=2`` from test_integrations_huggingface: one DDP train."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from _dist import exit_worker
from adabatch.policies import make_policy
from test_integrations_huggingface import train


def main(out: Path) -> None:
    policy = make_policy("norm-test", batch_size=32, eta=0.5, max_batch_size=128)
    model, adaptive, recorder, trainer = train(
        policy, out / "run", epochs=2, accumulation=2, world=2
    )
    decisions = [(d.step, d.new_batch_size) for d in adaptive.session.scheduler.decisions]
    epochs = {str(e): b for e, b in recorder.epochs().items()}
    params = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    record = {"decisions": decisions, "epochs": epochs, "params": params}
    (out / f"rank{trainer.args.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    # The record is written; exit without interpreter teardown, during which gloo's threads
    # can abort a finished rank ("terminate called without an active exception", SIGABRT,
    # about one run in fifteen on a loaded 2-core machine) and fail a run that passed.
    main(Path(sys.argv[1]))
    exit_worker()
