"""Sparse mini-batch SGD with AdaBatch / mean aggregation (adabatch.sparse.sequential)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from adabatch.datasets.synthetic.sparse import synthetic_sparse
from adabatch.sparse import sequential as sgd_module
from adabatch.sparse.scipy_bridge import to_scipy
from adabatch.sparse.sequential import DivergenceError, sgd

# --- an independent dense reference -----------------------------------------------------------


def _derivative(loss, y, z):
    if loss == "logistic":
        return -y / (1.0 + np.exp(y * z))
    return z - y


def _signed(loss, y):
    y = np.asarray(y, dtype=float)
    if loss == "logistic" and set(np.unique(y)) <= {0.0, 1.0}:
        return 2 * y - 1
    return y


def naive_sgd(X, y, *, loss, b, rule, step, l2=0.0, epochs=1.0, seed=0, scale_step=False, at=None):
    """Dense, one row at a time: the textbook form of the update, on X.toarray().

    ``at`` (a dict) receives w after each step, keyed by the samples processed.
    """
    A = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=float)
    y = _signed(loss, y)
    n, d = A.shape
    w = np.zeros(d)
    rng = np.random.default_rng(seed)
    total = max(1, round(epochs * n))
    done = 0
    while done < total:
        order = rng.permutation(n)
        stop = min(n, total - done)
        for start in range(0, stop, b):
            B = order[start : min(start + b, stop)]
            g = np.zeros(d)
            counts = np.zeros(d)
            for i in B:
                g += _derivative(loss, y[i], A[i] @ w) * A[i]
                counts += A[i] != 0
            if rule == "adabatch":
                direction = np.where(counts > 0, g / np.maximum(counts, 1), 0.0)
                gamma = step
            else:
                direction = g / len(B)
                gamma = step * len(B) if scale_step else step
            w = w - gamma * (direction + l2 * w)
            done += len(B)
            if at is not None:
                at[done] = w
    return w


def random_problem(n=23, d=12, density=0.3, seed=0, loss="logistic"):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=float)
    X.data = rng.normal(size=X.nnz)
    # A dense column and a feature of a single row, so counts range from 1 to n.
    dense = X.toarray()
    dense[:, 0] = rng.normal(size=n)
    dense[:, 1] = 0.0
    dense[3, 1] = 1.5
    X = sp.csr_matrix(dense)
    y = rng.integers(0, 2, size=n) if loss == "logistic" else rng.normal(size=n)
    return X, y


# --- exactness against the reference ----------------------------------------------------------


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize(
    ("rule", "b", "scale_step"),
    [
        ("adabatch", 1, False),
        ("adabatch", 4, False),
        ("adabatch", 7, False),
        ("mean", 4, False),
        ("mean", 4, True),
        ("mean", 23, True),
    ],
)
@pytest.mark.parametrize("l2", [0.0, 0.03])
def test_matches_dense_reference(loss, rule, b, scale_step, l2):
    X, y = random_problem(loss=loss)
    step = 0.05 if scale_step else 0.2
    got = sgd(
        X,
        y,
        loss=loss,
        batch_size=b,
        rule=rule,
        step_size=step,
        l2=l2,
        epochs=2.5,
        seed=3,
        scale_step=scale_step,
    )
    want = naive_sgd(
        X, y, loss=loss, b=b, rule=rule, step=step, l2=l2, epochs=2.5, seed=3, scale_step=scale_step
    )
    assert np.abs(want).max() > 1e-2  # the run moved
    np.testing.assert_allclose(got.w, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("b", [1, 4])
def test_trace_records_the_iterate_of_its_sample_count(b):
    # With l2 > 0 the recorded w is a·v (the scale trick), which must be the true iterate.
    X, y = random_problem(loss="squared")
    at = {0: np.zeros(X.shape[1])}
    naive_sgd(X, y, loss="squared", b=b, rule="adabatch", step=0.1, l2=0.3, epochs=3, at=at)
    res = sgd(X, y, loss="squared", batch_size=b, step_size=0.1, l2=0.3, epochs=3, record_every=10)
    assert len(res.trace.samples) >= 8 and res.trace.samples[-1] == 69
    for samples, value in zip(res.trace.samples, res.trace.loss, strict=True):
        Xd = X.toarray()
        want = 0.5 * np.mean((Xd @ at[samples] - y) ** 2) + 0.15 * at[samples] @ at[samples]
        assert value == pytest.approx(want, rel=1e-12)


def test_adabatch_differs_from_mean_on_overlapping_batches():
    # Not a tautology: the two rules must disagree once batches share some features.
    X, y = random_problem()
    a = sgd(X, y, batch_size=4, rule="adabatch", step_size=0.2, seed=1).w
    m = sgd(X, y, batch_size=4, rule="mean", step_size=0.2, seed=1).w
    assert np.abs(a - m).max() > 1e-3


def test_batch_size_one_rules_coincide_exactly():
    X, y = random_problem(n=40, d=15)
    runs = [
        sgd(X, y, batch_size=1, rule="adabatch", step_size=0.3, l2=0.01, epochs=2, seed=5).w,
        sgd(X, y, batch_size=1, rule="mean", step_size=0.3, l2=0.01, epochs=2, seed=5).w,
        sgd(
            X,
            y,
            batch_size=1,
            rule="mean",
            scale_step=True,
            step_size=0.3,
            l2=0.01,
            epochs=2,
            seed=5,
        ).w,
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    # ... and it is plain SGD.
    want = naive_sgd(X, y, loss="logistic", b=1, rule="mean", step=0.3, l2=0.01, epochs=2, seed=5)
    np.testing.assert_allclose(runs[0], want, rtol=0, atol=1e-12)


# --- each sample exactly once per epoch -------------------------------------------------------


@pytest.mark.parametrize("b", [1, 3, 4, 10, 50])
@pytest.mark.parametrize(("epochs", "visits"), [(1, [1]), (2, [2]), (2.5, [2, 3]), (0.3, [0, 1])])
def test_each_sample_once_per_epoch(b, epochs, visits):
    # One-hot rows, squared loss, step 1/2: every visit of sample j halves w_j − y_j (AdaBatch
    # divides by cⱼ = 1), so w_j = y_j·(1 − 2^(−visits_j)) counts the visits of every sample.
    n = 10
    X = sp.identity(n, format="csr")
    y = np.arange(1.0, n + 1)
    w = sgd(X, y, loss="squared", batch_size=b, rule="adabatch", step_size=0.5, epochs=epochs).w
    k = np.log2(1 / (1 - w / y))
    k = np.where(w == 0, 0.0, k)
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    k = np.round(k).astype(int)
    assert sorted(set(k.tolist())) == visits
    assert k.sum() == round(epochs * n)


# --- the L2 scale trick -----------------------------------------------------------------------


@pytest.mark.parametrize("renorm_below", [None, 0.9, 1.0 - 1e-12])
@pytest.mark.parametrize("b", [1, 5])
def test_l2_scale_trick_matches_dense_decay(monkeypatch, renorm_below, b):
    # γλ = 0.2: the scale a passes 1e-8 after ~83 steps, so the default threshold renormalises
    # a few times in 300 steps; 0.9 and 1 − 1e-12 renormalise at (nearly) every step.
    if renorm_below is not None:
        monkeypatch.setattr(sgd_module, "_RENORM_BELOW", renorm_below)
    X, y = random_problem(n=30, d=12, loss="squared")
    kwargs = dict(loss="squared", rule="adabatch", step=0.2, l2=1.0, epochs=10 * b, seed=2)
    want = naive_sgd(X, y, b=b, **kwargs)
    got = sgd(
        X, y, loss="squared", batch_size=b, rule="adabatch", step_size=0.2, l2=1.0, epochs=10 * b,
        seed=2,
    ).w  # fmt: skip
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_l2_decay_is_per_step_and_not_divided_by_counts():
    # All-zero rows: every data gradient and count is 0, so only the decay acts, once per step
    # (12 rows in batches of 5: 3 steps), at the full rate γλ whatever the batch size.
    w0 = np.linspace(-1, 1, 6)
    Z = sp.csr_matrix((12, 6))
    for rule in ("adabatch", "mean"):
        res = sgd(
            Z, np.zeros(12), loss="squared", rule=rule, batch_size=5, step_size=0.1, l2=0.5, w0=w0
        )
        np.testing.assert_allclose(res.w, w0 * (1 - 0.05) ** 3, rtol=1e-14)


# --- step-size scaling for mean aggregation ---------------------------------------------------


def test_scale_step_multiplies_the_step_by_b():
    X, y = random_problem(n=24, d=10)
    scaled = sgd(X, y, batch_size=6, rule="mean", scale_step=True, step_size=0.05, epochs=2).w
    plain = sgd(X, y, batch_size=6, rule="mean", step_size=0.05 * 6, epochs=2).w
    np.testing.assert_allclose(scaled, plain, rtol=0, atol=1e-14)
    unscaled = sgd(X, y, batch_size=6, rule="mean", step_size=0.05, epochs=2).w
    assert np.abs(scaled - unscaled).max() > 1e-3


def test_scaled_mean_equals_adabatch_on_disjoint_supports():
    # Rows with disjoint supports: every cⱼ is 0 or 1, so AdaBatch's Σ/c is the plain sum, which
    # is mean aggregation at step γ·b — including the partial last batch (10 = 4 + 4 + 2).
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(np.diag(rng.normal(size=10)))
    y = rng.integers(0, 2, 10)
    ada = sgd(X, y, batch_size=4, rule="adabatch", step_size=0.3, epochs=3).w
    mean = sgd(X, y, batch_size=4, rule="mean", scale_step=True, step_size=0.3, epochs=3).w
    np.testing.assert_allclose(ada, mean, rtol=0, atol=1e-14)


# --- inputs -----------------------------------------------------------------------------------


def test_stored_zeros_unsorted_rows_and_float32_without_mutating_x():
    X, y = random_problem()
    X32 = X.astype(np.float32)
    # Prepend to row 0 an explicit zero in a column that row does not hold: the row is then
    # unsorted (non-canonical) and the zero must not count as an occurrence.
    col = int(np.flatnonzero(X32.toarray()[0] == 0)[-1])
    indptr = X32.indptr + 1
    indptr[0] = 0
    Xz = sp.csr_matrix(
        (
            np.concatenate([[0], X32.data]).astype(np.float32),
            np.concatenate([[col], X32.indices]),
            indptr,
        ),
        shape=X32.shape,
    )
    before = (Xz.data.copy(), Xz.indices.copy(), Xz.indptr.copy())
    got = sgd(Xz, y, batch_size=5, step_size=0.2, epochs=2).w
    want = naive_sgd(
        X32.astype(float), y, loss="logistic", b=5, rule="adabatch", step=0.2, epochs=2
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    for a, b in zip(before, (Xz.data, Xz.indices, Xz.indptr), strict=True):
        np.testing.assert_array_equal(a, b)


def _args(**over):
    X, y = random_problem(n=10, d=5)
    kw = dict(X=X, y=y, step_size=0.1)
    kw.update(over)
    return kw


@pytest.mark.parametrize(
    ("over", "exc", "match"),
    [
        (dict(X=np.eye(10, 5)), TypeError, r"X must be a scipy.sparse CSR matrix.*got ndarray"),
        (dict(X=sp.coo_matrix(np.eye(10, 5))), TypeError, r"'coo'.*tocsr"),
        (dict(y=np.zeros(9)), ValueError, r"X has 10 rows but y has shape \(9,\)"),
        (dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0; use 1 for plain SGD"),
        (dict(batch_size=2.5), TypeError, r"batch_size must be an integer, got float 2.5; use 1"),
        (dict(batch_size=True), TypeError, r"batch_size must be an integer, got bool True"),
        (dict(step_size="big"), TypeError, r"step_size must be a number, got str 'big'; pass"),
        (dict(step_size=0.0), ValueError, r"step_size must be a positive finite number; .*got 0.0"),
        (dict(step_size=-1), ValueError, r"step_size must be a positive finite number; .*got -1"),
        (dict(step_size=math.nan), ValueError, r"step_size must be a positive .*, got nan"),
        (dict(step_size=math.inf), ValueError, r"step_size .* got inf"),
        (dict(epochs=0), ValueError, r"epochs must be a positive finite number; .*got 0"),
        (dict(rule="sum"), ValueError, r"rule must be one of 'adabatch', 'mean'; got 'sum'"),
        (dict(loss="hinge"), ValueError, r"loss must be one of 'logistic', 'squared'; got 'hinge'"),
        (dict(l2=-0.1), ValueError, r"l2 must be a finite number >= 0, got -0.1"),
        (dict(l2=20.0), ValueError, r"step_size·l2 must be < 1"),
        (dict(scale_step=True), ValueError, r"scale_step=True applies to rule='mean' only"),
        (dict(w0=np.zeros(4)), ValueError, r"w0 must be a vector of length d = 5"),
        (dict(record_every=0), ValueError, r"record_every must be >= 1, got 0; it is a number"),
        (dict(y=np.arange(10)), ValueError, r"logistic labels must be 0/1 or -1/\+1"),
        (dict(X_test=sp.csr_matrix((3, 5))), ValueError, r"pass X_test and y_test together"),
    ],
)
def test_bad_inputs(over, exc, match):
    kw = _args(**over)
    X, y = kw.pop("X"), kw.pop("y")
    with pytest.raises(exc, match=match):
        sgd(X, y, **kw)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_divergence_names_the_step_size():
    X, y = random_problem(n=30, d=8, loss="squared")
    with pytest.raises(DivergenceError, match=r"step_size=50.*lower the step size"):
        sgd(X, y * 100, loss="squared", batch_size=3, step_size=50.0, epochs=50)
    assert issubclass(DivergenceError, FloatingPointError)


# --- on the synthetic sparse problem ----------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    train = to_scipy(synthetic_sparse(2000, 500, nnz_per_sample=10, zipf_exponent=1.0, seed=0))
    test = to_scipy(synthetic_sparse(500, 500, nnz_per_sample=10, seed=1, teacher=0))
    return train, test


def test_to_scipy_round_trip():
    ds = synthetic_sparse(50, 20, nnz_per_sample=4, seed=3)
    X, y = to_scipy(ds)
    assert sp.isspmatrix_csr(X) and X.shape == (50, 20) and X.dtype == np.float32
    np.testing.assert_array_equal(X.toarray(), ds.features.to_dense().numpy())
    np.testing.assert_array_equal(y, ds.targets.numpy())
    X.data[:] = 7  # a copy, not a view of the tensors
    assert float(ds.features.values()[0]) != 7
    with pytest.raises(TypeError, match="SparseDataset"):
        to_scipy(object())


@pytest.mark.parametrize(
    ("rule", "b", "scale_step"),
    [("adabatch", 1, False), ("adabatch", 16, False), ("mean", 16, True)],
)
def test_loss_decreases_on_synthetic_sparse(synthetic, rule, b, scale_step):
    (X, y), (Xt, yt) = synthetic
    step = 1.0 / b if scale_step else 1.0
    res = sgd(
        X, y, batch_size=b, rule=rule, step_size=step, scale_step=scale_step, epochs=2,
        record_every=1000, X_test=Xt, y_test=yt, l2=1e-4,
    )  # fmt: skip
    tr = res.trace
    # Records at the first batch boundary past each multiple of 1000 (b divides n = 2000).
    assert tr.samples == ([0, 1000, 2000, 3000, 4000] if b == 1 else [0, 1008, 2000, 3008, 4000])
    assert tr.loss[0] == pytest.approx(math.log(2))
    assert tr.loss[-1] < 0.9 * math.log(2)
    assert all(b_ <= a_ + 1e-3 for a_, b_ in zip(tr.loss, tr.loss[1:], strict=False))
    assert tr.test_error[-1] < 0.4
    assert len(tr.time) == 5 and all(t >= 0 for t in tr.time)


def test_adabatch_beats_mean_per_sample_at_large_batch(synthetic):
    # The paper's claim in its simplest form: at b = 64 and the single-sample step, AdaBatch
    # keeps more of SGD's progress per sample than averaging (rare features move b× less).
    (X, y), _ = synthetic
    ada = sgd(X, y, batch_size=64, rule="adabatch", step_size=1.0, epochs=2)
    mean = sgd(X, y, batch_size=64, rule="mean", step_size=1.0, epochs=2)
    assert ada.trace.loss[-1] < mean.trace.loss[-1]
