"""Batch-size policies: the rules of the papers as pure functions.

Work in progress (issue 4): the decision rules below are final; the policy classes, their
registry, the learning-rate coupling and the batch-size scheduler are still to come.
"""

from .divebatch import divebatch_batch_size, divebatch_rule
from .sampling_tests import inner_product_test_size, norm_test_size, orthogonality_test_size

__all__ = [
    "divebatch_batch_size",
    "divebatch_rule",
    "inner_product_test_size",
    "norm_test_size",
    "orthogonality_test_size",
]
