"""Validity-preserving sudoku augmentation, vectorized over a batch.

Relabelling the digits, transposing, permuting the three bands (row triples) and the three stacks
(column triples), and permuting rows within a band and columns within a stack all map valid
grids to valid grids and puzzles with one solution to puzzles with one solution, so a model can
be shown many equivalent copies of each training puzzle (about 1.2e12 per grid).
"""

from __future__ import annotations

import numpy as np


def _line_perm(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 9) row (or column) orders: a band order, then an order inside each band."""
    bands = rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1)
    inner = rng.permuted(np.tile(np.arange(3), (n, 3, 1)), axis=2)
    return (bands[:, :, None] * 3 + inner).reshape(n, 9)


def augment(puzzles, solutions=None, rng: np.random.Generator | None = None):
    """Apply one random symmetry per sample to ``puzzles`` (n, 81) and the same to ``solutions``.

    Returns ``(puzzles, solutions)`` (``solutions`` is None when not given), same dtype as the
    inputs; blanks (0) stay blank.
    """
    rng = np.random.default_rng() if rng is None else rng
    puzzles = np.asarray(puzzles)
    if puzzles.ndim != 2 or puzzles.shape[1] != 81:
        raise ValueError(f"expected puzzles of shape (n, 81), got {puzzles.shape}")
    n = len(puzzles)
    rows, cols = _line_perm(rng, n), _line_perm(rng, n)
    idx = rows[:, :, None] * 9 + cols[:, None, :]  # new cell (i, j) <- old (rows[i], cols[j])
    flip = rng.random(n) < 0.5
    idx = np.where(flip[:, None, None], idx.transpose(0, 2, 1), idx).reshape(n, 81)
    relabel = np.concatenate(
        [np.zeros((n, 1), dtype=np.int64), rng.permuted(np.tile(np.arange(1, 10), (n, 1)), axis=1)],
        axis=1,
    )  # relabel[k, d] = new digit for digit d of sample k; 0 stays 0

    def apply(grids):
        grids = np.asarray(grids)
        if grids.shape != puzzles.shape:
            raise ValueError(f"solutions shape {grids.shape} differs from puzzles {puzzles.shape}")
        moved = np.take_along_axis(grids.astype(np.int64), idx, axis=1)
        return np.take_along_axis(relabel, moved, axis=1).astype(grids.dtype)

    return apply(puzzles), None if solutions is None else apply(solutions)
