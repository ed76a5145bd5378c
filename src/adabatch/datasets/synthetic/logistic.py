"""Dense Gaussian inputs labelled by a linear teacher with label flips (DiveBatch-style)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import ArrayDataset
from ._common import (
    _SAMPLES,
    _check_int,
    _check_noise,
    _check_seed,
    _generator,
    _teacher_vector,
    flip_labels,
)

__all__ = ["synthetic_logistic"]


def synthetic_logistic(
    n: int = 20000,
    d: int = 512,
    *,
    noise: float = 0.1,
    seed: int = 0,
    teacher: int | Tensor | None = None,
    scale: float = 1.0,
) -> ArrayDataset:
    """Dense binary classification from a linear teacher with label flips.

    x_i = scale · z_i, z_i ~ N(0, I_d);  y_i = 1[⟨w*, x_i⟩ > 0] XOR f_i,  f_i ~ Bernoulli(noise),

    with w* = `linear_teacher` (d, unit norm), so the margin ⟨w*, z_i⟩ is exactly N(0, 1) and
    the classes are balanced in expectation. ``noise`` is therefore the label-noise rate and
    the Bayes error; no linear model beats accuracy 1 − noise. The defaults (n 20000, d 512,
    noise 0.1) are those of the closest known code, the logistic-regression generator of the
    DiveBatch authors' prototype (chenyuen0103/asynchronous_sgd); the paper's synthetic setup
    is unconfirmed. That prototype adds ``noise`` × N(0, 1) to unnormalised margins of
    standard deviation ≈ √(d/3) ≈ 13, which flips only ≈ 0.25 % of labels; here ``noise`` is
    the flip rate itself, so the problem keeps a finite optimum and a gradient noise floor.

    Args:
        n: number of samples.
        d: input dimension.
        noise: label-flip probability in [0, 0.5].
        seed: seed of the samples (inputs and flips).
        teacher: seed of w*, an explicit ``d`` vector, or None to use ``seed``.
        scale: input scale (``1/√d`` gives ‖x‖ ≈ 1, smoothness ≈ 1/4 for the logistic loss).

    Returns:
        An `ArrayDataset` of float32 ``n × d`` inputs and int64 targets in {0, 1}.
    """
    _check_int("n", n, 1, "pass the number of samples to generate")
    _check_int("d", d, 1, "pass the input dimension")
    _check_noise(noise)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    w = _teacher_vector(teacher, _check_seed("seed", seed), d, unit_norm=True)
    g = _generator(seed, _SAMPLES)
    x = torch.randn(n, d, generator=g)
    y = flip_labels(x @ w > 0, noise, generator=g).long()
    return ArrayDataset(
        x * scale if scale != 1.0 else x,
        y,
        num_classes=2,
        name="synthetic-logistic",
        classes=["0", "1"],
    )
