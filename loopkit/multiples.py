"""A metric's curve over test-time T read at multiples of the training T (T, 2T, 4T), and shares
printed as percentages: the numbers `loopkit eval`, `loopkit compare` and the demo show."""

from __future__ import annotations

MULTIPLES = (1, 2, 4)  # of the training T


def at_multiples(curve: list[float], train_iters: int,
                 multiples: tuple[int, ...] = MULTIPLES) -> dict[int, float | None]:
    """k -> the curve's value at T = k * train_iters (curve[t - 1] is the value at T = t); None where
    the curve stops short of it (evaluated with fewer iterations): never the value at another T."""
    return {k: curve[k * train_iters - 1] if 1 <= k * train_iters <= len(curve) else None for k in multiples}


def percent(share: float | None, width: int = 0, unit: str = "%", missing: str = "n/a") -> str:
    """A share (0..1) in per cent with one decimal and `unit` after it, right-aligned in `width`
    characters; `missing` for None."""
    return (missing if share is None else f"{100 * share:.1f}{unit}").rjust(width)
