"""`StatsWindow`: the running sum of the statistics measured between two decisions.

A policy that decides from several steps (DiveBatch pools a whole epoch) reads the sum of their
`GradStats`; a test that decides from one step reads that step's. The window is that sum. It
owns its buffers: the first summary it receives is held by reference (no copy when the window
holds one step, the common case), the second turns it into owned copies, and every later one
is added into them in place — one gradient-sized allocation per window, not one per step.
`GradStats` objects themselves are never modified.

A `NoiseEstimate` (the two-batch noise-scale estimate, computed by the caller) does not add:
the window holds one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .estimators import NoiseEstimate
from .summary import GradStats, merge_fields

__all__ = ["StatsWindow"]


class StatsWindow:
    """Sum of the statistics observed since the window was last read.

    Example::

        window = StatsWindow()
        window.add(stats_step_1)
        window.add(stats_step_2)
        total = window.pop()      # stats_step_1 + stats_step_2; the window is empty again
    """

    def __init__(self) -> None:
        self._held: Any = None  # the first observation, by reference
        self._owned: dict[str, Any] | None = None  # summed fields in buffers we own

    @property
    def empty(self) -> bool:
        """Whether nothing was observed since the last `pop`."""
        return self._held is None and self._owned is None

    def _total(self) -> Any:
        return GradStats(**self._owned) if self._owned is not None else self._held

    def add(self, observation: Any) -> None:
        """Add one step's (all-reduced or local) statistics to the window."""
        if self.empty:
            self._held = observation
            return
        held = self._total()
        if not (isinstance(observation, GradStats) and isinstance(held, GradStats)):
            raise ValueError(
                f"this window already holds an observation ({type(held).__name__}); "
                f"only GradStats add up, a {type(observation).__name__} is taken one per window"
            )
        if self._owned is None:
            self._owned = self._held.detach_copy().fields()
            self._held = None
        device = observation.sum_sq_norms.device
        if self._owned["sum_sq_norms"].device != device:  # restored from a checkpoint elsewhere
            self._owned = GradStats(**self._owned).to(device).fields()
        self._owned = merge_fields(self._owned, observation, in_place=True)

    def pop(self) -> Any:
        """The window's total (None when empty), handing over its buffers; the window empties."""
        total = self._total()
        self._held = self._owned = None
        return total

    def state_dict(self) -> dict[str, Any]:
        """The total so far (a `GradStats` as its own state dict, or None)."""
        total = self._total()
        if total is None:
            return {"kind": None}
        if isinstance(total, GradStats):
            return {"kind": "grad-stats", "value": total.state_dict()}
        return {"kind": "noise-estimate", "value": [float(x) for x in total]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output (the restored sum is owned: later adds go in place)."""
        kind = state.get("kind")
        self._held = self._owned = None
        if kind == "grad-stats":
            self._owned = GradStats.from_state_dict(state["value"]).detach_copy().fields()
        elif kind == "noise-estimate":
            self._held = NoiseEstimate(*state["value"])
        elif kind is not None:
            raise ValueError(f"unknown StatsWindow state kind {kind!r}")

    def __repr__(self) -> str:
        return f"StatsWindow({self._total()!r})"
