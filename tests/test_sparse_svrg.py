"""Mini-batch SVRG with AdaBatch aggregation (adabatch.sparse.variance_reduction)."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

from adabatch.sparse import column_counts, full_gradient, objective, signed_labels
from adabatch.sparse.variance_reduction import coverage_scaling, svrg, svrg_direction


def _derivative(loss, y, z):
    if loss == "logistic":
        return -y / (1.0 + np.exp(y * z))
    return z - y


def tiny_problem(n, loss, seed=0):
    """n rows, 7 columns: dense, single-row, two-row, empty, half, all-but-one, random."""
    rng = np.random.default_rng(seed)
    A = np.zeros((n, 7))
    A[:, 0] = rng.normal(size=n)
    A[2, 1] = 1.3
    A[[0, n - 1], 2] = rng.normal(size=2)
    A[: n // 2, 4] = rng.normal(size=n // 2)
    A[1:, 5] = rng.normal(size=n - 1)
    A[:, 6] = rng.normal(size=n) * (rng.random(n) < 0.5)
    X = sp.csr_matrix(A)
    y = rng.choice([-1.0, 1.0], n) if loss == "logistic" else rng.normal(size=n)
    w = rng.normal(size=7)
    w_snap = w + 0.7 * rng.normal(size=7)
    return X, y, w, w_snap


# --- coverage_scaling -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [6, 7, 8])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_coverage_scaling_matches_enumeration(n, b):
    counts = np.arange(n + 1)
    hits = np.zeros(n + 1)
    subsets = list(itertools.combinations(range(n), b))
    for S in subsets:
        for nj in counts:
            hits[nj] += any(r < nj for r in S)  # feature j lives in rows 0 .. nj−1
    expected = np.ones(n + 1)
    expected[1:] = hits[1:] / len(subsets) * n / counts[1:]
    np.testing.assert_allclose(coverage_scaling(counts, n, b), expected, rtol=1e-13, atol=0)


def test_coverage_scaling_exact_rationals_and_bounds():
    n, b = 1000, 37
    counts = np.array([0, 1, 2, 5, 36, 37, 38, 500, 962, 963, 964, 999, 1000])
    got = coverage_scaling(counts, n, b)
    for nj, g in zip(counts.tolist(), got.tolist(), strict=True):
        if nj == 0:
            assert g == 1.0
            continue
        miss = Fraction(math.comb(n - nj, b), math.comb(n, b))
        want = float((1 - miss) * n / nj)
        assert g == pytest.approx(want, rel=1e-13, abs=0)
    assert got[1] == pytest.approx(b, rel=1e-14)  # a single row: P = b/n exactly
    assert got[-1] == 1.0
    assert np.all(got >= 1 - 1e-15) and np.all(got <= b * (1 + 1e-15))
    # Large n: tiny probabilities keep their relative precision.
    big = coverage_scaling(np.array([1, 3]), 10**7, 2)
    np.testing.assert_allclose(big, [2.0, (1 - (1 - 3 / 1e7) * (1 - 3 / (1e7 - 1))) * 1e7 / 3])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.array([1, 2]), 5, 6), r"batch_size must be <= n = 5"),
        ((np.array([1, 2]), 5, 0), r"batch_size must be >= 1, got 0; use 1 for plain SVRG"),
        ((np.array([1, 7]), 5, 2), r"integers in \[0, n = 5\]"),
        ((np.array([1.5]), 5, 2), r"integers in \[0, n = 5\]"),
    ],
)
def test_coverage_scaling_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        coverage_scaling(*args)


# --- exact unbiasedness by enumerating every batch --------------------------------------------


def _all_directions(X, y, w, w_snap, mu, D, loss, b, rule, correction):
    n = X.shape[0]
    vs = [
        svrg_direction(X[list(S)], y[list(S)], w, w_snap, mu, D, loss, rule, correction)
        for S in itertools.combinations(range(n), b)
    ]
    return np.mean(vs, axis=0)


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize(("n", "b"), [(6, 2), (7, 3), (8, 2), (8, 3)])
def test_expected_direction_exact_over_all_batches(loss, n, b):
    X, y, w, w_snap = tiny_problem(n, loss, seed=n * 10 + b)
    mu = full_gradient(X, y, w_snap, loss)
    grad = full_gradient(X, y, w, loss)
    D = coverage_scaling(column_counts(X), n, b)
    assert D.min() == 1.0 and D.max() > 1.5  # rare features are scaled up
    pre = _all_directions(X, y, w, w_snap, mu, D, loss, b, "adabatch", "preconditioned")
    np.testing.assert_allclose(pre, D * grad, rtol=0, atol=1e-12)
    unb = _all_directions(X, y, w, w_snap, mu, D, loss, b, "adabatch", "unbiased")
    np.testing.assert_allclose(unb, grad, rtol=0, atol=1e-12)
    mean = _all_directions(X, y, w, w_snap, mu, D, loss, b, "mean", "preconditioned")
    np.testing.assert_allclose(mean, grad, rtol=0, atol=1e-12)
    # The test can fail: without D, AdaBatch's SVRG direction is biased.
    naive = _all_directions(X, y, w, w_snap, mu, np.ones(7), loss, b, "adabatch", "unbiased")
    assert np.abs(naive - grad).max() > 1e-3


def test_expected_direction_monte_carlo():
    rng = np.random.default_rng(7)
    n, d, b = 60, 30, 5
    # Zipf-like column frequencies: from every row to a single one.
    freq = np.clip(1.0 / (1 + np.arange(d)), 1.5 / n, 1)
    A = rng.normal(size=(n, d)) * (rng.random((n, d)) < freq)
    X = sp.csr_matrix(A)
    y = rng.choice([-1.0, 1.0], n)
    w, w_snap = rng.normal(size=d), rng.normal(size=d)
    mu = full_gradient(X, y, w_snap, "logistic")
    grad = full_gradient(X, y, w, "logistic")
    D = coverage_scaling(column_counts(X), n, b)
    draws = 3000
    for correction, target in (("preconditioned", D * grad), ("unbiased", grad)):
        vs = np.array(
            [
                svrg_direction(X[idx], y[idx], w, w_snap, mu, D, "logistic", "adabatch", correction)
                for idx in (rng.choice(n, b, replace=False) for _ in range(draws))
            ]
        )
        se = vs.std(axis=0) / math.sqrt(draws)
        assert np.all(np.abs(vs.mean(axis=0) - target) <= 5 * se + 1e-12), correction


def test_mean_rule_is_classical_svrg_direction():
    X, y, w, w_snap = tiny_problem(8, "logistic", seed=3)
    A = X.toarray()
    mu = full_gradient(X, y, w_snap, "logistic")
    B = [1, 4, 6]
    want = (
        sum(
            (_derivative("logistic", y[i], A[i] @ w) - _derivative("logistic", y[i], A[i] @ w_snap))
            * A[i]
            for i in B
        )
        / len(B)
        + mu
    )
    D = coverage_scaling(column_counts(X), 8, 3)
    for correction in ("preconditioned", "unbiased"):
        got = svrg_direction(X[B], y[B], w, w_snap, mu, D, "logistic", "mean", correction)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    ada = svrg_direction(X[B], y[B], w, w_snap, mu, D, "logistic", "adabatch", "unbiased")
    assert np.abs(ada - want).max() > 1e-3


def test_svrg_direction_zero_one_labels():
    X, y, w, w_snap = tiny_problem(6, "logistic")
    mu = full_gradient(X, y, w_snap, "logistic")
    D = coverage_scaling(column_counts(X), 6, 2)
    y01 = (y + 1) / 2
    B = [0, 3]
    np.testing.assert_array_equal(
        svrg_direction(X[B], y01[B], w, w_snap, mu, D),
        svrg_direction(X[B], y[B], w, w_snap, mu, D),
    )


# --- the solver against a dense loop ----------------------------------------------------------


def naive_svrg(X, y, *, loss, b, rule, correction, step, l2, epochs, inner, seed, at=None):
    """Dense loop; ``at`` (a dict) receives w after each step, keyed by samples touched."""
    n, d = X.shape
    ys = signed_labels(y, loss)
    D = coverage_scaling(column_counts(X), n, b)
    E = D if (rule == "adabatch" and correction == "preconditioned") else np.ones(d)
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    total = max(1, round(epochs * inner))
    done = samples = 0
    while done < total:
        w_snap = w.copy()
        mu = full_gradient(X, ys, w_snap, loss)
        samples += n
        for _ in range(min(inner, total - done)):
            B = rng.choice(n, size=b, replace=False)
            v = svrg_direction(X[B], ys[B], w, w_snap, mu, D, loss, rule, correction)
            w = w - step * (v + l2 * E * w)
            done += 1
            samples += b
            if at is not None:
                at[samples] = w
    return w


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize(
    ("rule", "correction"),
    [("adabatch", "preconditioned"), ("adabatch", "unbiased"), ("mean", "preconditioned")],
)
@pytest.mark.parametrize("l2", [0.0, 0.05])
@pytest.mark.parametrize("record_every", [None, 7])
def test_solver_matches_dense_loop(loss, rule, correction, l2, record_every):
    rng = np.random.default_rng(1)
    n, d = 20, 15
    A = rng.normal(size=(n, d)) * (rng.random((n, d)) < np.linspace(1, 0.06, d))
    X = sp.csr_matrix(A)
    y = rng.integers(0, 2, n) if loss == "logistic" else rng.normal(size=n)
    kw = dict(rule=rule, correction=correction, l2=l2, epochs=2.5, seed=4)
    got = svrg(
        X, y, loss=loss, batch_size=3, step_size=0.05, inner_steps=7, record_every=record_every,
        **kw,
    )  # fmt: skip
    at = {0: np.zeros(d)}
    want = naive_svrg(X, y, loss=loss, b=3, step=0.05, inner=7, at=at, **kw)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got.w, want, rtol=0, atol=1e-10)
    # The trace evaluates f at the iterate of its sample count (lazy coordinates caught up).
    ys = signed_labels(y, loss)
    for samples, value in zip(got.trace.samples, got.trace.loss, strict=True):
        assert value == pytest.approx(objective(X, ys, at[samples], loss, l2), rel=1e-12)
    # 18 inner steps (7 + 7 + 4) over 3 snapshots: 3·20 + 18·3 samples.
    assert got.trace.samples[-1] == 3 * 20 + 18 * 3
    if record_every is None:
        assert got.trace.samples == [0, 41, 82, 114]
    else:
        assert got.trace.samples[:4] == [0, 23, 29, 35]


# --- convergence ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strongly_convex():
    rng = np.random.default_rng(0)
    n, d, l2 = 200, 40, 0.01
    freq = np.clip(3.0 / (1 + np.arange(d)), 2.0 / n, 1)
    A = rng.normal(size=(n, d)) * (rng.random((n, d)) < freq)
    A /= np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    X = sp.csr_matrix(A)
    y = np.where(A @ rng.normal(size=d) * 3 + 0.3 * rng.normal(size=n) > 0, 1.0, -1.0)
    # f* by many full-gradient steps (L ≤ ¼‖A‖²/n + λ).
    L = 0.25 * np.linalg.norm(A, 2) ** 2 / n + l2
    w = np.zeros(d)
    for _ in range(20000):
        w -= full_gradient(X, y, w, "logistic", l2) / L
    assert np.linalg.norm(full_gradient(X, y, w, "logistic", l2)) < 1e-9
    return X, y, l2, objective(X, y, w, "logistic", l2)


@pytest.mark.parametrize(
    ("rule", "correction"),
    [("adabatch", "preconditioned"), ("adabatch", "unbiased"), ("mean", "preconditioned")],
)
def test_converges_to_the_optimum(strongly_convex, rule, correction):
    X, y, l2, f_star = strongly_convex
    res = svrg(
        X, y, batch_size=5, rule=rule, correction=correction, step_size=1.0, l2=l2, epochs=25,
        seed=0,
    )  # fmt: skip
    gap = res.trace.loss[-1] - f_star
    assert res.trace.loss[0] - f_star > 0.05
    assert -1e-12 <= gap < 1e-9, gap


# --- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "exc", "match"),
    [
        (dict(X=np.eye(10, 5)), TypeError, r"X must be a scipy.sparse CSR matrix"),
        (dict(y=np.zeros(11)), ValueError, r"X has 10 rows but y has shape \(11,\)"),
        (dict(batch_size=11), ValueError, r"batch_size must be <= n = 10"),
        (dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0; use 1 for plain SVRG"),
        (dict(step_size=0), ValueError, r"step_size must be a positive finite number; .*got 0"),
        (dict(epochs=-1), ValueError, r"epochs must be a positive .*outer iterations, got -1"),
        (dict(rule="median"), ValueError, r"rule must be one of .*; got 'median'"),
        (dict(correction="exact"), ValueError, r"correction must be .*'unbiased'; got 'exact'"),
        (dict(loss="hinge"), ValueError, r"loss must be one of .*; got 'hinge'"),
        (dict(l2=-1.0), ValueError, r"l2 must be a finite number >= 0, got -1.0"),
        (dict(l2=4.0, batch_size=4), ValueError, r"step_size·l2·max D must be < 1.*max D=3.33"),
        (dict(inner_steps=0), ValueError, r"inner_steps must be >= 1, got 0; pass the number"),
    ],
)
def test_bad_inputs(over, exc, match):
    rng = np.random.default_rng(0)
    kw = dict(
        X=sp.csr_matrix(np.diag(rng.normal(size=5)).repeat(2, axis=0)), y=rng.integers(0, 2, 10)
    )
    kw.update(step_size=0.1)
    kw.update(over)
    X, y = kw.pop("X"), kw.pop("y")
    with pytest.raises(exc, match=match):
        svrg(X, y, **kw)
