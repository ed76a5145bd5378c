"""A tiny GPT-2 in Hugging Face's Trainer, its batch grown by the norm test: one callback.

The model is built from a config (no download); the text is a generated order-2 Markov chain
over 48 symbols, so there is structure to learn and a held-out loss to compare. The Trainer,
its arguments and its data collator are ordinary; `AdaptiveBatchSizeCallback` adapts the
batch and scales the AdamW LR with √(B/B₀). Run: ``python examples/hf_trainer_adaptive.py``.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from adabatch.integrations.huggingface import AdaptiveBatchSizeCallback
from adabatch.policies import make_policy

VOCAB, LENGTH = 48, 32


class Sequences(torch.utils.data.Dataset):
    """``n`` sequences of an order-2 Markov chain with a fixed, sparse transition table."""

    def __init__(self, n: int, seed: int) -> None:
        table = torch.Generator().manual_seed(1234)  # the language: the same for every split
        logits = torch.randn(VOCAB, VOCAB, VOCAB, generator=table) * 3.0
        probs = torch.softmax(logits, dim=-1)
        g = torch.Generator().manual_seed(seed)
        ids = torch.empty(n, LENGTH, dtype=torch.long)
        ids[:, :2] = torch.randint(0, VOCAB, (n, 2), generator=g)
        for t in range(2, LENGTH):
            ids[:, t] = torch.multinomial(probs[ids[:, t - 2], ids[:, t - 1]], 1, generator=g)[:, 0]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


POLICIES = {
    "norm-test": {"eta": 0.5, "max_batch_size": 256},
    "constant": {},  # the callback's own cost: the same run as no callback, through it
}


def main(
    epochs: int = 3,
    seed: int = 0,
    policy: str | None = "norm-test",
    batch_size: int = 16,
    n: int = 2048,
) -> dict:
    """Train; returns the held-out loss, steps, final batch size and seconds.

    ``policy``: a name of `POLICIES` run by the callback, or None (no callback: the plain
    Trainer).
    """
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=64, n_layer=2, n_head=2,
        bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    callbacks = []
    if policy is not None:
        rule = make_policy(policy, batch_size=batch_size, **POLICIES[policy])
        callbacks.append(AdaptiveBatchSizeCallback(rule, lr_rule="sqrt"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
            learning_rate=2e-3, lr_scheduler_type="constant", report_to=[], save_strategy="no",
            logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=seed, data_seed=seed,
        )  # fmt: skip
        trainer = Trainer(
            model=model, args=args, train_dataset=Sequences(n, seed),
            eval_dataset=Sequences(512, 10_000 + seed), callbacks=callbacks,
        )  # fmt: skip
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        seconds = time.perf_counter() - start
        eval_loss = trainer.evaluate()["eval_loss"]
    final = callbacks[0].session.batch_size if callbacks else batch_size
    return {
        "eval_loss": eval_loss, "steps": trainer.state.global_step, "final_batch": final,
        "seconds": seconds, "perplexity": math.exp(eval_loss),
    }  # fmt: skip


if __name__ == "__main__":
    result = main()
    print(
        f"held-out loss {result['eval_loss']:.3f} after {result['steps']} steps; final batch "
        f"{result['final_batch']}; {result['seconds']:.1f} s"
    )
