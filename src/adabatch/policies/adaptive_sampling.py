"""The adaptive-sampling test policies: grow the batch until the sample test passes.

At steps 0, k, 2k, … with k = ``interval`` (the AdAdaGrad code's ``iter_num % test_interval
== 0``, default k = 1), the statistics of that step's batch give the size T at which the test
would just pass (`adabatch.policies.sampling_tests`), and the batch becomes

    b ← min(b_max, max(b, ⌈T⌉))

(then rounded to ``multiple_of``). The batch never shrinks, and no statistics are asked for
once it reaches b_max. A NaN T (b < 2) or non-finite statistics keep the batch and warn once;
T = inf with finite statistics (ḡ = 0 with noise: no finite batch passes) gives b_max (or
keeps the batch, warning, when the policy has no cap).

Byrd, Chin, Nocedal & Wu (2012) for the norm test; Bollapragada, Byrd & Nocedal (2018) for
the inner-product, orthogonality and augmented tests; Lau, Liu & Kolar (AdAdaGrad, arXiv
2402.11215) for their use with AdaGrad updates and the coordinate-wise test; Espath et al.
(arXiv 2109.10933) for deriving θ and ν from one ε.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from typing_extensions import Unpack

from .._validate import as_int, check_choice, check_positive
from ..stats.estimators import inner_product_variance, mean_sq_norm, orthogonal_variance
from ..stats.summary import GradStats
from .base import BatchSizePolicy, Bounds, Decision, StatsRequest
from .sampling_tests import (
    MODES,
    augmented_test_size,
    coordinate_norm_test_size,
    espath_split,
    inner_product_test_size,
    norm_test_size,
    orthogonality_test_size,
)

__all__ = [
    "AugmentedInnerProductTest",
    "CoordinateNormTest",
    "InnerProductTest",
    "NormTest",
    "OrthogonalityTest",
    "SamplingTestPolicy",
]


class SamplingTestPolicy(BatchSizePolicy):
    """Shared cadence of the tests; subclasses define `suggested_size`.

    Args:
        batch_size: b₀ ≥ 2 (a variance needs two samples; AdAdaGrad's MNIST runs start at 2).
        interval: test every ``interval`` optimizer steps.
        **bounds: min_batch_size, max_batch_size, multiple_of, dataset_size (`Bounds`).
    """

    def __init__(
        self,
        batch_size: int,
        *,
        interval: int = 1,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, **bounds)
        if self._batch_size < 2:
            raise ValueError(
                f"the {self.name} test estimates a variance and needs batch_size >= 2, got "
                f"{self._batch_size}"
            )
        self.interval = as_int(interval, "interval", minimum=1)
        self._config = {"interval": self.interval}
        self._pending: float | None = None  # T of the step just observed

    @property
    def cadence(self) -> str:  # noqa: D102 - see base
        return "step"

    def suggested_size(self, stats: GradStats) -> float:
        """T from one batch's statistics (before rounding and clamping)."""
        raise NotImplementedError

    def wants_stats(self, *, step: int, epoch: int) -> bool:  # noqa: D102 - see base
        return not self.at_max and step % self.interval == 0

    def observe(self, stats: GradStats) -> None:
        """Compute T for this step's batch (its decision follows in `after_step`)."""
        self._pending = self.suggested_size(stats) if self.stats_finite(stats) else math.nan

    def after_step(self, *, step: int, epoch: int) -> Decision | None:  # noqa: D102
        t, self._pending = self._pending, None
        if t is None:
            return None
        return self.grow_to(t, step=step, epoch=epoch, statistic="T")

    def _extra_state(self) -> dict[str, Any]:
        return {"pending": self._pending}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._pending = state.get("pending")


class NormTest(SamplingTestPolicy):
    """The norm test: T = V/(η²‖ḡ‖²) (Byrd et al. 2012; AdAdaGrad's ``norm``).

    Args:
        eta: η > 0 (AdAdaGrad: 0.1 on MNIST, 0.5 on CIFAR-10 ResNet-18).
        Others: see `SamplingTestPolicy`.
    """

    name = "norm-test"

    def __init__(
        self,
        batch_size: int,
        *,
        eta: float = 0.1,
        interval: int = 1,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, interval=interval, **bounds)
        self.eta = check_positive("eta", eta)
        self._config.update(eta=self.eta)

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        return StatsRequest(per_sample=True)

    def suggested_size(self, stats: GradStats) -> float:  # noqa: D102
        return norm_test_size(stats, eta=self.eta)


class _InnerProductFamily(SamplingTestPolicy):
    """The tests that read P2: their ``mode`` and their statistics request."""

    def __init__(
        self, batch_size: int, *, mode: str, interval: int, **bounds: Unpack[Bounds]
    ) -> None:
        super().__init__(batch_size, interval=interval, **bounds)
        self.mode = check_choice("mode", mode, MODES)
        self._config["mode"] = self.mode

    @property
    def stats_request(self) -> StatsRequest:
        return StatsRequest(per_sample=True, inner_products=True)


class InnerProductTest(_InnerProductFamily):
    """The inner-product test: T = V_ip/(θ²‖ḡ‖⁴) (Bollapragada et al. 2018).

    Args:
        theta: θ > 0 (AdAdaGrad code default 0.1).
        mode: "layerwise" (default: the AdAdaGrad code) or "global" (the definition).
        Others: see `SamplingTestPolicy`.
    """

    name = "inner-product"

    def __init__(
        self,
        batch_size: int,
        *,
        theta: float = 0.1,
        mode: str = "layerwise",
        interval: int = 1,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, mode=mode, interval=interval, **bounds)
        self.theta = check_positive("theta", theta)
        self._config["theta"] = self.theta

    def suggested_size(self, stats: GradStats) -> float:  # noqa: D102
        return inner_product_test_size(stats, theta=self.theta, mode=self.mode)


class OrthogonalityTest(_InnerProductFamily):
    """The orthogonality test alone: T = V_orth/(ν²‖ḡ‖²) (Bollapragada et al. 2018).

    Args:
        nu: ν > 0 (AdAdaGrad code default 0.1).
        mode: "layerwise" (default: the AdAdaGrad code) or "global" (the definition).
        Others: see `SamplingTestPolicy`.
    """

    name = "orthogonality"

    def __init__(
        self,
        batch_size: int,
        *,
        nu: float = 0.1,
        mode: str = "layerwise",
        interval: int = 1,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, mode=mode, interval=interval, **bounds)
        self.nu = check_positive("nu", nu)
        self._config["nu"] = self.nu

    def suggested_size(self, stats: GradStats) -> float:  # noqa: D102
        return orthogonality_test_size(stats, nu=self.nu, mode=self.mode)


class AugmentedInnerProductTest(_InnerProductFamily):
    """Inner-product and orthogonality tests together: T = max(T_ip, T_orth).

    (Bollapragada et al. 2018; AdAdaGrad's ``ip+orth``.) Either give θ and ν, or give ε and
    let θ² = ε²ρ, ν² = ε²(1 − ρ) (Espath et al.: then the pair matches the norm test with
    tolerance ε in SGD's rate). ``split`` is ρ ∈ (0, 1), or ``"auto"``: ρ = a/(a + c) from
    moving averages (factor ``smoothing``) of a = V_ip/‖ḡ‖² and c = V_orth,
    the split at which the pair costs exactly what the norm test costs. With
    ``smoothing=0`` it is the current batch's split, and T equals the norm test's V/(ε²‖ḡ‖²)
    for the global mode.

    Args:
        theta: θ > 0 (default 0.1 without ``epsilon``).
        nu: ν > 0 (default 0.1 without ``epsilon``).
        epsilon: ε > 0: derive θ and ν from it (then leave θ and ν unset).
        split: ρ, or "auto" (the default with ``epsilon``).
        smoothing: β ∈ [0, 1) of the "auto" split's moving averages (default 0.9).
        mode: "layerwise" (the AdAdaGrad code; the default with θ and ν) or "global" (the
            definition; the default with ε, the form Espath et al.'s equivalence is about).
        Others: see `SamplingTestPolicy`.
    """

    name = "augmented-inner-product"

    def __init__(
        self,
        batch_size: int,
        *,
        theta: float | None = None,
        nu: float | None = None,
        epsilon: float | None = None,
        split: float | str | None = None,
        smoothing: float = 0.9,
        mode: str | None = None,
        interval: int = 1,
        **bounds: Unpack[Bounds],
    ) -> None:
        # Espath et al.'s equivalence is a statement about the global variances.
        if mode is None:
            mode = "layerwise" if epsilon is None else "global"
        super().__init__(batch_size, mode=mode, interval=interval, **bounds)
        smoothing = float(smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        if epsilon is None:
            if split is not None:
                raise ValueError("split needs epsilon (it divides ε² between θ² and ν²)")
            self.epsilon = None
            self.theta = check_positive("theta", 0.1 if theta is None else theta)
            self.nu = check_positive("nu", 0.1 if nu is None else nu)
            self.split: float | str | None = None
        else:
            if theta is not None or nu is not None:
                raise ValueError(
                    "give either epsilon (θ and ν derived from it) or theta and nu, not both"
                )
            self.epsilon = check_positive("epsilon", epsilon)
            split = "auto" if split is None else split
            if isinstance(split, str):
                if split != "auto":
                    raise ValueError(
                        f"split must be 'auto' or a number in (0, 1) (ρ, θ² = ε²ρ); got {split!r}"
                    )
                self.theta = self.nu = math.nan  # set per batch
            else:
                self.theta, self.nu = espath_split(self.epsilon, split)
                split = float(split)
            self.split = split
        self._config.update(
            theta=theta,
            nu=nu,
            epsilon=self.epsilon,
            split=self.split,
            smoothing=self.smoothing,
        )
        # Moving sums of V_ip/‖ḡ‖² and V_orth for split="auto".
        self._sums = [0.0, 0.0]

    def current_split(self, stats: GradStats) -> float:
        """Update the "auto" averages with this batch and return ρ = ā/(ā + c̄)."""
        g2 = mean_sq_norm(stats)
        a = inner_product_variance(stats, mode=self.mode) / g2 if g2 > 0 else math.nan
        c = orthogonal_variance(stats, mode=self.mode)
        if not (math.isfinite(a) and math.isfinite(c)):
            return math.nan
        # Both averages share their weights, so the bias correction cancels in ρ.
        beta = self.smoothing
        self._sums = [beta * self._sums[0] + max(a, 0.0), beta * self._sums[1] + max(c, 0.0)]
        total = self._sums[0] + self._sums[1]
        if total <= 0:
            return 0.5
        rho = self._sums[0] / total
        return min(max(rho, 1e-6), 1.0 - 1e-6)

    def suggested_size(self, stats: GradStats) -> float:  # noqa: D102
        theta, nu = self.theta, self.nu
        if self.split == "auto":
            rho = self.current_split(stats)
            if math.isnan(rho):
                return math.nan
            assert self.epsilon is not None
            theta, nu = espath_split(self.epsilon, rho)
        return augmented_test_size(stats, theta=theta, nu=nu, mode=self.mode)

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "split_sums": list(self._sums)}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        super()._load_extra_state(state)
        self._sums = [float(x) for x in state["split_sums"]]


class CoordinateNormTest(SamplingTestPolicy):
    """The coordinate-wise norm test proposed for AdAdaGrad, with adabatch's guard.

    T = q-quantile_j V_j/(η²(ḡ_j² + κ‖ḡ‖²/P)) (`coordinate_norm_test_size`). Needs
    Σgᵢ⊙gᵢ (``coordinates=True``), a vector the size of the model.

    Args:
        eta: η > 0.
        floor: κ ≥ 0, the guard for coordinates with ḡ_j ≈ 0 (0.1).
        quantile: q ∈ (0, 1] (1: the max over coordinates).
        Others: see `SamplingTestPolicy`.
    """

    name = "coordinate-norm-test"

    def __init__(
        self,
        batch_size: int,
        *,
        eta: float = 0.1,
        floor: float = 0.1,
        quantile: float = 1.0,
        interval: int = 1,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, interval=interval, **bounds)
        self.eta = check_positive("eta", eta)
        self.floor = float(floor)
        self.quantile = float(quantile)
        # Validate floor and quantile once, with the function's own messages.
        if not (self.floor >= 0 and math.isfinite(self.floor)):
            raise ValueError(f"floor must be a finite number >= 0, got {floor!r}")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        self._config.update(eta=self.eta, floor=self.floor, quantile=self.quantile)

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        return StatsRequest(per_sample=True, coordinates=True)

    def suggested_size(self, stats: GradStats) -> float:  # noqa: D102
        return coordinate_norm_test_size(
            stats, eta=self.eta, floor=self.floor, quantile=self.quantile
        )
