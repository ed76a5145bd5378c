"""Synthetic classification data with a known labelling rule (a "teacher").

Three generators, each a thin wrapper around pure sampling functions:

* `synthetic_logistic` — dense Gaussian inputs labelled by a linear teacher with label flips
  (the DiveBatch-style synthetic convex problem).
* `synthetic_sparse` — sparse rows whose columns follow a Zipf law, labelled by a linear
  teacher with label flips (the sparse problems of AdaBatch, Défossez & Bach, where rare
  features matter).
* `synthetic_images` — smoothed-noise images labelled by a random convolutional teacher
  with class-balancing offsets (a CIFAR-shaped stand-in when CIFAR is not installed).

Seeds. Every generator takes ``seed`` (the samples) and ``teacher`` (the labelling rule: an
int seed, an explicit teacher, or None for "same as ``seed``"). Samples and teacher come from
two independent streams derived from these integers, never from torch's global RNG, so a
train and a test set labelled by one rule are ``f(n, seed=0, teacher=0)`` and
``f(m, seed=1, teacher=0)``.
"""

from ._common import flip_labels, linear_teacher
from .images import (
    ImageTeacher,
    balance_offsets,
    image_teacher,
    smooth_noise_images,
    synthetic_images,
)
from .logistic import synthetic_logistic
from .sparse import sample_distinct, sparse_teacher, synthetic_sparse, zipf_probabilities

__all__ = [
    "ImageTeacher",
    "balance_offsets",
    "flip_labels",
    "image_teacher",
    "linear_teacher",
    "sample_distinct",
    "smooth_noise_images",
    "sparse_teacher",
    "synthetic_images",
    "synthetic_logistic",
    "synthetic_sparse",
    "zipf_probabilities",
]
