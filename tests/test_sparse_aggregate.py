"""`adabatch.sparse.aggregate` and the sparse losses against dense hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from adabatch.sparse import aggregate, column_counts, full_gradient, objective, signed_labels


def _dense_reference(dense: np.ndarray, coef: np.ndarray, rule: str) -> np.ndarray:
    """Loop over coordinates: Σᵢ coefᵢXᵢⱼ divided by b or by #{i : Xᵢⱼ ≠ 0}."""
    b, d = dense.shape
    out = np.zeros(d)
    for j in range(d):
        total = sum(coef[i] * dense[i, j] for i in range(b))
        count = sum(1 for i in range(b) if dense[i, j] != 0)
        if rule == "mean":
            out[j] = total / b
        elif count:
            out[j] = total / count
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rule", ["adabatch", "mean"])
def test_matches_dense_reference(seed: int, rule: str) -> None:
    rng = np.random.default_rng(seed)
    b, d = int(rng.integers(1, 9)), int(rng.integers(1, 15))
    dense = rng.normal(size=(b, d)) * (rng.random((b, d)) < 0.3)
    dense[:, 0] = 0.0  # an empty column
    coef = rng.normal(size=b)
    got = aggregate(sp.csr_matrix(dense), coef, rule=rule)
    np.testing.assert_allclose(got, _dense_reference(dense, coef, rule), rtol=1e-12, atol=1e-15)


def test_hand_computed_example() -> None:
    # rows: x0 = (1, 0, 2), x1 = (3, 0, 0); coef (1, -1)
    X = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]]))
    coef = np.array([1.0, -1.0])
    # column 0: (1 - 3) / 2 rows; column 1: never seen; column 2: 2 / 1 row
    np.testing.assert_array_equal(aggregate(X, coef), [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(aggregate(X, coef, rule="mean"), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(column_counts(X), [2, 0, 1])


def test_duplicates_are_summed_and_explicit_zeros_do_not_count() -> None:
    # Row 0 stores column 1 twice (1 + 2 = 3) and an explicit zero at column 2; row 1 stores
    # column 2 as 5 and -5 (a zero value) and column 0 as 4.
    data = np.array([1.0, 2.0, 0.0, 5.0, -5.0, 4.0])
    indices = np.array([1, 1, 2, 2, 2, 0])
    indptr = np.array([0, 3, 6])
    X = sp.csr_matrix((data, indices, indptr), shape=(2, 3))
    assert not X.has_canonical_format
    coef = np.array([2.0, 1.0])
    dense = np.array([[0.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    np.testing.assert_array_equal(column_counts(X), [1, 1, 0])
    np.testing.assert_allclose(aggregate(X, coef), _dense_reference(dense, coef, "adabatch"))
    np.testing.assert_allclose(
        aggregate(X, coef, rule="mean"), _dense_reference(dense, coef, "mean")
    )
    # the caller's matrix is left as it was
    np.testing.assert_array_equal(X.data, data)
    np.testing.assert_array_equal(X.indices, indices)


def test_dense_features_reduce_to_the_mean() -> None:
    rng = np.random.default_rng(1)
    dense = rng.uniform(0.5, 1.5, size=(7, 5))  # every entry non-zero
    coef = rng.normal(size=7)
    X = sp.csr_matrix(dense)
    np.testing.assert_allclose(aggregate(X, coef), aggregate(X, coef, rule="mean"), rtol=1e-14)


def test_a_feature_seen_once_takes_a_full_single_sample_step() -> None:
    X = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    coef = np.array([0.5, 1.0, 1.0, 1.0])
    d = aggregate(X, coef)
    assert d[1] == pytest.approx(0.5)  # the single-sample gradient, not 0.5 / 4
    assert aggregate(X, coef, rule="mean")[1] == pytest.approx(0.125)


def test_csr_array_and_float32_are_accepted() -> None:
    dense = np.array([[1.0, 0.0], [2.0, 3.0]], dtype=np.float32)
    got = aggregate(sp.csr_array(dense), [1.0, 1.0])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [1.5, 3.0])


def test_torch_sparse_csr_tensor_is_accepted() -> None:
    import torch

    dense = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    coef = np.array([1.0, -1.0])
    tensor = torch.tensor(dense).to_sparse_csr()
    np.testing.assert_array_equal(aggregate(tensor, coef), aggregate(sp.csr_matrix(dense), coef))
    np.testing.assert_array_equal(column_counts(tensor), [2, 0, 1])
    with pytest.raises(TypeError, match=r"CSR.*Tensor"):
        aggregate(torch.tensor(dense), coef)  # a dense tensor is refused, not densified


@pytest.mark.parametrize(
    ("X", "coef", "rule", "error", "match"),
    [
        (sp.csc_matrix(np.eye(2)), [1.0, 1.0], "adabatch", TypeError, "CSR.*'csc'.*tocsr"),
        (np.eye(2), [1.0, 1.0], "adabatch", TypeError, "CSR.*ndarray"),
        (sp.csr_matrix(np.eye(2)), [1.0], "adabatch", ValueError, r"expected shape \(2,\)"),
        (sp.csr_matrix(np.eye(2)), [[1.0, 1.0]], "adabatch", ValueError, "one factor per row"),
        (sp.csr_matrix(np.eye(2)), [1.0, np.nan], "adabatch", ValueError, "finite.*nan.*row 1"),
        (sp.csr_matrix((0, 3)), [], "adabatch", ValueError, "empty batch"),
        (sp.csr_matrix(np.eye(2)), [1.0, 1.0], "sum", ValueError, "rule .*'adabatch'.*got 'sum'"),
    ],
)
def test_bad_input(X, coef, rule, error, match) -> None:
    with pytest.raises(error, match=match):
        aggregate(X, coef, rule=rule)


# ---------------------------------------------------------------------- losses


def test_logistic_objective_and_gradient_against_formulas() -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(6, 4)) * (rng.random((6, 4)) < 0.6)
    y = signed_labels(rng.integers(0, 2, size=6), "logistic")
    assert set(y.tolist()) <= {-1.0, 1.0}
    w = rng.normal(size=4)
    l2 = 0.3
    z = dense @ w
    expected = np.mean(np.log1p(np.exp(-y * z))) + 0.5 * l2 * w @ w
    assert objective(sp.csr_matrix(dense), y, w, "logistic", l2) == pytest.approx(expected)
    coef = -y / (1 + np.exp(y * z))
    grad = dense.T @ coef / 6 + l2 * w
    np.testing.assert_allclose(full_gradient(sp.csr_matrix(dense), y, w, "logistic", l2), grad)
    # the gradient is the derivative of the objective
    eps = 1e-6
    for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        numeric = (
            objective(sp.csr_matrix(dense), y, w + e, "logistic", l2)
            - objective(sp.csr_matrix(dense), y, w - e, "logistic", l2)
        ) / (2 * eps)
        assert numeric == pytest.approx(grad[j], rel=1e-5, abs=1e-8)


def test_logistic_is_stable_for_large_margins() -> None:
    X = sp.csr_matrix(np.array([[1.0], [1.0]]))
    y = np.array([1.0, -1.0])
    w = np.array([1000.0])
    assert objective(X, y, w, "logistic") == pytest.approx(500.0)  # (0 + 1000) / 2
    np.testing.assert_allclose(full_gradient(X, y, w, "logistic"), [0.5])


def test_squared_loss() -> None:
    X = sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 1.0]]))
    y = signed_labels([1.0, 3.5], "squared")
    w = np.array([1.0, 1.0])
    # residuals z - y = (2, -2.5)
    assert objective(X, y, w, "squared") == pytest.approx((4 + 6.25) / 4)
    np.testing.assert_allclose(full_gradient(X, y, w, "squared"), [1.0, (4 - 2.5) / 2])


def test_bad_labels_and_losses() -> None:
    with pytest.raises(ValueError, match="0/1 or -1/\\+1"):
        signed_labels([0, 1, 2], "logistic")
    with pytest.raises(ValueError, match="loss must be one of 'logistic', 'squared'; got 'hinge'"):
        signed_labels([0, 1], "hinge")
    with pytest.raises(ValueError, match="finite"):
        signed_labels([0.0, np.nan], "squared")
