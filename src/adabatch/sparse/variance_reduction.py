"""Mini-batch SVRG with AdaBatch aggregation of the sparse variance-reduced term.

SVRG (Johnson & Zhang, 2013) keeps a snapshot w̃ and its full data gradient
μ̃ = ∇f_data(w̃) = (1/n) Σᵢ φ′ᵢ(w̃)·xᵢ, and steps along

    v = [aggregate of Σ_{i∈B} (φ′ᵢ(w) − φ′ᵢ(w̃))·xᵢ] + [dense term built from μ̃].

The first term is sparse (on the batch support). With ``rule="mean"`` it is divided by b
(classical mini-batch SVRG, E[v] = ∇f_data(w)). AdaBatch (Défossez & Bach, arXiv 1711.01761)
divides coordinate j by cⱼ, the number of batch rows holding feature j; the dense term then
needs a diagonal scaling D to keep the step consistent. Derivation (the form is ours; the
paper's is unconfirmed):

* B is b distinct rows drawn uniformly without replacement from n; nⱼ = #{i : xᵢⱼ ≠ 0} over
  the whole data; δᵢ = φ′ᵢ(w) − φ′ᵢ(w̃); gⱼ = (1/n) Σᵢ δᵢxᵢⱼ, the full-data mean of the term.
* aⱼ = Σ_{i∈B, xᵢⱼ≠0} δᵢxᵢⱼ / cⱼ (0 if cⱼ = 0). Given cⱼ = k > 0 the k rows of B holding j
  are a uniform k-subset of the nⱼ rows holding j, so E[aⱼ | cⱼ = k] = (1/nⱼ) Σ_{i: xᵢⱼ≠0} δᵢxᵢⱼ
  = (n/nⱼ)·gⱼ for every k, hence E[aⱼ] = P(cⱼ > 0)·(n/nⱼ)·gⱼ.
* P(cⱼ > 0) = 1 − C(n − nⱼ, b)/C(n, b) (hypergeometric), so with
  Dⱼⱼ = P(cⱼ > 0)·n/nⱼ (Dⱼⱼ = 1 where nⱼ = 0), E[a] = D·(∇f_data(w) − μ̃).

So ``correction="preconditioned"`` (default) steps along v = a + Dμ̃, with E[v] = D∇f_data(w):
a fixed positive diagonal preconditioner (same zero, same minimiser), and
``correction="unbiased"`` along v = D⁻¹a + μ̃, with E[v] = ∇f_data(w) exactly. D lies in
[1, b]: 1 for features present in every row, b·(1 − O(b/n)) for features of a single row — the
AdaGrad-like boost of rare features that AdaBatch SGD has implicitly.

L2 (λ/2)‖w‖² is added explicitly, never divided by counts: the step is
w ← w − γ(v + λEw) with E = D in the preconditioned AdaBatch mode (so that the expected step
is D∇f(w) and the minimiser of the *regularised* f is kept) and E = I otherwise.

Cost: O(nnz of the batch) per inner step, despite the dense μ̃ and λw terms, by *just-in-time*
(lazy) updates: between two batches touching coordinate j, w_j only follows the affine map
w_j ← ρⱼw_j − γuⱼ (ρⱼ = 1 − γλEⱼⱼ, u the dense drift Dμ̃ or μ̃), whose k-fold composition has
the closed form w_j ← ρⱼᵏw_j − γuⱼ(1 − ρⱼᵏ)/(1 − ρⱼ); each coordinate remembers the step it
was last brought up to date and is caught up only when a batch touches it (and all of them
at the end of an inner loop, an O(d) pass per snapshot that the full gradient costs anyway).
The φ′ᵢ(w̃) of the snapshot are cached (n scalars), so an inner step evaluates one gradient
per sample, not two.
"""

# X, X_test, X_batch, scale_D: the matrix names of the maths (and of scikit-learn).

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import math
from typing import Any

import numpy as np

from .._validate import as_int, check_choice
from ._problem import check_labels, check_w0, make_recorder, prepare_csr, prepare_problem
from .aggregate import aggregate, check_rule, column_counts, gather
from .losses import Loss, get_loss
from .trace import SolverResult

__all__ = ["CORRECTIONS", "coverage_scaling", "svrg", "svrg_direction"]

#: How the dense full-gradient term is scaled under AdaBatch aggregation (see the module).
CORRECTIONS: tuple[str, ...] = ("preconditioned", "unbiased")


def _check_correction(correction: Any) -> str:
    return check_choice(
        "correction",
        correction,
        CORRECTIONS,
        hint="; how the dense full-gradient term is scaled under AdaBatch aggregation: "
        "'preconditioned' steps along a + Dμ̃, 'unbiased' along D⁻¹a + μ̃",
    )


def coverage_scaling(column_counts_full: Any, n: int, b: int) -> np.ndarray:
    """Dⱼⱼ = P(cⱼ > 0)·n/nⱼ for batches of b distinct rows out of n (Dⱼⱼ = 1 where nⱼ = 0).

    P(cⱼ > 0) = 1 − C(n − nⱼ, b)/C(n, b), the chance that a uniform b-subset of the n rows
    meets the nⱼ rows holding feature j. The ratio of binomials is evaluated as a product,
    either Π_{i<b} (1 − nⱼ/(n − i)) or Π_{i<nⱼ} (1 − b/(n − i)) (they are equal; the shorter
    is used), summed in log space with ``log1p`` and turned into P with ``expm1``, so a
    probability as small as b·nⱼ/n keeps full relative precision (a log-gamma difference
    would lose ~6 digits at n = 10⁶). The work is Σ over the distinct nⱼ of min(b, nⱼ).

    Args:
        column_counts_full: nⱼ for each column over the whole data (`column_counts`).
        n: number of rows.
        b: batch size, 1 ≤ b ≤ n.

    Returns:
        D's diagonal (float64, same length), with 1 ≤ Dⱼⱼ ≤ b.
    """
    n = as_int(n, "n", 1, hint="; pass the number of rows of the data")
    b = as_int(b, "batch_size", 1, hint="; use 1 for plain SVRG")
    if b > n:
        raise ValueError(
            f"batch_size must be <= n = {n} (batches are drawn without replacement), got {b}"
        )
    counts = np.asarray(column_counts_full)
    if counts.ndim != 1:
        raise ValueError(f"column_counts_full must be 1-d, got shape {counts.shape}")
    if counts.size and (
        not np.all(np.isfinite(counts))
        or np.any(counts != np.round(counts))
        or counts.min() < 0
        or counts.max() > n
    ):
        raise ValueError(
            f"column_counts_full must hold integers in [0, n = {n}] (rows holding each "
            "feature); compute them with adabatch.sparse.column_counts(X)"
        )
    counts = counts.astype(np.int64)
    scale = np.ones(counts.shape[0], dtype=np.float64)
    present = counts > 0
    values, inverse = np.unique(counts[present], return_inverse=True)
    d_values = np.empty(values.shape[0], dtype=np.float64)
    for k, nj in enumerate(values.tolist()):
        if nj > n - b:
            p_hit = 1.0  # fewer than b rows lack feature j: every batch meets it
        else:
            if b <= nj:
                log_miss = np.log1p(-nj / (n - np.arange(b, dtype=np.float64))).sum()
            else:
                log_miss = np.log1p(-b / (n - np.arange(nj, dtype=np.float64))).sum()
            p_hit = -math.expm1(float(log_miss))
        d_values[k] = p_hit * n / nj
    scale[present] = d_values[inverse]
    return scale


def svrg_direction(
    X_batch: Any,
    y_batch: Any,
    w: Any,
    w_snap: Any,
    mu_snap: Any,
    scale_D: Any,
    loss: str | Loss = "logistic",
    rule: str = "adabatch",
    correction: str = "preconditioned",
) -> np.ndarray:
    """One SVRG direction v (without the L2 term) for the batch of distinct rows ``X_batch``.

    With δᵢ = φ′ᵢ(w) − φ′ᵢ(w̃) and a = ``aggregate(X_batch, δ, rule=rule)``:

    * ``rule="mean"``: v = Σᵢδᵢxᵢ/b + μ̃ (classical mini-batch SVRG; ``correction`` unused);
    * ``rule="adabatch"``, ``"preconditioned"``: v = a + Dμ̃, E[v] = D∇f_data(w);
    * ``rule="adabatch"``, ``"unbiased"``: v = D⁻¹a + μ̃, E[v] = ∇f_data(w);

    expectations over uniform b-subsets of the n rows, D = `coverage_scaling` (see the
    module docstring for the derivation). Dense: O(d); the solver uses a sparse version.

    Args:
        X_batch: the b × d batch rows (CSR).
        y_batch: their targets (as for `sgd`).
        w: current weights.
        w_snap: snapshot weights w̃.
        mu_snap: μ̃ = ∇f_data(w̃), the full data gradient at w̃ (without L2).
        scale_D: D's diagonal (`coverage_scaling` of the full data's column counts).
        loss: the loss.
        rule: ``"adabatch"`` or ``"mean"``.
        correction: ``"preconditioned"`` or ``"unbiased"``.

    Returns:
        v, float64, length d.
    """
    Xb = prepare_csr(X_batch, "X_batch")
    rule = check_rule(rule)
    correction = _check_correction(correction)
    lossf = get_loss(loss)
    yb = check_labels(y_batch, Xb.shape[0], lossf, "y_batch")
    d = Xb.shape[1]
    w = np.asarray(w, dtype=np.float64)
    w_snap = np.asarray(w_snap, dtype=np.float64)
    mu = np.asarray(mu_snap, dtype=np.float64)
    for name, arr in (("w", w), ("w_snap", w_snap), ("mu_snap", mu)):
        if arr.shape != (d,):
            raise ValueError(
                f"{name} must have shape ({d},) like X_batch's columns, got {arr.shape}"
            )
    delta = lossf.derivative(yb, np.asarray(Xb @ w).reshape(-1)) - lossf.derivative(
        yb, np.asarray(Xb @ w_snap).reshape(-1)
    )
    a = aggregate(Xb, delta, rule=rule)
    if rule == "mean":
        return a + mu
    D = np.asarray(scale_D, dtype=np.float64)
    if D.shape != (d,):
        raise ValueError(f"scale_D must have shape ({d},), got {D.shape}")
    if correction == "preconditioned":
        return a + D * mu
    return a / D + mu


def svrg(
    X: Any,
    y: Any,
    *,
    loss: str | Loss = "logistic",
    batch_size: int = 1,
    rule: str = "adabatch",
    correction: str = "preconditioned",
    step_size: float,
    l2: float = 0.0,
    epochs: float = 1.0,
    inner_steps: int | None = None,
    seed: int = 0,
    record_every: int | None = None,
    X_test: Any = None,
    y_test: Any = None,
    w0: Any = None,
) -> SolverResult:
    """Mini-batch SVRG with AdaBatch (or mean) aggregation on a sparse linear model.

    Outer iteration: snapshot w̃ = w, μ̃ = ∇f_data(w̃) (one pass); then ``inner_steps`` steps

        w ← w − γ·(v + λEw),   v = `svrg_direction` (B, w, w̃, μ̃, D),

    each on a fresh batch B of b distinct rows, ``rng.choice(n, b, replace=False)`` with
    ``rng = np.random.default_rng(seed)`` (uniform b-subsets: the unbiasedness argument of
    the module docstring needs them). E = D for ``rule="adabatch"``,
    ``correction="preconditioned"`` (the expected step is then D∇f(w), D =
    `coverage_scaling`, and the minimiser of f is kept), E = I otherwise. Implemented with
    lazy per-coordinate updates in O(nnz of the batch) per step (module docstring).

    Args:
        X: n × d training rows (CSR).
        y: n targets.
        loss: ``"logistic"`` or ``"squared"``.
        batch_size: b, 1 ≤ b ≤ n.
        rule: ``"adabatch"`` or ``"mean"``.
        correction: ``"preconditioned"`` (v = a + Dμ̃) or ``"unbiased"`` (v = D⁻¹a + μ̃);
            ignored by ``rule="mean"``.
        step_size: γ > 0; γ·λ·max Eⱼⱼ must be < 1.
        l2: λ ≥ 0.
        epochs: outer iterations (> 0); a fractional part runs that fraction of a last inner
            loop (round(epochs·inner_steps) inner steps in all).
        inner_steps: steps per snapshot, default max(1, n // b).
        seed: seed of the batch draws.
        record_every: record every this many samples; default one record per outer
            iteration. Samples count the data touched: n per snapshot, b per inner step (the
            snapshot's φ′ᵢ(w̃) are cached, so that is also the number of gradients).
        X_test: optional test rows for the trace.
        y_test: their labels.
        w0: starting weights (default 0).

    Returns:
        `SolverResult` (final w and `Trace`).

    Raises:
        TypeError: ``X`` not CSR; ``batch_size``, ``inner_steps`` or ``record_every`` not an
            integer, ``step_size``, ``l2`` or ``epochs`` not a number.
        ValueError: bad arguments (the message says which and how to fix it).
        DivergenceError: NaN/infinite weights or loss; lower ``step_size``.
    """
    pb = prepare_problem(
        X,
        y,
        solver="SVRG",
        loss=loss,
        step_size=step_size,
        l2=l2,
        epochs=epochs,
        step_hint="; pass the step γ, e.g. 1/(L·max‖xᵢ‖²)",
        epochs_hint="; pass the number of outer iterations",
    )
    X, y, lossf, gamma, l2 = pb.X, pb.y, pb.loss, pb.step_size, pb.l2
    n, d = X.shape
    rule = check_rule(rule)
    correction = _check_correction(correction)
    b = as_int(batch_size, "batch_size", 1, hint="; use 1 for plain SVRG")
    if b > n:
        raise ValueError(
            f"batch_size must be <= n = {n} (SVRG batches are b distinct rows), got {b}"
        )
    m = (
        max(1, n // b)
        if inner_steps is None
        else as_int(
            inner_steps,
            "inner_steps",
            1,
            hint="; pass the number of steps per snapshot (default n // b)",
        )
    )
    w = check_w0(w0, d)

    counts = column_counts(X)
    D = coverage_scaling(counts, n, b)
    precond = rule == "adabatch" and correction == "preconditioned"
    E = D if precond else np.ones(d)
    if gamma * l2 * float(E.max(initial=1.0)) >= 1:
        raise ValueError(
            f"step_size·l2{'·max D' if precond else ''} must be < 1 (the L2 decay factor must "
            f"stay positive), got step_size={gamma:g}, l2={l2:g}"
            + (f", max D={float(E.max()):.3g}" if precond else "")
            + "; lower the step size or l2"
        )
    decay = gamma * l2 * E  # 1 − ρⱼ
    log_rho = np.log1p(-decay)
    rec = make_recorder(pb, record_every, n + m * b, X_test, y_test)
    every = rec.every
    indptr, indices, data = pb.indptr, pb.indices, pb.data
    deriv = lossf.derivative
    rng = np.random.default_rng(seed)
    total_steps = max(1, round(pb.epochs * m))
    last = np.zeros(d, dtype=np.int64)  # step (of this inner loop) each w_j is current at

    def catch_up(idx: Any, t: int, drift: np.ndarray) -> None:
        # k = t − last steps of w_j ← ρⱼw_j − drift_j, in closed form (drift = γu).
        k = t - last[idx]
        if l2:
            kl = k * log_rho[idx]
            w[idx] = np.exp(kl) * w[idx] + drift[idx] * (np.expm1(kl) / decay[idx])
        else:
            w[idx] -= k * drift[idx]
        last[idx] = t

    samples = 0
    done = 0
    rec.start()
    rec.record(0, w)
    next_record = every
    while done < total_steps:
        if not np.all(np.isfinite(w)):
            raise pb.diverged(f"at sample {samples}")
        w_snap_coef = deriv(y, np.asarray(X @ w).reshape(-1))  # φ′ᵢ(w̃), cached
        mu = np.asarray(X.T @ w_snap_coef, dtype=np.float64).reshape(-1) / n
        if not np.all(np.isfinite(mu)):
            raise pb.diverged(f"at sample {samples}")
        drift = gamma * (D * mu if precond else mu)
        samples += n
        last[:] = 0
        steps = min(m, total_steps - done)
        for t in range(steps):
            rows = rng.choice(n, size=b, replace=False)
            rowid, cols, vals = gather(indptr, indices, data, rows)
            support, inv = np.unique(cols, return_inverse=True)
            catch_up(support, t, drift)
            z = np.bincount(rowid, weights=vals * w[cols], minlength=b)
            if not np.all(np.isfinite(z)):
                raise pb.diverged(f"at sample {samples}")
            delta = deriv(y[rows], z) - w_snap_coef[rows]
            s = np.bincount(inv, weights=delta[rowid] * vals, minlength=support.shape[0])
            if rule == "adabatch":
                sparse = s / np.bincount(inv, minlength=support.shape[0])
                if not precond:
                    sparse /= D[support]
            else:
                sparse = s / b
            # One step on the support: w_j ← ρⱼw_j − γuⱼ − γ·sparse_j (w_S is current at t).
            w[support] = (1.0 - decay[support]) * w[support] - drift[support] - gamma * sparse
            last[support] = t + 1
            samples += b
            done += 1
            if samples >= next_record:
                catch_up(slice(None), t + 1, drift)
                rec.record(samples, w)
                pb.check_trace(rec)
                next_record = (samples // every + 1) * every
        catch_up(slice(None), steps, drift)
    return pb.finish(rec, samples, w.copy(), "at the end")
