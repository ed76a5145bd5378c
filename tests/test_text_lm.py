"""Text corpora as byte sequences, and the GPT that reads them: by hand and against the oracle."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch

import adabatch.datasets.text as text_module
from _compare import check
from adabatch.datasets import DATASETS, load_text
from adabatch.errors import DatasetNotFoundError
from adabatch.models import GPT, build_model, next_token_loss


def test_the_docstring_examples() -> None:
    assert doctest.testmod(text_module).failed == 0


def fake_fortunes(root: Path) -> bytes:
    """The corpus's 40 files, each a few generated quotations; returns their concatenation."""
    directory = root / "fortunes"
    directory.mkdir(parents=True)
    whole = b""
    for k, spec in enumerate(DATASETS["fortunes"].files):
        body = b"".join(b"quote %d of %s\n%%\n" % (j, spec.name.encode()) for j in range(k % 3 + 2))
        (directory / spec.name).write_bytes(body)
        whole += body
    return whole


def test_the_splits_cut_at_a_quotation_and_the_windows_shift_by_one(tmp_path) -> None:
    whole = fake_fortunes(tmp_path)
    train = load_text("fortunes", tmp_path, split="train", seq_len=16, held_out=0.2)
    test = load_text("fortunes", tmp_path, split="test", seq_len=16, held_out=0.2)
    start = int(len(whole) * 0.8)
    cut = whole.find(b"\n%\n", start) + 3
    train_bytes, test_bytes = whole[:cut], whole[cut:]
    assert cut >= start and train_bytes.endswith(b"\n%\n")  # cut after a whole quotation
    for data, ds in ((train_bytes, train), (test_bytes, test)):
        x, y = ds.tensors
        assert len(ds) == (len(data) - 1) // 16 and x.shape == y.shape == (len(ds), 16)
        assert ds.tokens_per_sample == 16 and ds.vocab_size == 256
        for i in (0, len(ds) - 1):
            assert bytes(x[i].tolist()) == data[16 * i : 16 * i + 16]
            assert bytes(y[i].tolist()) == data[16 * i + 1 : 16 * i + 17]
    assert train.name == "fortunes/train"


def test_missing_and_unusable_corpora_say_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="adabatch data fetch fortunes"):
        load_text("fortunes", tmp_path)
    with pytest.raises(ValueError, match="unknown text corpus 'mnist'"):
        load_text("mnist", tmp_path)
    fake_fortunes(tmp_path)
    with pytest.raises(ValueError, match="shorter seq_len"):
        load_text("fortunes", tmp_path, split="test", seq_len=100_000)
    with pytest.raises(ValueError, match="held_out must be a fraction"):
        load_text("fortunes", tmp_path, held_out=1.5)


def test_the_gpt_is_causal_and_its_loss_is_the_token_mean() -> None:
    torch.manual_seed(0)
    model = GPT(vocab_size=32, seq_len=8, dim=16, heads=2, ff=32, layers=2)
    tokens = torch.randint(0, 32, (3, 8))
    logits = model(tokens)
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 32  # the future changes ...
    torch.testing.assert_close(model(changed)[:, :5], logits[:, :5])  # ... the past does not
    targets = torch.randint(0, 32, (3, 8))
    by_hand = torch.stack([
        -torch.log_softmax(logits[i, t], -1)[targets[i, t]] for i in range(3) for t in range(8)
    ]).mean()  # fmt: skip
    torch.testing.assert_close(next_token_loss(logits, targets), by_hand)
    with pytest.raises(ValueError, match="exceed the model's seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_the_hooks_engine_matches_the_oracle_on_the_gpt() -> None:
    torch.manual_seed(0)
    model = build_model("gpt", in_shape=(6,), num_classes=20, dim=8, heads=2, ff=16, layers=1)
    tokens = torch.randint(0, 20, (5, 6))
    check(model, tokens, torch.randint(0, 20, (5, 6)), loss=next_token_loss, allow_fallback=False)


def test_the_fortunes_bundle_trains_a_gpt_with_the_next_token_loss(tmp_path) -> None:
    """End to end through the experiments layer: loss, no accuracy, a growing batch."""
    import math

    from adabatch.experiments.build import build
    from adabatch.experiments.config import (
        Config,
        DataConfig,
        ModelConfig,
        OptimizerConfig,
        PolicyConfig,
        TrainConfig,
    )

    fake_fortunes(tmp_path)
    config = Config(
        data=DataConfig(name="fortunes", root=str(tmp_path), options={"seq_len": 16}),
        model=ModelConfig(name="gpt", options={"dim": 16, "heads": 2, "ff": 32, "layers": 1}),
        optimizer=OptimizerConfig(name="adamw", lr=3e-3),
        policy=PolicyConfig(
            name="sample-schedule",
            batch_size=8,
            lr_rule="sqrt",
            beta2_rule="half-life",
            # 1K tokens = 62.5 sequences of 16: the batch doubles after the 8th step.
            options={"thresholds": "0:8 1K:16", "unit": "tokens"},
        ),
        train=TrainConfig(epochs=2, eval_batch_size=64),
    )
    built = build(config)
    assert built.data.tokens_per_sample == 16 and built.data.num_classes == 256
    assert built.scheduler.policy.tokens_per_sample == 16  # filled in from the data
    trainer = built.trainer()
    result = trainer.fit(2)
    record = trainer.last_epoch_record
    assert math.isfinite(record["test_loss"]) and record["test_loss"] < math.log(256)
    assert record["test_accuracy"] is None  # next-token logits are not N × K class scores
    assert built.scheduler.batch_size == 16 and result.epochs == 2
    assert built.optimizer.param_groups[0]["betas"][1] == pytest.approx(0.999**2)
    assert record["tokens"] == record["samples"] * 16  # records count tokens on text data
    assert record["batch_tokens"] == 16 * 16
