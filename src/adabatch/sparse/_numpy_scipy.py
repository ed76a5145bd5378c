"""numpy and scipy, the ``sparse`` extra, or an ImportError that says how to install them.

adabatch itself needs only torch. The sparse-model solvers of `adabatch.sparse` (every module
but `adabatch.sparse.embedding`, which is pure torch) work on ``scipy.sparse`` matrices and
numpy arrays; each of them imports this module before numpy, so that importing a solver
without the extra fails with the fix (``pip install "adabatch[sparse]"``) rather than a bare
"No module named 'numpy'".
"""

try:
    import numpy  # noqa: F401
    import scipy.sparse  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"adabatch.sparse's solvers need numpy and scipy ({exc.name} is missing): "
        'pip install "adabatch[sparse]" (adabatch.sparse.embedding needs torch only)'
    ) from exc
