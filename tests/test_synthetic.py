"""Synthetic generators: the documented laws, determinism, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from adabatch.datasets.synthetic import (
    ImageTeacher,
    balance_offsets,
    image_teacher,
    linear_teacher,
    sample_distinct,
    smooth_noise_images,
    sparse_teacher,
    synthetic_images,
    synthetic_logistic,
    synthetic_sparse,
    zipf_probabilities,
)

# --- logistic ---------------------------------------------------------------------------------


def test_logistic_shapes_and_metadata() -> None:
    ds = synthetic_logistic(300, 7)
    assert ds.inputs.shape == (300, 7) and ds.inputs.dtype == torch.float32
    assert ds.targets.dtype == torch.int64 and set(ds.targets.tolist()) <= {0, 1}
    assert ds.num_classes == 2 and ds.name == "synthetic-logistic"


def test_logistic_flip_rate_equals_noise() -> None:
    n, d = 40000, 32
    w = linear_teacher(d, seed=3, unit_norm=True)
    ds = synthetic_logistic(n, d, noise=0.1, seed=3)
    clean = (ds.inputs @ w > 0).long()
    rate = (ds.targets != clean).float().mean().item()
    assert abs(rate - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)
    assert abs(ds.targets.float().mean().item() - 0.5) < 0.02
    noiseless = synthetic_logistic(n, d, noise=0.0, seed=3)
    assert torch.equal(noiseless.targets, clean)


def test_logistic_teacher_is_standard_gaussian_direction() -> None:
    w = linear_teacher(4096, seed=1, unit_norm=True)
    assert abs(w.norm().item() - 1) < 1e-5
    raw = linear_teacher(4096, seed=1)
    assert abs(raw.pow(2).mean().item() - 1) < 0.1 and torch.allclose(raw / raw.norm(), w)


def test_logistic_determinism_and_seeds() -> None:
    a, b = synthetic_logistic(200, 5, seed=4), synthetic_logistic(200, 5, seed=4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    c = synthetic_logistic(200, 5, seed=5)
    assert not torch.equal(a.inputs, c.inputs)
    # The teacher and the samples come from different streams of one seed.
    w = linear_teacher(5, seed=4, unit_norm=True)
    assert not torch.allclose(a.inputs[0] / a.inputs[0].norm(), w)


def test_logistic_shared_and_explicit_teacher() -> None:
    test = synthetic_logistic(2000, 16, noise=0.0, seed=9, teacher=2)
    w = linear_teacher(16, seed=2, unit_norm=True)
    assert torch.equal(test.targets, (test.inputs @ w > 0).long())
    axis = torch.zeros(16)
    axis[3] = 1.0
    ds = synthetic_logistic(500, 16, noise=0.0, teacher=axis)
    assert torch.equal(ds.targets, (ds.inputs[:, 3] > 0).long())


def test_logistic_scale_scales_inputs_only() -> None:
    a = synthetic_logistic(100, 8, seed=1)
    b = synthetic_logistic(100, 8, seed=1, scale=0.25)
    assert torch.allclose(b.inputs, 0.25 * a.inputs) and torch.equal(a.targets, b.targets)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be an int >= 1, got 0"),
        ({"d": -3}, ValueError, "d must be an int >= 1, got -3"),
        ({"n": True}, ValueError, "n must be an int"),
        ({"noise": -0.1}, ValueError, r"noise .* \[0, 0.5\], got -0.1"),
        ({"noise": 0.7}, ValueError, "got 0.7"),
        ({"scale": 0.0}, ValueError, "scale must be a finite number > 0"),
        ({"seed": 1.5}, TypeError, "seed must be an int, got float"),
        ({"teacher": torch.zeros(3)}, ValueError, "vector of d = 512 weights, got shape"),
        ({"teacher": 2.0}, TypeError, "teacher must be an int seed, None or a Tensor, got float"),
    ],
)
def test_logistic_errors(kwargs, error, match) -> None:
    args = {"n": 10, "d": 512} | kwargs
    with pytest.raises(error, match=match):
        synthetic_logistic(**args)


# --- Zipf and sparse --------------------------------------------------------------------------


def test_zipf_probabilities_by_hand() -> None:
    expected = torch.tensor([6.0, 3.0, 2.0], dtype=torch.float64) / 11
    assert torch.allclose(zipf_probabilities(3, 1.0), expected)
    assert torch.allclose(zipf_probabilities(4, 0.0), torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="zipf_exponent must be a finite number >= 0, got -1"):
        zipf_probabilities(3, -1.0)


@pytest.mark.parametrize(("exponent", "k"), [(1.5, 3), (3.0, 5), (0.5, 4)])
def test_sample_distinct_matches_torch_multinomial(exponent, k) -> None:
    # The reference law: torch.multinomial without replacement, row by row.
    p = zipf_probabilities(8, exponent)
    n = 30000
    ours = sample_distinct(p, n, k, generator=torch.Generator().manual_seed(0))
    assert ours.shape == (n, k) and (ours[:, 1:] > ours[:, :-1]).all()
    ref = torch.multinomial(
        p.expand(n, 8), k, replacement=False, generator=torch.Generator().manual_seed(1)
    )
    inclusion = torch.bincount(ours.flatten(), minlength=8) / n
    expected = torch.bincount(ref.flatten(), minlength=8) / n
    assert (inclusion - expected).abs().max() < 0.02


def test_sample_distinct_edge_cases() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 1.0, 0.0, 3.0, 2.0])
    out = sample_distinct(p, 50, 3, generator=g)
    assert (out == torch.tensor([1, 3, 4])).all()  # all positive-weight columns, no others
    with pytest.raises(ValueError, match="cannot draw 4 distinct columns from 3"):
        sample_distinct(p, 5, 4, generator=g)
    # s = 10: p_j < 1e-16 beyond j ≈ 40, so those columns are unreachable in float64.
    with pytest.raises(ValueError, match="only 42 columns have a probability visible"):
        sample_distinct(zipf_probabilities(100, 10.0), 5, 45, generator=g)
    extreme = sample_distinct(zipf_probabilities(100, 10.0), 200, 42, generator=g)
    assert (extreme == torch.arange(42)).all()


@pytest.fixture(scope="module")
def sparse():
    return synthetic_sparse(20000, 2000, nnz_per_sample=10, zipf_exponent=1.0, seed=1)


def test_sparse_csr_structure(sparse) -> None:
    f = sparse.features
    assert f.layout == torch.sparse_csr and f.shape == (20000, 2000)
    assert torch.equal(f.crow_indices(), torch.arange(0, 200001, 10))  # 10 nonzeros per row
    cols = f.col_indices().view(20000, 10)
    assert (cols[:, 1:] > cols[:, :-1]).all()  # sorted, hence no duplicate in a row
    assert int(cols.min()) >= 0 and int(cols.max()) < 2000
    assert torch.allclose(f.values(), torch.full((200000,), 1 / math.sqrt(10)))
    assert sparse.num_classes == 2 and sparse.name == "synthetic-sparse"
    assert sparse.targets.dtype == torch.int64


def test_sparse_feature_frequencies_follow_the_power_law(sparse) -> None:
    counts = torch.bincount(sparse.features.col_indices(), minlength=2000).double()
    # Ranks 30..400: frequent enough to count (>= ~80 rows each), rare enough (k·p_j < 0.05)
    # not to saturate. Fit log f_j = a − s·log(j + 1).
    j = torch.arange(30, 400, dtype=torch.float64)
    x, y = torch.log(j + 1), torch.log(counts[30:400])
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert abs(slope.item() + 1.0) < 0.06
    # The head saturates: feature 0 is in most rows but not all.
    assert 0.5 < counts[0].item() / 20000 < 1.0


def test_sparse_steeper_exponent_gives_steeper_slope() -> None:
    ds = synthetic_sparse(20000, 1000, nnz_per_sample=5, zipf_exponent=1.5, seed=2)
    counts = torch.bincount(ds.features.col_indices(), minlength=1000).double()
    j = torch.arange(10, 120, dtype=torch.float64)
    x, y = torch.log(j + 1), torch.log(counts[10:120])
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert abs(slope.item() + 1.5) < 0.1


def test_sparse_labels_follow_the_teacher_with_flips(sparse) -> None:
    w, threshold = sparse_teacher(2000, nnz_per_sample=10, zipf_exponent=1.0, seed=1)
    assert torch.equal(w, linear_teacher(2000, seed=1))
    cols = sparse.features.col_indices().view(20000, 10)
    margin = w[cols].sum(1) / math.sqrt(10)
    clean = (margin > threshold).long()
    rate = (sparse.targets != clean).float().mean().item()
    assert abs(rate - 0.1) < 4 * math.sqrt(0.09 / 20000)
    # The calibrated threshold balances the classes; 0 would not (the head shifts margins).
    assert abs(clean.float().mean().item() - 0.5) < 0.02
    assert abs(sparse.targets.float().mean().item() - 0.5) < 0.02


def test_sparse_determinism_and_seeds() -> None:
    a = synthetic_sparse(500, 300, nnz_per_sample=4, seed=3)
    b = synthetic_sparse(500, 300, nnz_per_sample=4, seed=3)
    c = synthetic_sparse(500, 300, nnz_per_sample=4, seed=4)
    assert torch.equal(a.features.col_indices(), b.features.col_indices())
    assert torch.equal(a.targets, b.targets)
    assert not torch.equal(a.features.col_indices(), c.features.col_indices())
    shared = synthetic_sparse(500, 300, nnz_per_sample=4, seed=4, teacher=3, noise=0.0)
    cols = shared.features.col_indices().view(500, 4)
    w, threshold = sparse_teacher(300, nnz_per_sample=4, seed=3)
    assert torch.equal(shared.targets, (w[cols].sum(1) / 2 > threshold).long())
    axis = torch.zeros(300)
    axis[0] = 1.0  # an explicit teacher is used with threshold 0
    explicit = synthetic_sparse(500, 300, nnz_per_sample=4, seed=4, teacher=axis, noise=0.0)
    assert torch.equal(explicit.targets, (cols[:, 0] == 0).long())


def test_sparse_all_columns_when_nnz_equals_d() -> None:
    ds = synthetic_sparse(20, 6, nnz_per_sample=6, zipf_exponent=2.0)
    assert (ds.features.col_indices().view(20, 6) == torch.arange(6)).all()
    assert synthetic_sparse(4, 6, nnz_per_sample=2, dense=True).gather(torch.tensor([0]))[
        0
    ].shape == (1, 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an int >= 1, got 0"),
        ({"d": 0}, "d must be an int >= 1, got 0"),
        ({"nnz_per_sample": 0}, "nnz_per_sample must be an int >= 1, got 0"),
        ({"nnz_per_sample": 11}, "nnz_per_sample must be <= d, got 11 > 10"),
        ({"zipf_exponent": -0.5}, "zipf_exponent must be a finite number >= 0"),
        ({"noise": 0.51}, r"noise .* got 0.51"),
    ],
)
def test_sparse_errors(kwargs, match) -> None:
    args = {"n": 5, "d": 10, "nnz_per_sample": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        synthetic_sparse(**args)


# --- images -----------------------------------------------------------------------------------


def test_smooth_noise_has_unit_variance_and_the_documented_correlation() -> None:
    x = smooth_noise_images(
        400, channels=2, image_size=16, smoothing=1.5, generator=torch.Generator().manual_seed(0)
    )
    assert abs(x.mean().item()) < 0.05 and abs(x.var().item() - 1) < 0.05
    corr = (x[..., :, 1:] * x[..., :, :-1]).mean().item()  # neighbours one pixel apart
    assert abs(corr - math.exp(-1 / (4 * 1.5**2))) < 0.03
    white = smooth_noise_images(
        400, channels=1, image_size=16, smoothing=0.0, generator=torch.Generator().manual_seed(0)
    )
    assert abs((white[..., 1:] * white[..., :-1]).mean().item()) < 0.02


def test_balance_offsets_by_hand_and_on_skewed_logits() -> None:
    logits = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]])
    b = balance_offsets(logits)
    assert torch.allclose(b, torch.tensor([-1.25, 1.25]))
    assert (logits - b).argmax(1).tolist() == [0, 0, 1, 1]
    skewed = torch.randn(1003, 7, generator=torch.Generator().manual_seed(0)) + torch.arange(7.0)
    counts = torch.bincount((skewed - balance_offsets(skewed)).argmax(1), minlength=7)
    assert int(counts.min()) >= 1003 // 7 and int(counts.max()) <= 1003 // 7 + 1003 % 7
    with pytest.raises(ValueError, match="K >= 2 classes and m >= K rows"):
        balance_offsets(torch.zeros(3, 5))


@pytest.fixture(scope="module")
def teacher() -> ImageTeacher:
    # 16-pixel images keep the module fast; the slow test below covers 32 pixels.
    return image_teacher(seed=0, image_size=16)


@pytest.fixture(scope="module")
def image_sets(teacher):
    train = synthetic_images(3000, image_size=16, seed=1, teacher=teacher)
    return train, synthetic_images(1000, image_size=16, seed=2, teacher=teacher)


def test_images_shapes_labels_and_balance(image_sets, teacher) -> None:
    train, _ = image_sets
    assert train.inputs.shape == (3000, 3, 16, 16) and train.inputs.dtype == torch.float32
    assert train.targets.dtype == torch.int64 and train.num_classes == 10
    assert train.name == "synthetic-images"
    assert torch.equal(train.targets, teacher.logits(train.inputs).argmax(1))
    counts = torch.bincount(train.targets, minlength=10)
    assert int(counts.min()) > 0.7 * 300 and int(counts.max()) < 1.3 * 300
    full = synthetic_images(5, seed=1, teacher=teacher)  # the default 3 × 32 × 32
    assert full.inputs.shape == (5, 3, 32, 32)


def test_images_are_learnable_by_a_linear_model(image_sets) -> None:
    # Ridge regression on one-hot targets, in closed form: chance is 0.1.
    train, test = image_sets
    x, y = train.inputs.flatten(1).double(), torch.eye(10, dtype=torch.float64)[train.targets]
    weights = torch.linalg.solve(x.T @ x + 100.0 * torch.eye(x.shape[1]), x.T @ y)
    accuracy = ((test.inputs.flatten(1).double() @ weights).argmax(1) == test.targets).double()
    assert accuracy.mean() > 0.3


@pytest.mark.slow
def test_images_are_learnable_by_a_small_cnn() -> None:
    from adabatch.models.cnn import SmallCNN

    rule = image_teacher(seed=5)
    train = synthetic_images(8000, seed=1, teacher=rule)
    test = synthetic_images(2000, seed=2, teacher=rule)
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        x, y = train.gather(torch.randint(0, 8000, (128,), generator=g))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model(test.inputs).argmax(1) == test.targets).float().mean()
    assert accuracy > 0.5


def test_images_determinism_and_teacher_seeds() -> None:
    small = {"channels": 1, "image_size": 8, "num_classes": 3}
    a = synthetic_images(64, seed=3, **small)
    b = synthetic_images(64, seed=3, teacher=3, **small)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.targets, image_teacher(seed=3, **small)(a.inputs))
    c = synthetic_images(64, seed=4, teacher=3, **small)
    assert not torch.equal(a.inputs, c.inputs)
    d = synthetic_images(64, seed=3, teacher=4, **small)
    assert torch.equal(a.inputs, d.inputs) and not torch.equal(a.targets, d.targets)


def test_images_errors(teacher) -> None:
    with pytest.raises(ValueError, match="n must be an int >= 1, got -1"):
        synthetic_images(-1)
    with pytest.raises(ValueError, match="smoothing must be a finite number >= 0"):
        synthetic_images(4, smoothing=-1.0)
    with pytest.raises(ValueError, match="teacher takes 3 channels and has 10 classes"):
        synthetic_images(4, channels=1, teacher=teacher)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        synthetic_images(4, num_classes=1)
    with pytest.raises(TypeError, match="teacher must be an int seed, None or a ImageTeacher"):
        synthetic_images(4, teacher="cnn")
    with pytest.raises(ValueError, match="image_size must be an int >= 4, got 2"):
        smooth_noise_images(4, image_size=2, generator=torch.Generator())


def test_generators_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    synthetic_logistic(10, 4)
    synthetic_sparse(10, 20, nnz_per_sample=3)
    synthetic_images(2, channels=1, image_size=8, num_classes=2)
    assert torch.equal(torch.rand(3), expected)
