"""The training clock: seconds spent training, with evaluation and checkpoints left out.

``time`` in the trainer's records is this clock: the measure the DiveBatch paper compares
(steps, statistics, data loading and logging count; evaluation and checkpointing do not).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

__all__ = ["TrainingClock"]


class TrainingClock:
    """Accumulated seconds while running; `paused` excludes a block (evaluation, checkpoints).

    Args:
        elapsed: seconds already accumulated (a resumed run's training time).
    """

    def __init__(self, elapsed: float = 0.0) -> None:
        self.elapsed = elapsed
        self._since: float | None = None

    def start(self) -> None:
        """Start counting (no effect when running)."""
        if self._since is None:
            self._since = time.perf_counter()

    def stop(self) -> None:
        """Stop counting and add the seconds since `start` (no effect when stopped)."""
        if self._since is not None:
            self.elapsed += time.perf_counter() - self._since
            self._since = None

    def read(self) -> float:
        """The seconds accumulated so far, the running interval included."""
        extra = 0.0 if self._since is None else time.perf_counter() - self._since
        return self.elapsed + extra

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run the block with the clock stopped; it resumes afterwards if it was running."""
        running = self._since is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()
