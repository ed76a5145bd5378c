"""Sequences of variable length and batch sizes in tokens.

The loss of a padded batch, its per-sequence gradients and their statistics are computed here
by hand (one sequence at a time), and so is every conversion of tokens to sequences.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _compare import check
from adabatch import AdaptiveLoader, BatchSizeScheduler, make_policy
from adabatch.data.micro import accumulate_gradients
from adabatch.datasets import ArrayDataset, load_text
from adabatch.datasets.text import IGNORE_INDEX, count_tokens, document_sequences
from adabatch.errors import ConfigError
from adabatch.experiments.config import (
    Config,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PolicyConfig,
    TrainConfig,
)
from adabatch.experiments.units import in_sequences, tokens_to_sequences
from adabatch.models import GPT, next_token_loss
from adabatch.stats import compute_stats
from adabatch.training import Callback, Trainer
from test_text_lm import fake_fortunes


def padded_batch(lengths: list[int], seq_len: int = 6, vocab: int = 11):
    """Random tokens; sequence i has ``lengths[i]`` real targets, the rest padding."""
    g = torch.Generator().manual_seed(sum(lengths))
    x = torch.randint(0, vocab, (len(lengths), seq_len), generator=g)
    y = torch.randint(0, vocab, (len(lengths), seq_len), generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
        y[i, n:] = IGNORE_INDEX
    return x, y


# ------------------------------------------------------------------------------ documents
def test_documents_are_one_padded_quotation_each(tmp_path) -> None:
    whole = fake_fortunes(tmp_path)
    ds = load_text("fortunes", tmp_path, split="train", seq_len=40, packing="documents")
    x, y = ds.tensors
    quotes = [q + b"\n%\n" for q in whole.split(b"\n%\n") if q][: len(ds)]
    for i in (0, 1, len(ds) - 1):
        q = quotes[i][:41]
        n = len(q) - 1
        assert bytes(x[i, :n].tolist()) == q[:-1] and bytes(y[i, :n].tolist()) == q[1:]
        assert (y[i, n:] == IGNORE_INDEX).all() and (x[i, n:] == 0).all()
    assert ds.tokens_per_sample == 40
    lengths = [min(len(q), 41) - 1 for q in quotes]
    assert len(set(lengths)) > 1 and max(lengths) < 40  # variable, padded
    assert count_tokens((x[:3], y[:3])) == sum(lengths[:3])
    with pytest.raises(ValueError, match="packing must be one of"):
        load_text("fortunes", tmp_path, packing="bags")
    with pytest.raises(ValueError, match="has no record"):
        document_sequences(b"", 4, b"\n%\n")


# ------------------------------------------------------------------------------ the loss
def test_padded_loss_sums_real_tokens_over_b_times_t() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    _, y = padded_batch([6, 2, 4])
    by_hand = sum(
        -torch.log_softmax(logits[i, t], -1)[y[i, t]]
        for i in range(3)
        for t in range(6)
        if y[i, t] != IGNORE_INDEX
    ) / (3 * 6)
    torch.testing.assert_close(next_token_loss(logits, y), by_hand)
    # no padding: the plain token mean
    full = torch.randint(0, 11, (3, 6))
    torch.testing.assert_close(
        next_token_loss(logits, full), F.cross_entropy(logits.flatten(0, 1), full.flatten())
    )


def _model() -> GPT:
    torch.manual_seed(1)
    return GPT(vocab_size=11, seq_len=6, dim=8, heads=2, ff=16, layers=1).double()


def _grad(model: GPT, loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.flatten() for g in grads])


def test_each_sequence_weighs_by_its_tokens_in_the_statistics() -> None:
    lengths = [6, 1, 3, 5]
    x, y = padded_batch(lengths)
    model = _model()
    # By hand: sᵢ = Σ real token losses of sequence i / T, alone through the model.
    per_seq = [_grad(model, next_token_loss(model(x[i : i + 1]), y[i : i + 1])) for i in range(4)]
    batch = _grad(model, next_token_loss(model(x), y))
    torch.testing.assert_close(batch, torch.stack(per_seq).mean(0))  # a mean over sequences
    # each gᵢ is Tᵢ/T times the gradient of the sequence's own token mean
    own_mean = _grad(model, F.cross_entropy(model(x[1:2]).flatten(0, 1), y[1].flatten()))
    torch.testing.assert_close(per_seq[1], own_mean * 1 / 6)
    stats = compute_stats(model, next_token_loss, x, y, engine="hooks")
    expected = sum(float(g.square().sum()) for g in per_seq)
    assert float(stats.sum_sq_norms) == pytest.approx(expected, rel=1e-9)
    # The batch token mean instead is not a mean over sequences: it depends on the batch.
    token_mean = _grad(model, F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    assert not torch.allclose(token_mean, torch.stack(per_seq).mean(0))
    torch.testing.assert_close(token_mean, batch * (4 * 6) / sum(lengths))  # the fill ratio


def test_padded_batches_match_the_reference_engine() -> None:
    x, y = padded_batch([6, 2, 4, 1, 3])
    check(_model(), x, y, loss=next_token_loss, allow_fallback=False)


def test_micro_batches_of_padded_sequences_are_exact() -> None:
    x, y = padded_batch([6, 1, 2, 5, 3])
    whole, micro = _model(), _model()
    next_token_loss(whole(x), y).backward()
    accumulate_gradients(lambda b: next_token_loss(micro(b[0]), b[1]), (x, y),
                         max_physical_batch_size=2)  # fmt: skip
    for a, b in zip(whole.parameters(), micro.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


class _Records(Callback):
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.model = None

    def on_record(self, trainer, record) -> None:
        self.records.append(dict(record))
        self.model = trainer.model


def test_the_trainer_counts_real_tokens() -> None:
    x, y = padded_batch([6, 1, 2, 5, 3, 4, 6, 2], seq_len=6)
    data = ArrayDataset(x, y, num_classes=11)
    model = GPT(vocab_size=11, seq_len=6, dim=8, heads=2, ff=16, layers=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = AdaptiveLoader(data, 3, seed=0)
    sched = BatchSizeScheduler(make_policy("constant", batch_size=3), loader, opt)
    probe = _Records()
    Trainer(model, opt, sched, loss_fn=next_token_loss, callbacks=[probe], log_every=1,
            eval_data=data, tokens_per_sample=6, count_tokens=count_tokens).fit(2)  # fmt: skip
    with pytest.raises(ValueError, match="count_tokens needs tokens_per_sample"):
        Trainer(model, opt, sched, loss_fn=next_token_loss, count_tokens=count_tokens)
    steps = [r for r in probe.records if r["kind"] == "step"]
    lengths = (y != IGNORE_INDEX).sum(1)
    # by hand: each step's batch is its sampler indices' real tokens
    assert sum(r["batch_tokens"] for r in steps) == 2 * int(lengths.sum())
    assert steps[-1]["tokens"] == 2 * int(lengths.sum())
    assert [r["tokens"] for r in steps] == list(
        torch.cumsum(torch.tensor([r["batch_tokens"] for r in steps]), 0).tolist()
    )
    assert any(r["batch_tokens"] != 3 * 6 for r in steps)  # not samples × T
    # the test loss is per real token: Σ token losses / Σ real tokens, by hand
    final = [r for r in probe.records if r["kind"] == "epoch"][-1]
    trainer_model = probe.model
    with torch.no_grad():
        logits = trainer_model(x)
    real = y != IGNORE_INDEX
    per_token = F.cross_entropy(logits[real], y[real])
    assert final["test_loss"] == pytest.approx(float(per_token), rel=1e-5)


# ------------------------------------------------------------------------------ units
def test_tokens_to_sequences() -> None:
    assert tokens_to_sequences(8192, 64, "policy.batch_size") == 128
    with pytest.raises(ConfigError, match=r"policy.batch_size=1000 tokens .* e\.g\. 960 or 1024"):
        tokens_to_sequences(1000, 64, "policy.batch_size")
    with pytest.raises(ConfigError, match=r"=32 tokens .* e\.g\. 64"):
        tokens_to_sequences(32, 64, "x")
    with pytest.raises(ConfigError, match="must be an integer number of tokens"):
        tokens_to_sequences(64.0, 64, "x")  # type: ignore[arg-type]


def _config(**policy) -> Config:
    return Config(
        data=DataConfig(name="fortunes", unit="tokens", options={"seq_len": 16}),
        policy=PolicyConfig(**policy),
        train=TrainConfig(eval_every=4096, max_physical_batch_size=512),
    )


def test_every_size_of_a_config_in_tokens() -> None:
    c = in_sequences(
        _config(
            name="sample-schedule",
            batch_size=256,
            options={"thresholds": "0:256 1M:1024", "max_batch_size": 2048},
        ),
        16,
    )
    assert c.policy.batch_size == 16
    assert c.policy.options == {"thresholds": ((0, 16), (1_000_000, 64)), "max_batch_size": 128,
                                "unit": "tokens", "tokens_per_sample": 16}  # fmt: skip
    assert (c.train.eval_every, c.train.max_physical_batch_size) == (256, 32)
    options = {"rampup": "256 128 2M", "max_batch_size": 4096}
    ramp = in_sequences(_config(name="sample-schedule", batch_size=256, options=options), 16)
    assert ramp.policy.options["rampup"] == (16, 8, 2_000_000)
    # samples: untouched
    plain = Config()
    assert in_sequences(plain, None) is plain
    with pytest.raises(ConfigError, match=r"data\.unit=tokens needs a text data set"):
        in_sequences(Config(data=DataConfig(unit="tokens")), None)
    with pytest.raises(ConfigError, match=r"policy.thresholds batch size at 1000000=1000 tokens"):
        in_sequences(_config(name="sample-schedule", batch_size=256,
                             options={"thresholds": "0:256 1M:1000"}), 16)  # fmt: skip


def test_a_run_in_tokens_end_to_end(tmp_path) -> None:
    from adabatch.experiments.build import build, describe

    fake_fortunes(tmp_path)
    config = Config(
        data=DataConfig(
            name="fortunes", root=str(tmp_path), unit="tokens", options={"seq_len": 16}
        ),
        model=ModelConfig(name="gpt", options={"dim": 16, "heads": 2, "ff": 32, "layers": 1}),
        optimizer=OptimizerConfig(name="adamw", lr=1e-3),
        policy=PolicyConfig(name="constant", batch_size=128),
        train=TrainConfig(epochs=1, eval_every=512, eval_batch_size=64, log_every=1),
    )
    built = build(config)
    assert built.loader.batch_size == 8 and built.config.policy.batch_size == 128
    assert "batch 128 tokens (8 sequences)" in describe(built)
    probe = _Records()
    built.trainer(callbacks=[probe]).fit(1)
    steps = [r for r in probe.records if r["kind"] == "step"]
    assert {r["batch_tokens"] for r in steps[:-1]} == {128}
    evals = [r for r in probe.records if r["kind"] == "eval"]
    assert evals and [r["evaluation"] for r in evals] == [r["tokens"] // 512 for r in evals]
    bad = Config(data=config.data, policy=PolicyConfig(batch_size=100), model=config.model)
    with pytest.raises(ConfigError, match=r"policy\.batch_size=100 tokens is not a whole number"):
        build(bad)


def test_evaluate_per_real_token_needs_both_arguments() -> None:
    from adabatch.training import evaluate

    x, y = padded_batch([6, 1, 3])
    data = ArrayDataset(x, y, num_classes=11)
    model = _model().float()
    with pytest.raises(ValueError, match="count_tokens and tokens_per_sample go together"):
        evaluate(model, data, next_token_loss, count_tokens=count_tokens)
    per_sample = evaluate(model, data, next_token_loss, batch_size=2)["test_loss"]
    per_token = evaluate(
        model, data, next_token_loss, batch_size=2, count_tokens=count_tokens, tokens_per_sample=6
    )["test_loss"]
    assert per_token == pytest.approx(per_sample * 3 * 6 / 10, rel=1e-6)  # 10 real tokens


def test_training_and_test_losses_are_both_per_real_token() -> None:
    """At lr = 0 on the evaluation data itself, the epoch's training loss is its test loss."""
    x, y = padded_batch([6, 1, 2, 5, 3, 4], seq_len=6)
    data = ArrayDataset(x, y, num_classes=11)
    torch.manual_seed(0)
    model = GPT(vocab_size=11, seq_len=6, dim=8, heads=2, ff=16, layers=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sched = BatchSizeScheduler(make_policy("constant", batch_size=4), AdaptiveLoader(data, 4), opt)
    probe = _Records()
    Trainer(model, opt, sched, loss_fn=next_token_loss, callbacks=[probe], eval_data=data,
            tokens_per_sample=6, count_tokens=count_tokens).fit(1)  # fmt: skip
    final = [r for r in probe.records if r["kind"] == "epoch"][-1]
    assert final["train_loss"] == pytest.approx(final["test_loss"], rel=1e-6)


def test_tokens_units_refuse_documents() -> None:
    config = Config(
        data=DataConfig(name="fortunes", unit="tokens", options={"packing": "documents"})
    )
    with pytest.raises(ConfigError, match=r"data\.unit=tokens needs sequences of one length"):
        in_sequences(config, 64)
