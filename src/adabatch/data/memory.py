"""Out-of-memory detection and the probe for the largest batch that fits.

`probe_max_batch_size` finds, with a handful of trial steps, the largest physical batch for
which a step runs without running out of memory: it doubles from a starting size until a
step fails (or a limit is reached), then bisects between the last size that fitted and the
first that failed. It assumes that fitting is monotone in the batch size, which holds for a
fixed model. Across processes the result is the minimum over ranks, so every rank uses the
same physical batch.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch

__all__ = ["free_memory", "is_out_of_memory", "probe_max_batch_size"]

_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)
# Messages of allocation failures raised as plain RuntimeError (CPU allocator, cuDNN/cuBLAS
# workspaces, MPS).
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cudnn_status_alloc_failed")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (CUDA, CPU or a library workspace)."""
    if isinstance(error, _OOM_TYPES):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _OOM_MESSAGES)


def free_memory() -> None:
    """Drop unreachable tensors and return cached accelerator blocks after a failed step.

    The caching allocator keeps the failed step's blocks reserved; without emptying the
    cache, the next (smaller) trial could fail on fragmentation rather than real demand.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def probe_max_batch_size(
    try_batch: Callable[[int], object],
    *,
    start: int,
    limit: int,
    known_fit: int = 0,
    reduce_across_ranks: bool = True,
) -> int:
    """The largest b ≤ ``limit`` for which ``try_batch(b)`` raises no out-of-memory error.

    Args:
        try_batch: runs one trial step (forward and backward) at physical batch size b. It
            must leave no state behind (gradients, optimizer) and must not communicate with
            other processes: ranks probe independently and may try different sizes.
        start: first size tried; the probe doubles from there, then bisects.
        limit: the largest size worth knowing about (typically the logical batch).
        known_fit: a size already known to fit (not tried again), 0 if none.
        reduce_across_ranks: under ``torch.distributed``, return the minimum over ranks.

    Returns:
        The largest size that fitted (exact under monotonicity: about log₂(limit/start) +
        log₂(gap) trials).

    Raises:
        RuntimeError: a batch of 1 does not fit.
        Any error of ``try_batch`` that is not an out-of-memory error.
    """
    for name, value in (("start", start), ("limit", limit), ("known_fit", known_fit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if limit < 1 or start < 1 or not 0 <= known_fit <= limit:
        raise ValueError(
            "need start >= 1, limit >= 1 and 0 <= known_fit <= limit, got "
            f"start={start}, limit={limit}, known_fit={known_fit}"
        )
    fits, fails = known_fit, limit + 1  # largest size known to fit, smallest known to fail
    size = min(max(start, fits + 1), limit)
    while fails - fits > 1:
        failed = False
        try:
            try_batch(size)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            failed = True
        # Outside the handler: the exception and its traceback (which holds the failed
        # step's tensors) are gone before the cache is emptied.
        if failed:
            fails = size
            free_memory()
        else:
            fits = size
        # Grow geometrically until the first failure, then bisect the gap.
        size = min(2 * size, limit) if fails == limit + 1 else (fits + fails) // 2
    if fits == 0:
        raise RuntimeError(
            "out of memory even at a physical batch size of 1: the model does not fit on this "
            "device; use a smaller model or a device with more memory"
        )
    if reduce_across_ranks:
        from ..distributed import all_reduce_int

        fits = all_reduce_int(fits, "min")
    return fits
