"""Checkpoint files: written atomically, with every random stream a resumed run needs.

A checkpoint is one ``torch.save`` file. It is first written next to its destination and
then renamed over it (`os.replace` is atomic on POSIX and Windows), so a run killed while
saving leaves the previous checkpoint intact: there is never a half-written one.

Bitwise resumption needs the random streams as they were at the step boundary: torch's CPU
generator (dropout, initialisation, anything drawn from the global stream), each CUDA
device's generator, Python's ``random``, numpy's global generator when numpy is loaded, and
any explicit ``torch.Generator`` the caller hands over (e.g. the one driving augmentations).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """The state of every random stream a training step may draw from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")  # only if the program already uses it
    if numpy is not None:
        # As plain lists: weights-only loading accepts no numpy arrays.
        name, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    return state


def set_rng_state(state: Mapping[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Restore `rng_state` output; the generators must be the same number, in the same order."""
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ValueError(
            f"the checkpoint holds {len(saved)} extra random generator state(s), but "
            f"{len(generators)} generator(s) were given: pass the same generators (e.g. the "
            "augmentation's) as when the checkpoint was written"
        )
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    for generator, g_state in zip(generators, saved, strict=True):
        generator.set_state(g_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        name, keys, pos, has_gauss, cached = state["numpy"]
        keys = numpy.asarray(keys, dtype=numpy.uint32)
        numpy.random.set_state((name, keys, pos, has_gauss, cached))


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    return atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, with an error naming a bad file.

    The file holds tensors, numbers, strings and the RNG states (Python's is a tuple), which
    ``weights_only`` loading accepts: nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and why
        raise ValueError(f"cannot read the checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an adabatch checkpoint (got a {type(state).__name__})")
    return state
