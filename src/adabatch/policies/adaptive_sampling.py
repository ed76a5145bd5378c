"""The adaptive-sampling test policies: grow the batch until the sample test passes.

At steps 0, k, 2k, … with k = ``interval`` (the AdAdaGrad code's ``iter_num % test_interval
== 0``, default k = 1), the statistics of that step's batch give the size T at which the test
would just pass (`adabatch.policies.sampling_tests`), and the batch becomes

    b ← min(b_max, max(b, ⌈T⌉))

(then rounded to ``multiple_of``). The batch never shrinks, and no statistics are asked for
once it reaches b_max. The test of step s reads that step's statistics and decides right
after it (the `Cadence` ``("step", every=k, window=1)``). A NaN T (b < 2) or non-finite
statistics keep the batch (the decision's note says why; the scheduler warns once); T = inf
with finite statistics (ḡ = 0 with noise: no finite batch passes) gives b_max (or keeps the
batch, with a note, when the policy has no cap).

Byrd, Chin, Nocedal & Wu (2012) for the norm test; Bollapragada, Byrd & Nocedal (2018) for
the inner-product, orthogonality and augmented tests; Lau, Liu & Kolar (AdAdaGrad, arXiv
2402.11215) for their use with AdaGrad updates and the coordinate-wise test; Espath et al.
(arXiv 2109.10933) for deriving θ and ν from one ε.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

from .._types import INNER_MODES
from .._validate import as_int, check_choice, check_positive
from ..stats.estimators import inner_product_variance, mean_sq_norm, orthogonal_variance
from ..stats.summary import GradStats
from .base import BatchSizePolicy, Cadence, Decision, StatsRequest
from .sampling_tests import (
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
    "SplitSums",
]


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class SamplingTestPolicy(BatchSizePolicy):
    """Shared cadence and decision of the tests; subclasses define `suggested_size`.

    Args:
        batch_size: b₀ ≥ 2 (a variance needs two samples; AdAdaGrad's MNIST runs start at 2).
        interval: test every ``interval`` optimizer steps (at steps 0, k, 2k, …).
        min_batch_size, max_batch_size, multiple_of, dataset_size: see `BatchSizePolicy`.
    """

    interval: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 2:
            raise ValueError(
                f"the {self.name} test estimates a variance and needs batch_size >= 2, got "
                f"{self.batch_size}"
            )
        object.__setattr__(self, "interval", as_int(self.interval, "interval", minimum=1))

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        return StatsRequest(per_sample=True)

    @property
    def cadence(self) -> Cadence:  # noqa: D102 - see base
        return Cadence("step", every=self.interval, window=1)

    def suggested_size(self, state: Any, stats: GradStats) -> tuple[Any, float]:
        """(new state, T) from one batch's statistics (T before rounding and clamping)."""
        raise NotImplementedError

    def decide(  # noqa: D102 - see BatchSizePolicy.decide
        self,
        state: Any,
        stats: GradStats | None,
        *,
        batch_size: int,
        step: int | None,
        epoch: int,
        samples: int = 0,
    ) -> tuple[Any, Decision | None]:
        if stats is None:
            return state, None  # not measured: at the cap
        if self.stats_finite(stats):
            state, t = self.suggested_size(state, stats)
        else:
            t = math.nan
        return state, self.grow_to(t, batch_size=batch_size, step=step, epoch=epoch, statistic="T")


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class NormTest(SamplingTestPolicy):
    """The norm test: T = V/(η²‖ḡ‖²) (Byrd et al. 2012; AdAdaGrad's ``norm``).

    Args:
        eta: η > 0 (AdAdaGrad: 0.1 on MNIST, 0.5 on CIFAR-10 ResNet-18).
        Others: see `SamplingTestPolicy`.
    """

    name = "norm-test"

    eta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "eta", check_positive("eta", self.eta))

    def suggested_size(self, state: Any, stats: GradStats) -> tuple[Any, float]:  # noqa: D102
        return state, norm_test_size(stats, eta=self.eta)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class _InnerProductFamily(SamplingTestPolicy):
    """The tests that read P2: their ``mode`` and their statistics request."""

    mode: str | None = "layerwise"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "mode", check_choice("mode", self.mode, INNER_MODES))

    @property
    def stats_request(self) -> StatsRequest:
        return StatsRequest(per_sample=True, inner_products=True)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class InnerProductTest(_InnerProductFamily):
    """The inner-product test: T = V_ip/(θ²‖ḡ‖⁴) (Bollapragada et al. 2018).

    Args:
        theta: θ > 0 (AdAdaGrad code default 0.1).
        mode: "layerwise" (default: the AdAdaGrad code) or "global" (the definition).
        Others: see `SamplingTestPolicy`.
    """

    name = "inner-product"

    theta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "theta", check_positive("theta", self.theta))

    def suggested_size(self, state: Any, stats: GradStats) -> tuple[Any, float]:  # noqa: D102
        return state, inner_product_test_size(stats, theta=self.theta, mode=self.mode)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class OrthogonalityTest(_InnerProductFamily):
    """The orthogonality test alone: T = V_orth/(ν²‖ḡ‖²) (Bollapragada et al. 2018).

    Args:
        nu: ν > 0 (AdAdaGrad code default 0.1).
        mode: "layerwise" (default: the AdAdaGrad code) or "global" (the definition).
        Others: see `SamplingTestPolicy`.
    """

    name = "orthogonality"

    nu: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "nu", check_positive("nu", self.nu))

    def suggested_size(self, state: Any, stats: GradStats) -> tuple[Any, float]:  # noqa: D102
        return state, orthogonality_test_size(stats, nu=self.nu, mode=self.mode)


class SplitSums(NamedTuple):
    """The moving sums behind the augmented test's automatic split ρ = ā/(ā + c̄)."""

    inner: float = 0.0  # of a = V_ip/‖ḡ‖²
    orthogonal: float = 0.0  # of c = V_orth


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class AugmentedInnerProductTest(_InnerProductFamily):
    """Inner-product and orthogonality tests together: T = max(T_ip, T_orth).

    (Bollapragada et al. 2018; AdAdaGrad's ``ip+orth``.) Either give θ and ν, or give ε and
    let θ² = ε²ρ, ν² = ε²(1 − ρ) (Espath et al.: then the pair matches the norm test with
    tolerance ε in SGD's rate). ``split`` is ρ ∈ (0, 1), or ``"auto"``: ρ = a/(a + c) from
    moving averages (factor ``smoothing``) of a = V_ip/‖ḡ‖² and c = V_orth,
    the split at which the pair costs exactly what the norm test costs. With
    ``smoothing=0`` it is the current batch's split, and T equals the norm test's V/(ε²‖ḡ‖²)
    for the global mode. The moving sums are the policy's state (`SplitSums`).

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

    theta: float | None = None
    nu: float | None = None
    epsilon: float | None = None
    split: float | str | None = None
    smoothing: float = 0.9
    mode: str | None = None

    def __post_init__(self) -> None:
        # Espath et al.'s equivalence is a statement about the global variances.
        if self.mode is None:
            object.__setattr__(self, "mode", "layerwise" if self.epsilon is None else "global")
        super().__post_init__()
        smoothing = float(self.smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        object.__setattr__(self, "smoothing", smoothing)
        if self.epsilon is None:
            if self.split is not None:
                raise ValueError("split needs epsilon (it divides ε² between θ² and ν²)")
            for key in ("theta", "nu"):
                if (value := getattr(self, key)) is not None:
                    object.__setattr__(self, key, check_positive(key, value))
            return
        if self.theta is not None or self.nu is not None:
            raise ValueError(
                "give either epsilon (θ and ν derived from it) or theta and nu, not both"
            )
        object.__setattr__(self, "epsilon", check_positive("epsilon", self.epsilon))
        split = "auto" if self.split is None else self.split
        if isinstance(split, str):
            if split != "auto":
                raise ValueError(
                    f"split must be 'auto' or a number in (0, 1) (ρ, θ² = ε²ρ); got {split!r}"
                )
        else:
            split = float(split)
            espath_split(self.epsilon, split)  # validates ρ
        object.__setattr__(self, "split", split)

    @property
    def tolerances(self) -> tuple[float, float]:
        """(θ, ν) in force: given, derived from ε and a fixed ρ, or NaN for the "auto" split."""
        if self.epsilon is None:
            return (
                0.1 if self.theta is None else float(self.theta),
                0.1 if self.nu is None else float(self.nu),
            )
        if self.split == "auto":
            return math.nan, math.nan
        return espath_split(self.epsilon, float(self.split))  # type: ignore[arg-type]

    def init(self) -> SplitSums:  # noqa: D102 - see base
        return SplitSums()

    def current_split(self, state: SplitSums, stats: GradStats) -> tuple[SplitSums, float]:
        """Update the "auto" averages with this batch: (new sums, ρ = ā/(ā + c̄))."""
        g2 = mean_sq_norm(stats)
        a = inner_product_variance(stats, mode=self.mode) / g2 if g2 > 0 else math.nan
        c = orthogonal_variance(stats, mode=self.mode)
        if not (math.isfinite(a) and math.isfinite(c)):
            return state, math.nan
        # Both averages share their weights, so the bias correction cancels in ρ.
        beta = self.smoothing
        state = SplitSums(beta * state.inner + max(a, 0.0), beta * state.orthogonal + max(c, 0.0))
        total = state.inner + state.orthogonal
        if total <= 0:
            return state, 0.5
        rho = state.inner / total
        return state, min(max(rho, 1e-6), 1.0 - 1e-6)

    def suggested_size(self, state: Any, stats: GradStats) -> tuple[Any, float]:  # noqa: D102
        theta, nu = self.tolerances
        if self.split == "auto":
            state, rho = self.current_split(state, stats)
            if math.isnan(rho):
                return state, math.nan
            assert self.epsilon is not None
            theta, nu = espath_split(self.epsilon, rho)
        return state, augmented_test_size(stats, theta=theta, nu=nu, mode=self.mode)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
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

    eta: float = 0.1
    floor: float = 0.1
    quantile: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "eta", check_positive("eta", self.eta))
        floor, quantile = float(self.floor), float(self.quantile)
        if not (floor >= 0 and math.isfinite(floor)):
            raise ValueError(f"floor must be a finite number >= 0, got {self.floor!r}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile!r}")
        object.__setattr__(self, "floor", floor)
        object.__setattr__(self, "quantile", quantile)

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        return StatsRequest(per_sample=True, coordinates=True)

    def suggested_size(self, state: Any, stats: GradStats) -> tuple[Any, float]:  # noqa: D102
        return state, coordinate_norm_test_size(
            stats, eta=self.eta, floor=self.floor, quantile=self.quantile
        )
