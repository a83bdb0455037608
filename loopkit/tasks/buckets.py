"""Rated puzzle files (sudoku, Lichess) split into eval sets by rating."""

from __future__ import annotations

import math

import numpy as np


def bucket_indices(ratings, buckets: list[float]) -> list[tuple[str, np.ndarray]]:
    """The buckets [lo, hi) between the sorted edges `buckets`, with -inf and inf added at the ends,
    that hold a puzzle: per bucket its name suffix 'lo-hi' (an open end left out: '-1500', '2000-')
    and the indices of its puzzles in file order. A NaN rating falls in no bucket."""
    ratings = np.asarray(ratings, dtype=np.float64)
    edges = [-math.inf, *sorted(buckets), math.inf]
    found = []
    for lo, hi in zip(edges, edges[1:]):
        rows = np.flatnonzero((ratings >= lo) & (ratings < hi))
        if len(rows):
            found.append((f"{'' if lo == -math.inf else f'{lo:g}'}-{'' if hi == math.inf else f'{hi:g}'}", rows))
    return found
