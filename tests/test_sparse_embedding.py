"""AdaBatch for embedding tables: rescaled p.grad against per-sample loops and hand counts."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adabatch.sparse.embedding import AdaBatchEmbeddings, EmbeddingAggregation

V, D = 10, 3

# Tokens repeat within a sample (2 in sample 0, 3 in sample 1) and across samples.
X = torch.tensor([[1, 2, 2, 5], [2, 3, 3, 3], [5, 1, 7, 2]])
Y = torch.tensor([0, 1, 1])
# By hand: samples containing each token, and lookups of each token.
HAND_COUNTS = {
    "samples": [0, 2, 3, 1, 0, 2, 0, 1, 0, 0],
    "occurrences": [0, 2, 4, 3, 0, 2, 0, 1, 0, 0],
}
# Four samples for micro-batching.
X4 = torch.tensor([[1, 2, 2, 5], [2, 3, 3, 3], [5, 1, 7, 2], [9, 9, 1, 4]])
Y4 = torch.tensor([0, 1, 1, 0])


def assert_close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def dense(grad: Tensor) -> Tensor:
    return grad.to_dense() if grad.is_sparse else grad


class TokenModel(nn.Module):
    """Embedding(10, 3), mean over tokens, Linear(3, 2)."""

    def __init__(self, *, sparse: bool = False, padding_idx: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(V, D, sparse=sparse, padding_idx=padding_idx)
        self.head = nn.Linear(D, 2)
        self.double()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.emb(x).mean(1))


class TwoFields(nn.Module):
    """One table looked up twice per forward (two fields of the same samples)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.emb = nn.Embedding(V, D)
        self.head = nn.Linear(D, 2)
        self.double()

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:
        return self.head(self.emb(x[0]).mean(1) + 2 * self.emb(x[1]).mean(1))


class BagModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.emb = nn.EmbeddingBag(V, D, mode="mean")
        self.head = nn.Linear(D, 2)
        self.double()

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:
        return self.head(self.emb(x[0], x[1]))


def per_sample_sum(model: nn.Module, samples: list, y: Tensor) -> tuple[Tensor, Tensor]:
    """(Σᵢ ∇_W ℓᵢ over the embedding table, the batch-mean gradient of the head), by a loop."""
    total = torch.zeros_like(model.emb.weight)
    head = torch.zeros_like(model.head.weight)
    for i, x in enumerate(samples):
        model.zero_grad()
        F.cross_entropy(model(x), y[i : i + 1]).backward()
        total += dense(model.emb.weight.grad)
        head += model.head.weight.grad
    model.zero_grad()
    return total, head / len(samples)


def hand_aggregate(total: Tensor, counts: list[int]) -> Tensor:
    c = torch.tensor(counts, dtype=total.dtype).unsqueeze(1)
    return torch.where(c > 0, total / c.clamp(min=1), torch.zeros_like(total))


# ---------------------------------------------------------------------------------------------
# The rule against a hand computation.


@pytest.mark.parametrize("count", ["samples", "occurrences"])
@pytest.mark.parametrize("sparse", [False, True])
def test_mean_loss_matches_per_sample_loop_and_hand_counts(count: str, sparse: bool) -> None:
    reference = TokenModel(sparse=sparse)
    total, head = per_sample_sum(reference, [X[i : i + 1] for i in range(3)], Y)
    expected = hand_aggregate(total, HAND_COUNTS[count])

    model = TokenModel(sparse=sparse)
    agg = EmbeddingAggregation(model, count=count)
    F.cross_entropy(model(X), Y).backward()
    assert agg.counts(model.emb).tolist() == HAND_COUNTS[count]
    assert agg.samples(model.emb) == 3
    # The plain mean differs from the AdaBatch rows, so the comparison below can fail.
    assert not torch.allclose(dense(model.emb.weight.grad), expected, atol=1e-3)
    agg.apply()
    assert model.emb.weight.grad.is_sparse == sparse
    assert_close(dense(model.emb.weight.grad), expected)
    assert_close(model.head.weight.grad, head)  # other parameters keep the mean
    assert agg.counts(model.emb).sum() == 0  # apply consumed the counts


@pytest.mark.parametrize("count", ["samples", "occurrences"])
def test_sum_loss_divides_by_the_count_only(count: str) -> None:
    reference = TokenModel()
    total, _ = per_sample_sum(reference, [X[i : i + 1] for i in range(3)], Y)
    model = TokenModel()
    agg = EmbeddingAggregation(model.emb, loss_reduction="sum", count=count)
    F.cross_entropy(model(X), Y, reduction="sum").backward()
    agg.apply()
    assert_close(model.emb.weight.grad, hand_aggregate(total, HAND_COUNTS[count]))


def test_dense_and_sparse_gradients_agree() -> None:
    grads = []
    for sparse in (False, True):
        model = TokenModel(sparse=sparse)
        agg = EmbeddingAggregation(model)
        F.cross_entropy(model(X4), Y4).backward()
        agg.apply()
        grads.append(dense(model.emb.weight.grad))
    assert_close(grads[1], grads[0])


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("split", [2, 3])  # halves, and 3 + 1 samples
def test_micro_batches_equal_the_full_batch(sparse: bool, split: int) -> None:
    full = TokenModel(sparse=sparse)
    agg_full = EmbeddingAggregation(full)
    F.cross_entropy(full(X4), Y4).backward()
    agg_full.apply()

    micro = TokenModel(sparse=sparse)
    agg = EmbeddingAggregation(micro)
    for part in (slice(0, split), slice(split, 4)):
        weight = (part.stop - part.start) / 4
        (F.cross_entropy(micro(X4[part]), Y4[part]) * weight).backward()
    assert agg.samples(micro.emb) == 4  # inferred b: the micro-batches together
    agg.apply()
    assert_close(dense(micro.emb.weight.grad), dense(full.emb.weight.grad))


@pytest.mark.parametrize("count", ["samples", "occurrences"])
def test_table_looked_up_twice_per_forward(count: str) -> None:
    x1 = torch.tensor([[1, 2], [3, 3]])
    x2 = torch.tensor([[2, 4], [1, 1]])
    # samples: token 2 is in both fields of sample 0 and counts once for it.
    hand = {
        "samples": [0, 2, 1, 1, 1, 0, 0, 0, 0, 0],
        "occurrences": [0, 3, 2, 2, 1, 0, 0, 0, 0, 0],
    }[count]
    y = torch.tensor([1, 0])
    reference = TwoFields()
    total, _ = per_sample_sum(reference, [(x1[i : i + 1], x2[i : i + 1]) for i in range(2)], y)
    model = TwoFields()
    agg = EmbeddingAggregation(model, count=count)
    F.cross_entropy(model((x1, x2)), y).backward()
    assert agg.counts(model.emb).tolist() == hand
    agg.apply()
    assert_close(model.emb.weight.grad, hand_aggregate(total, hand))


@pytest.mark.parametrize("sparse", [False, True])
def test_padding_idx_is_not_counted(sparse: bool) -> None:
    x = torch.tensor([[0, 1, 1, 0], [2, 0, 0, 0], [1, 2, 3, 0]])
    hand = [0, 2, 2, 1, 0, 0, 0, 0, 0, 0]
    reference = TokenModel(sparse=sparse, padding_idx=0)
    total, _ = per_sample_sum(reference, [x[i : i + 1] for i in range(3)], Y)
    model = TokenModel(sparse=sparse, padding_idx=0)
    agg = EmbeddingAggregation(model)
    F.cross_entropy(model(x), Y).backward()
    assert agg.counts(model.emb).tolist() == hand
    agg.apply()
    grad = dense(model.emb.weight.grad)
    assert torch.all(grad[0] == 0)
    assert_close(grad, hand_aggregate(total, hand))


def test_embedding_bag_with_offsets() -> None:
    flat = torch.tensor([1, 2, 2, 5, 2, 3, 5, 1, 7])
    offsets = torch.tensor([0, 4, 6])
    bags = [flat[0:4], flat[4:6], flat[6:9]]
    hand = [0, 2, 2, 1, 0, 2, 0, 1, 0, 0]
    reference = BagModel()
    total, _ = per_sample_sum(reference, [(bag, torch.tensor([0])) for bag in bags], Y)
    model = BagModel()
    agg = EmbeddingAggregation(model)
    F.cross_entropy(model((flat, offsets)), Y).backward()
    assert agg.counts(model.emb).tolist() == hand
    assert agg.samples(model.emb) == 3
    agg.apply()
    assert_close(model.emb.weight.grad, hand_aggregate(total, hand))


# ---------------------------------------------------------------------------------------------
# What is counted, and when the counts restart.


def test_forward_passes_without_backward_are_not_counted() -> None:
    model = TokenModel()
    agg = EmbeddingAggregation(model)
    with torch.no_grad():
        model(X4)
    model(X4)  # gradients enabled, but no backward
    F.cross_entropy(model(X), Y).backward()
    assert agg.counts(model.emb).tolist() == HAND_COUNTS["samples"]
    assert agg.samples(model.emb) == 3


def test_counts_restart_after_zero_grad_set_to_none() -> None:
    model = TokenModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    agg = EmbeddingAggregation(model)
    F.cross_entropy(model(X4), Y4).backward()
    opt.zero_grad(set_to_none=True)  # e.g. a skipped step: the gradient is gone
    F.cross_entropy(model(X), Y).backward()
    assert agg.counts(model.emb).tolist() == HAND_COUNTS["samples"]
    agg.reset()
    assert agg.counts(model.emb).sum() == 0


def test_remove_stops_recording() -> None:
    model = TokenModel()
    agg = EmbeddingAggregation(model)
    agg.remove()
    F.cross_entropy(model(X), Y).backward()
    with pytest.raises(RuntimeError, match="no batch recorded"):
        agg.apply()


# ---------------------------------------------------------------------------------------------
# The optimizer option.


def _manual_sgd(lr: float) -> dict[str, Tensor]:
    """One SGD step by hand: embedding rows Σᵢ gᵢ / c_r, every other parameter the mean."""
    reference = TokenModel()
    total, _ = per_sample_sum(reference, [X[i : i + 1] for i in range(3)], Y)
    F.cross_entropy(reference(X), Y).backward()
    agg = hand_aggregate(total, HAND_COUNTS["samples"])
    with torch.no_grad():
        return {
            name: p - lr * (agg if name == "emb.weight" else p.grad)
            for name, p in reference.named_parameters()
        }


def test_wrapper_step_is_sgd_on_the_aggregated_gradient() -> None:
    expected = _manual_sgd(lr=0.5)
    model = TokenModel()
    opt = AdaBatchEmbeddings(torch.optim.SGD(model.parameters(), lr=0.5), model)
    opt.zero_grad()
    F.cross_entropy(model(X), Y).backward()
    opt.step()
    for name, p in model.named_parameters():
        assert_close(p.detach(), expected[name])
    with pytest.raises(RuntimeError, match="no batch recorded"):
        opt.step()  # the counts were consumed by the step


def test_wrapper_step_with_closure() -> None:
    expected = _manual_sgd(lr=0.5)
    model = TokenModel()
    opt = AdaBatchEmbeddings(torch.optim.SGD(model.parameters(), lr=0.5), model)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(X), Y)
        loss.backward()
        return loss

    assert torch.isfinite(opt.step(closure))
    assert_close(model.emb.weight.detach(), expected["emb.weight"])


def test_attach_runs_apply_before_each_step() -> None:
    expected = _manual_sgd(lr=0.5)
    model = TokenModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    handle = EmbeddingAggregation(model).attach(opt)
    F.cross_entropy(model(X), Y).backward()
    opt.step()
    for name, p in model.named_parameters():
        assert_close(p.detach(), expected[name])
    handle.remove()
    opt.step()  # no hook any more: no error for the missing batch


def test_state_dict_round_trip_mid_accumulation() -> None:
    def make() -> tuple[TokenModel, AdaBatchEmbeddings]:
        model = TokenModel()
        sgd = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
        return model, AdaBatchEmbeddings(sgd, model, count="occurrences")

    a, opt_a = make()
    opt_a.zero_grad()
    F.cross_entropy(a(X4), Y4).backward()
    opt_a.step()  # momentum buffers exist
    opt_a.zero_grad()
    (F.cross_entropy(a(X4[:2]), Y4[:2]) * 0.5).backward()  # first half of a batch

    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    b, opt_b = make()
    b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        pb.grad = pa.grad.clone()  # gradients are not part of a checkpoint
    assert opt_b.aggregation.counts(b.emb).tolist() == opt_a.aggregation.counts(a.emb).tolist()
    assert opt_b.aggregation.samples(b.emb) == 2

    for model, opt in ((a, opt_a), (b, opt_b)):
        (F.cross_entropy(model(X4[2:]), Y4[2:]) * 0.5).backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_bad_configuration() -> None:
    model = TokenModel()
    with pytest.raises(ValueError, match=r"count must be one of .*'tokens'"):
        EmbeddingAggregation(model, count="tokens")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"loss_reduction must be one of .*'avg'"):
        EmbeddingAggregation(model, loss_reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no nn\.Embedding or nn\.EmbeddingBag"):
        EmbeddingAggregation(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match=r"embeddings\[1\] must be an nn.Embedding.*Linear"):
        EmbeddingAggregation([model.emb, model.head])
    with pytest.raises(ValueError, match="scale_grad_by_freq=True"):
        EmbeddingAggregation(nn.Embedding(V, D, scale_grad_by_freq=True))
    with pytest.raises(ValueError, match="mode='max'"):
        EmbeddingAggregation(nn.EmbeddingBag(V, D, mode="max"))
    frozen = nn.Embedding(V, D)
    frozen.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        EmbeddingAggregation(frozen)
    with pytest.raises(ValueError, match="frozen"):
        EmbeddingAggregation(nn.Sequential(frozen))
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer, got list"):
        AdaBatchEmbeddings([], model)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not update the weight of embedding"):
        AdaBatchEmbeddings(torch.optim.SGD(model.head.parameters(), lr=0.1), model)


def test_step_without_a_recorded_batch() -> None:
    model = TokenModel()
    opt = AdaBatchEmbeddings(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(RuntimeError, match=r"no batch recorded .*loss.backward\(\)"):
        opt.step()
    with torch.no_grad():
        model(X)  # evaluation is not a batch
    with pytest.raises(RuntimeError, match="no batch recorded"):
        opt.step()


def test_zero_dim_indices_are_refused() -> None:
    emb = nn.Embedding(V, D)
    EmbeddingAggregation(emb)
    with pytest.raises(ValueError, match="0-d index tensor"):
        emb(torch.tensor(3))


def test_lookups_of_different_batch_sizes_in_one_backward() -> None:
    emb = nn.Embedding(V, D)
    a, b = torch.tensor([[1, 2], [3, 4]]), torch.tensor([1, 5, 6])
    agg = EmbeddingAggregation(emb)
    (emb(a).sum() + emb(b).sum()).backward()
    with pytest.raises(ValueError, match=r"different batch sizes \(dim 0: \[2, 3\]\)"):
        agg.apply()

    emb.weight.grad = None
    occ = EmbeddingAggregation(emb, count="occurrences")
    (emb(a).sum() + emb(b).sum()).backward()
    with pytest.raises(ValueError, match="cannot infer b"):
        occ.apply()
    (emb(a).sum() + emb(b).sum()).backward()
    grad = emb.weight.grad.clone()
    counts = occ.counts(emb)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        occ.apply(batch_size=0)
    occ.apply(batch_size=2)
    seen = counts > 0
    assert_close(emb.weight.grad[seen], grad[seen] * 2 / counts[seen].unsqueeze(1).to(grad.dtype))


def test_load_state_dict_checks_its_input() -> None:
    model = TokenModel()
    opt = AdaBatchEmbeddings(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(ValueError, match=r"bare optimizer state goes to wrapper\.optimizer"):
        opt.load_state_dict(opt.optimizer.state_dict())
    other = EmbeddingAggregation(TokenModel(), count="occurrences")
    with pytest.raises(ValueError, match="count='samples'"):
        other.load_state_dict(opt.aggregation.state_dict())
    bigger = EmbeddingAggregation(nn.Embedding(V + 1, D))
    with pytest.raises(ValueError, match=r"tables with \[10\] rows.*\[11\]"):
        bigger.load_state_dict(opt.aggregation.state_dict())
