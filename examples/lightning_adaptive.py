"""A Lightning module trained with an adaptive batch size: one callback, nothing else changed.

The module and its DataLoader are ordinary Lightning code; `AdaptiveBatchSize` grows the batch
with the norm test (Byrd et al.) and scales the LR linearly with it. Data: scikit-learn's
bundled digits (8×8 images, 10 classes). Run: ``python examples/lightning_adaptive.py``.
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl

from adabatch.integrations.lightning import AdaptiveBatchSize
from adabatch.policies import make_policy


def digits(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Digits, standardised, split 1,437 / 360."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return TensorDataset(x[:1437], y[:1437]), TensorDataset(x[1437:], y[1437:])


class Classifier(pl.LightningModule):
    """An MLP 64-128-10: ordinary Lightning code, nothing adabatch-specific."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def training_step(self, batch, batch_idx):
        """Cross-entropy of one batch (whatever size the callback gave it)."""
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        """Accuracy on the held-out digits."""
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        """SGD with momentum; the callback scales its LR with the batch."""
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


POLICIES = {
    "norm-test": {"eta": 0.2, "max_batch_size": 512},
    "constant": {},  # the callback's own cost: the same run as no callback, through it
}


def main(
    epochs: int = 10, seed: int = 0, policy: str | None = "norm-test", batch_size: int = 32
) -> dict:
    """Train; returns the final validation accuracy, steps, batch size and seconds.

    ``policy``: a name of `POLICIES` run by the callback, or None (no callback: plain Lightning).
    """
    pl.seed_everything(seed, verbose=False)
    train, val = digits(seed)
    callbacks = []
    if policy is not None:
        rule = make_policy(policy, batch_size=batch_size, **POLICIES[policy])
        callbacks.append(AdaptiveBatchSize(rule, lr_rule="linear"))
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    module = Classifier()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers for a tiny data set
        trainer.fit(
            module,
            DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(val, batch_size=360),
        )
    seconds = time.perf_counter() - start
    final = callbacks[0].session.batch_size if callbacks else batch_size
    return {
        "val_acc": float(trainer.callback_metrics["val_acc"]), "steps": trainer.global_step,
        "final_batch": final, "seconds": seconds,
    }  # fmt: skip


if __name__ == "__main__":
    result = main()
    print(
        f"val accuracy {result['val_acc']:.3f} after {result['steps']} steps; final batch "
        f"{result['final_batch']}; {result['seconds']:.1f} s"
    )
