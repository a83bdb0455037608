"""Exact sudoku solver: bitmask candidates, singles propagation, then depth-first search.

Each cell holds a 9-bit mask of the digits still possible (bit d-1 for digit d). Propagation
repeats two rules until nothing changes: a *naked single* (a cell with one candidate) removes its
digit from its 20 peers, and a *hidden single* (a digit with one possible place in a row, column
or box) is placed there. When propagation stalls, the search guesses each candidate of the
unsolved cell with the fewest candidates, propagating after every guess.

``nodes`` counts guesses (one per candidate tried), so it measures how far beyond singles a
puzzle is; ``nodes == 0`` means singles alone decided the puzzle. With ``limit=2`` on a puzzle
with one solution the search must exhaust the tree to prove there is no second one, so the count
does not depend on the order in which digits are tried.

Pure Python on ints: the hot loops are a handful of integer operations per peer/unit cell, which
beats per-cell numpy calls for a single 81-cell grid and keeps ``pip install`` free of compilers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ALL = 0x1FF  # digits 1..9 possible

_ROWS = [[r * 9 + c for c in range(9)] for r in range(9)]
_COLS = [[r * 9 + c for r in range(9)] for c in range(9)]
_BOXES = [
    [(br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3)]
    for br in range(3)
    for bc in range(3)
]
UNITS: tuple[tuple[int, ...], ...] = tuple(tuple(u) for u in _ROWS + _COLS + _BOXES)
PEERS: tuple[tuple[int, ...], ...] = tuple(
    tuple(sorted({p for u in UNITS if i in u for p in u} - {i})) for i in range(81)
)
CELL_UNITS: tuple[tuple[tuple[int, ...], ...], ...] = tuple(
    tuple(u for u in UNITS if i in u) for i in range(81)
)
UNIT_BITS = tuple(sum(1 << u for u, unit in enumerate(UNITS) if i in unit) for i in range(81))
ALL_UNITS = (1 << 27) - 1
ROW = tuple(i // 9 for i in range(81))
COL = tuple(i % 9 for i in range(81))
BOX = tuple((i // 27) * 3 + (i % 9) // 3 for i in range(81))
POPCOUNT = tuple(bin(m).count("1") for m in range(512))
# digit of a single-bit mask (0 for masks with zero or several bits)
DIGIT = tuple((m.bit_length() if m and not m & (m - 1) else 0) for m in range(512))


@dataclass
class SolveResult:
    """Solutions found (at most ``limit``), guesses made, and whether propagation sufficed."""

    solutions: list[np.ndarray] = field(default_factory=list)
    nodes: int = 0
    propagation_only: bool = True  # decided (solved or refuted) without any guess

    @property
    def count(self) -> int:
        return len(self.solutions)

    @property
    def unique(self) -> bool:
        """Exactly one solution; only conclusive when solved with ``limit >= 2``."""
        return len(self.solutions) == 1


def _propagate(
    cand: list[int], queue: list[int], target: int = -1, dirty: int = ALL_UNITS, hidden=True
) -> bool:
    """Apply naked and hidden singles in place; False on a contradiction.

    ``queue`` holds cells newly reduced to one candidate whose digit is not yet removed from
    their peers; ``dirty`` (a bit per unit) the units whose cells changed since they were last
    scanned for hidden singles, so a pass after a guess scans a few units instead of 27. With
    ``target >= 0``, stop early (True) once that cell is decided; ``hidden=False`` applies naked
    singles only (cheaper when filling a near-empty grid, where hidden singles rarely fire).
    """
    peers, units, unit_bits = PEERS, UNITS, UNIT_BITS
    while True:
        while queue:
            c = queue.pop()
            m = cand[c]
            for p in peers[c]:
                pm = cand[p]
                if pm & m:
                    pm ^= m
                    if not pm:
                        return False
                    cand[p] = pm
                    dirty |= unit_bits[p]
                    if not pm & (pm - 1):
                        if p == target:
                            return True
                        queue.append(p)
        if not hidden:
            return True
        # hidden singles: digits with exactly one place among the unsolved cells of a unit
        todo, dirty = dirty, 0
        while todo:
            low = todo & -todo
            todo ^= low
            unit = units[low.bit_length() - 1]
            once = twice = solved = 0
            for c in unit:
                m = cand[c]
                if m & (m - 1):
                    twice |= once & m
                    once |= m
                else:
                    solved |= m
            if once | solved != ALL:
                return False  # some digit has no place left in this unit
            lone = once & ~twice & ~solved
            while lone:
                b = lone & -lone
                lone ^= b
                for c in unit:
                    if cand[c] & b:
                        # a cell holding two hidden singles loses one digit's only place,
                        # which the next pass reports as a contradiction
                        if c == target:
                            return True
                        cand[c] = b
                        dirty |= unit_bits[c]
                        queue.append(c)
                        break
        if not queue:
            return True


def _search(cand: list[int], limit: int, out: list[list[int]], order=None, hidden=True) -> int:
    """Depth-first search from a propagated state; appends solutions to ``out``.

    Returns the number of guesses made. ``order`` (a ``random.Random``) varies the digit tried
    first at each branch, which turns the solver into a random full-grid generator.
    """
    best, best_n = -1, 10
    for i in range(81):
        n = POPCOUNT[cand[i]]
        if 1 < n < best_n:
            best, best_n = i, n
            if n == 2:
                break
    if best < 0:
        out.append(cand)
        return 0
    m = cand[best]
    bits = []
    while m:
        b = m & -m
        bits.append(b)
        m ^= b
    if order is not None and len(bits) > 1:
        k = int(order.random() * len(bits))  # a random rotation: each digit equally often first
        bits = bits[k:] + bits[:k]
    nodes = 0
    for b in bits:
        nodes += 1
        child = cand.copy()
        child[best] = b
        if _propagate(child, [best], -1, UNIT_BITS[best], hidden):
            nodes += _search(child, limit, out, order, hidden)
        if len(out) >= limit:
            break
    return nodes


def initial_candidates(cells: list[int], exclude: tuple[int, int] | None = None):
    """Candidate masks of a grid (81 ints, 0 = blank) before propagation, or None on a conflict.

    Blanks start from the digits absent from their row, column and box, which costs one pass over
    the grid rather than an elimination per given and peer. ``exclude=(cell, digit)`` also forbids
    ``digit`` at that blank cell (the generator's uniqueness test). Returns ``(cand, queue)`` with
    the blanks already reduced to a single candidate in ``queue``.
    """
    rows = [0] * 9
    cols = [0] * 9
    boxes = [0] * 9
    for v, r, c, x in zip(cells, ROW, COL, BOX):
        if v:
            b = 1 << (v - 1)
            if (rows[r] | cols[c] | boxes[x]) & b:
                return None
            rows[r] |= b
            cols[c] |= b
            boxes[x] |= b
    cand = [0] * 81
    queue = []
    for i, v, r, c, x in zip(range(81), cells, ROW, COL, BOX):
        if v:
            cand[i] = 1 << (v - 1)
        else:
            m = ALL & ~(rows[r] | cols[c] | boxes[x])
            if not m:
                return None
            cand[i] = m
            if not m & (m - 1):
                queue.append(i)
    if exclude is not None:
        i, v = exclude
        m = cand[i] & ~(1 << (v - 1))
        if not m:
            return None
        if m != cand[i] and not m & (m - 1):
            queue.append(i)
        cand[i] = m
    return cand, queue


def solve_cells(
    cells: list[int],
    limit: int = 2,
    order=None,
    exclude: tuple[int, int] | None = None,
    hidden: bool = True,
) -> tuple[list[list[int]], int]:
    """Solve a grid given as 81 ints (0 = blank); returns (solutions as digit lists, guesses).

    The list-based core used by the generator and loader, which avoids numpy round trips.
    ``hidden=False`` propagates naked singles only, so ``nodes`` is then not the graded count.
    """
    start = initial_candidates(cells, exclude)
    out: list[list[int]] = []
    if start is None or not _propagate(*start, -1, ALL_UNITS, hidden):
        return out, 0
    nodes = _search(start[0], limit, out, order, hidden)
    return [[DIGIT[m] for m in s] for s in out], nodes


def propagates(cells: list[int], target: int = -1) -> bool:
    """True when singles propagation alone solves the grid (which also proves it unique).

    With ``target``, only whether propagation decides that cell (the generator's test when the
    grid minus that cell is known to be solved by singles).
    """
    start = initial_candidates(cells)
    if start is None:
        return False
    cand, queue = start
    if target in queue:
        return True
    if not _propagate(cand, queue, target):
        return False
    if target >= 0:
        return not cand[target] & (cand[target] - 1)
    return all(not m & (m - 1) for m in cand)


def _as_cells(grid) -> list[int]:
    a = np.asarray(grid).reshape(-1)
    if a.size != 81:
        raise ValueError(f"a sudoku grid has 81 cells, got {a.size}")
    cells = a.tolist()
    if any(not 0 <= v <= 9 for v in cells):
        raise ValueError("sudoku cells must be 0 (blank) or 1..9")
    return [int(v) for v in cells]


def solve(grid, limit: int = 2) -> SolveResult:
    """Find up to ``limit`` solutions of an 81-cell grid (0 = blank); ``limit=2`` tests uniqueness."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    sols, nodes = solve_cells(_as_cells(grid), limit)
    return SolveResult(
        solutions=[np.array(s, dtype=np.int8) for s in sols],
        nodes=nodes,
        propagation_only=nodes == 0,
    )


def is_valid_solution(grid81, puzzle81) -> bool:
    """True when ``grid81`` is a complete valid sudoku that keeps every given of ``puzzle81``.

    This is the task's correctness metric: a puzzle with one solution is solved exactly when this
    holds, without needing the reference solution.
    """
    g, p = np.asarray(grid81), np.asarray(puzzle81)
    if g.size != 81 or p.size != 81:
        return False
    return bool(valid_solutions(g, p)[0])


_UNIT_INDEX = np.asarray(UNITS)


def valid_solutions(grids, puzzles) -> np.ndarray:
    """:func:`is_valid_solution` over a batch: (n, 81) grids and puzzles -> (n,) bool."""
    g = np.asarray(grids).reshape(-1, 81).astype(np.int64)
    p = np.asarray(puzzles).reshape(-1, 81)
    if len(g) != len(p):
        raise ValueError(f"{len(g)} grids for {len(p)} puzzles")
    keeps = ((p == 0) | (g == p)).all(axis=1)
    units = np.sort(g[:, _UNIT_INDEX], axis=2)  # (n, 27, 9): each must read 1..9
    return keeps & (units == np.arange(1, 10)).all(axis=(1, 2))


def first_conflict(cells) -> str | None:
    """Describe the first digit given twice in a row, column or box (1-based), else None."""
    cells = list(cells)
    names = [f"row {i + 1}" for i in range(9)] + [f"column {i + 1}" for i in range(9)]
    names += [f"box {i + 1}" for i in range(9)]
    for name, unit in zip(names, UNITS):
        seen = 0
        for c in unit:
            v = cells[c]
            if v:
                b = 1 << (v - 1)
                if seen & b:
                    return f"digit {v} appears twice in {name}"
                seen |= b
    return None
