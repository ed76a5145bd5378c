"""Data sets: loaders for the standard file formats, generators, and ``data fetch``.

Every loader looks for its files in the data roots of `search_roots` (an explicit ``root``,
then ``$ADABATCH_DATA``, then ``$XDG_CACHE_HOME/adabatch/data``) and raises
`DatasetNotFoundError` (where it looked, how to get the files) or `DatasetFormatError` (which
file is bad and how), both defined in `adabatch.errors` and re-exported here. numpy,
scikit-learn and Pillow are needed only by the loaders that use them, pooch only by `fetch`
(``pip install "adabatch[data]"``).
"""

from ..errors import DatasetFormatError, DatasetNotFoundError, FetchError
from .base import ArrayDataset, SparseDataset, gather_csr_rows, take_rows
from .cifar import load_cifar10, load_cifar100
from .fetch import DATASETS, fetch, locate
from .idx import read_idx
from .libsvm import libsvm_label_values, load_libsvm, load_libsvm_named
from .mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_mnist
from .paths import ENV_VAR, default_root, search_roots
from .synthetic import synthetic_images, synthetic_logistic, synthetic_sparse
from .text import load_text
from .tiny_imagenet import load_tiny_imagenet

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "ArrayDataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "FetchError",
    "SparseDataset",
    "default_root",
    "fetch",
    "gather_csr_rows",
    "libsvm_label_values",
    "load_cifar10",
    "load_cifar100",
    "load_libsvm",
    "load_libsvm_named",
    "load_mnist",
    "load_text",
    "load_tiny_imagenet",
    "locate",
    "read_idx",
    "search_roots",
    "synthetic_images",
    "synthetic_logistic",
    "synthetic_sparse",
    "take_rows",
]
