"""Seeds, argument checks and the pieces every generator shares (teachers, label flips)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._seeds import derive_seed

__all__ = ["flip_labels", "linear_teacher"]

# Independent random streams derived from one user seed (see `_generator`).
_SAMPLES, _TEACHER, _CALIBRATION = 1, 2, 3


def _generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for ``stream`` of ``seed``, independent of the other streams.

    Seeding both streams with ``seed`` itself would make them identical (the teacher would
    equal the first sample).
    """
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def _check_int(name: str, value: object, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}; {hint}")
    return value


def _check_seed(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return value


def _check_teacher(teacher: object, kind: type) -> None:
    if (
        teacher is not None
        and not isinstance(teacher, kind)
        and (isinstance(teacher, bool) or not isinstance(teacher, int))
    ):
        raise TypeError(
            f"teacher must be an int seed, None or a {kind.__name__}, got "
            f"{type(teacher).__name__} {teacher!r}"
        )


def _check_noise(noise: float) -> float:
    if not 0.0 <= noise <= 0.5:
        raise ValueError(
            f"noise is the probability of flipping a label and must lie in [0, 0.5], got "
            f"{noise!r}; use 0 for noise-free labels (above 0.5 the labels anti-correlate)"
        )
    return float(noise)


def linear_teacher(d: int, *, seed: int = 0, unit_norm: bool = False) -> Tensor:
    """The teacher vector w* ∈ ℝᵈ of `synthetic_logistic` and `synthetic_sparse`.

    w* ~ N(0, I_d) (float32), divided by its norm when ``unit_norm``. Drawn from the teacher
    stream of ``seed``, so ``linear_teacher(d, seed=s)`` is the teacher that the generators use
    for ``teacher=s`` (or ``teacher=None, seed=s``).
    """
    _check_int("d", d, 1, "pass the number of features")
    w = torch.randn(d, generator=_generator(_check_seed("seed", seed), _TEACHER))
    return w / w.norm() if unit_norm else w


def _teacher_vector(teacher: int | Tensor | None, seed: int, d: int, unit_norm: bool) -> Tensor:
    _check_teacher(teacher, Tensor)
    if isinstance(teacher, Tensor):
        if teacher.shape != (d,):
            raise ValueError(
                f"teacher must be a vector of d = {d} weights, got shape {tuple(teacher.shape)}"
            )
        return teacher.to(torch.float32)
    return linear_teacher(d, seed=seed if teacher is None else teacher, unit_norm=unit_norm)


def flip_labels(clean: Tensor, noise: float, *, generator: torch.Generator) -> Tensor:
    """Binary labels with each entry flipped independently with probability ``noise``.

    y_i = clean_i XOR 1[u_i < noise], u_i ~ U[0, 1), one ``torch.rand(len(clean))`` draw.
    """
    flips = torch.rand(clean.shape, generator=generator) < noise
    return clean ^ flips
