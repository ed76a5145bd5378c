"""Seeds derived from several integers: a run seed and an epoch, a seed and a stream.

Generators seeded with ``seed + epoch`` or with the same seed for two purposes produce related
(or identical) streams. `derive_seed` mixes its parts through the SplitMix64 finaliser, a
bijective 64-bit mix, so that nearby inputs give unrelated seeds.
"""

from __future__ import annotations

__all__ = ["derive_seed", "splitmix64"]

_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One SplitMix64 step: add the golden-ratio increment, then the finaliser (64 bits)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from ``parts``: distinct tuples give unrelated seeds.

    ``derive_seed(s, e)`` for a run seed s and an epoch e; ``derive_seed(s, k)`` for stream k
    of seed s. Non-negative, so it suits ``torch.Generator.manual_seed`` and numpy alike.
    """
    z = 0
    for part in parts:
        z = splitmix64(z ^ (part & _MASK64))
    return z >> 1
