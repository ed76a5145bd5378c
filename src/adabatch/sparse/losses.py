"""Losses of sparse linear models: f(w) = (1/n) Σᵢ φ(yᵢ, xᵢᵀw) + (λ/2)‖w‖².

Sample i's data gradient is φ′(yᵢ, zᵢ)·xᵢ with zᵢ = xᵢᵀw: a factor (its *coefficient*) times the
sparse row, which is what `adabatch.sparse.aggregate` takes.

* ``logistic``: labels y ∈ {−1, +1} (0/1 labels are mapped to −1/+1), φ(y, z) = log(1 + e^(−yz)),
  φ′ = −y·σ(−yz), computed without overflow for large |z|.
* ``squared``: real targets, φ(y, z) = ½(z − y)², φ′ = z − y.

The L2 term is not a per-sample gradient: it is dense and the same for every sample, so the
solvers apply it as its own term λw (a multiplicative decay of w), never divided by counts.
"""

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .._validate import check_choice
from .aggregate import require_csr

__all__ = ["LOSSES", "Loss", "full_gradient", "get_loss", "objective", "signed_labels"]


def _logistic_value(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, -y * z)


def _logistic_derivative(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    # −y·σ(−yz) = −y / (1 + e^(yz)); exp(−logaddexp(0, yz)) never overflows.
    return -y * np.exp(-np.logaddexp(0.0, y * z))


def _squared_value(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return 0.5 * (z - y) ** 2


def _squared_derivative(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return z - y


@dataclasses.dataclass(frozen=True)
class Loss:
    """A per-sample loss φ(y, z) of a linear model and its derivative in z."""

    name: str
    value: Callable[[np.ndarray, np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray, np.ndarray], np.ndarray]
    #: Smoothness of φ in z (L with |φ″| ≤ L): 1/4 logistic, 1 squared; a safe single-sample
    #: step is about 1/(L·max‖xᵢ‖²).
    smoothness: float


LOSSES: dict[str, Loss] = {
    "logistic": Loss("logistic", _logistic_value, _logistic_derivative, 0.25),
    "squared": Loss("squared", _squared_value, _squared_derivative, 1.0),
}


def get_loss(loss: str | Loss) -> Loss:
    """The `Loss` called ``loss`` (error listing the valid names)."""
    if isinstance(loss, Loss):
        return loss
    return LOSSES[check_choice("loss", loss, LOSSES, hint="; or pass a Loss")]


def signed_labels(y: Any, loss: str | Loss) -> np.ndarray:
    """Targets as float64; for the logistic loss, 0/1 labels become −1/+1.

    Raises:
        ValueError: logistic labels other than {0, 1} or {−1, +1}; non-finite targets.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise ValueError("targets must be finite")
    if get_loss(loss).name == "logistic":
        values = set(np.unique(y).tolist())
        if values <= {0.0, 1.0}:
            return 2.0 * y - 1.0
        if not values <= {-1.0, 1.0}:
            raise ValueError(
                f"logistic labels must be 0/1 or -1/+1, got values {sorted(values)[:5]}"
            )
    return y


def objective(X: Any, y: np.ndarray, w: np.ndarray, loss: str | Loss, l2: float = 0.0) -> float:
    """f(w) = mean φ(yᵢ, xᵢᵀw) + (λ/2)‖w‖² (``y`` as returned by `signed_labels`)."""
    X = require_csr(X)
    z = np.asarray(X @ w, dtype=np.float64).reshape(-1)
    value = float(np.mean(get_loss(loss).value(y, z)))
    return value + 0.5 * l2 * float(np.dot(w, w)) if l2 else value


def full_gradient(
    X: Any, y: np.ndarray, w: np.ndarray, loss: str | Loss, l2: float = 0.0
) -> np.ndarray:
    """∇f(w) = Xᵀφ′ / n + λw (float64, length d)."""
    X = require_csr(X)
    z = np.asarray(X @ w, dtype=np.float64).reshape(-1)
    coef = get_loss(loss).derivative(y, z)
    grad = np.asarray(X.T @ coef, dtype=np.float64).reshape(-1) / X.shape[0]
    return grad + l2 * w if l2 else grad
