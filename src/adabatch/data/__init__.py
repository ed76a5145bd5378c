"""The data side of adaptive batch sizes: resizable sampling, loading and micro-batching.

* `ResizableBatchSampler` — batches of indices; the size may change before any batch; every
  sample exactly once per epoch; exact mid-epoch resume; distributed slices.
* `AdaptiveLoader` — the loader built on it: a tensor fast path for in-memory data, a
  ``DataLoader`` path with workers, resizes that are never applied late.
* `split_batch`, `accumulate_gradients`, `MicroBatcher` — a logical batch as physical chunks
  with the exact one-big-batch gradient; `probe_max_batch_size` finds what fits in memory.
* ``transforms`` — the papers' augmentations (random crop with padding, horizontal flip,
  per-channel normalisation) as batched tensor ops, e.g. as the loader's ``batch_transform``:
  ``batch_transform=lambda b: (augment(b[0]), b[1])``.
"""

from .loader import AdaptiveLoader, has_fast_path
from .memory import free_memory, is_out_of_memory, probe_max_batch_size
from .micro import Chunk, MicroBatcher, accumulate_gradients, batch_length, split_batch
from .order import ResizeEvent, Span, epoch_order, epoch_seed, rank_span
from .sampler import ResizableBatchSampler
from .transforms import (
    CHANNEL_STATS,
    Augment,
    cifar_train_augment,
    normalize,
    random_crop,
    random_horizontal_flip,
)

__all__ = [
    "CHANNEL_STATS",
    "AdaptiveLoader",
    "Augment",
    "Chunk",
    "MicroBatcher",
    "ResizableBatchSampler",
    "ResizeEvent",
    "Span",
    "accumulate_gradients",
    "batch_length",
    "cifar_train_augment",
    "epoch_order",
    "epoch_seed",
    "free_memory",
    "has_fast_path",
    "is_out_of_memory",
    "normalize",
    "probe_max_batch_size",
    "random_crop",
    "random_horizontal_flip",
    "rank_span",
    "split_batch",
]
