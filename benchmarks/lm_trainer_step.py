"""A `Trainer` step of the lm suite's GPT against a bare step (forward, backward, AdamW).

`lm_step_cost.py` models a run's time from bare steps; this checks that the Trainer around a
step (loader, scheduler, records) adds little. Three rounds, each 200 Trainer steps (one
epoch of 3,200 sequences at 16 per batch, no evaluation) then 200 bare steps on the same
batches, side by side; prints and writes the per-step milliseconds.

    python benchmarks/lm_trainer_step.py [--out benchmarks/results/lm_trainer_step.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from adabatch.experiments.build import build
from adabatch.experiments.suites import SUITES
from adabatch.models import next_token_loss

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

STEPS = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/lm_trainer_step.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = SUITES["lm"].base
    config = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, train_size=STEPS * 16),
        train=dataclasses.replace(base.train, epochs=1, eval_every=0),
    )
    trainer_ms, bare_ms = [], []
    for _ in range(3):
        built = build(config)
        trainer = built.trainer()
        trainer.eval_at_start = False
        trainer.fit(1)
        trainer_ms.append(1e3 * trainer.clock.read() / trainer.step_count)
        bare = build(config)
        model, optimizer = bare.model, bare.optimizer
        x, y = bare.data.train.tensors
        start = time.perf_counter()
        for i in range(STEPS):
            optimizer.zero_grad(set_to_none=True)
            next_token_loss(model(x[16 * i : 16 * i + 16]), y[16 * i : 16 * i + 16]).backward()
            optimizer.step()
        bare_ms.append(1e3 * (time.perf_counter() - start) / STEPS)
    print(f"Trainer step: {statistics.median(trainer_ms):.1f} ms (rounds: "
          f"{', '.join(f'{t:.1f}' for t in trainer_ms)})")  # fmt: skip
    print(f"bare step:    {statistics.median(bare_ms):.1f} ms (rounds: "
          f"{', '.join(f'{t:.1f}' for t in bare_ms)})")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "trainer_ms": trainer_ms, "bare_ms": bare_ms}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
