"""The shapes captured steps are compiled for: widths and cache capacities in powers of two, so
a few graphs serve every tree and prompt length."""

from __future__ import annotations

MIN_CAPACITY = 256


def width_bucket(n: int) -> int:
    """The forward width ``n`` tokens run at: the next power of two."""
    if n < 1:
        raise ValueError(f"a forward feeds at least one token, got {n}")
    return 1 << (n - 1).bit_length()


def capacity_bucket(entries: int) -> int:
    """The static cache capacity for at most ``entries`` entries: the next power of two, at
    least :data:`MIN_CAPACITY`."""
    return max(MIN_CAPACITY, 1 << max(entries - 1, 0).bit_length())
