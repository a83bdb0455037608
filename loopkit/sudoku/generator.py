"""Seeded sudoku generator with difficulty levels, parallel over processes, cached on disk.

A puzzle is made by filling a random complete grid, then visiting its 81 cells in random order
and removing each clue when the puzzle stays acceptable without it (one solution; for the
singles-only levels, also solvable by singles propagation alone). Removing clues only ever adds
solutions and removes deductions, so one pass leaves a puzzle from which no further clue can be
removed (minimal) unless a clue target stopped it earlier. The finished puzzle is graded by the
exact solver with ``limit=2`` (what ``solve(puzzle, limit=2)`` returns), which also re-verifies
that it has exactly one solution: the one the grid was made from.

Grades: ``clues`` (givens), ``nodes`` (guesses the solver of :mod:`loopkit.sudoku.solver` needs
to find the solution and prove there is no other; 0 means naked and hidden singles suffice) and
``propagation_only`` (``nodes == 0``).

Levels (what a puzzle of each level satisfies; the tests check exactly these):

========  ============================================  ======================================
level     definition                                    how it is made
========  ============================================  ======================================
easy      singles only (nodes == 0), clues >= 36        singles-only removal down to a target
                                                        drawn uniformly from 36..45 clues
medium    singles only (nodes == 0), clues <= 30        singles-only removal until no clue can
                                                        go (typically 22..28 clues)
hard      unique, needs search: 1 <= nodes <= 9         removal until minimal (unique only)
expert    minimal (no clue removable), nodes >= 10      removal until minimal (unique only)
========  ============================================  ======================================

A sudoku player would agree with the ladder: easy and medium need only "this cell can only be X"
and "X can only go here" moves, medium with far fewer clues to start from; hard puzzles cannot be
finished by those moves alone (players need pairs, chains or trial); expert puzzles are minimal
and need many trials even for a solver that propagates after every guess. Levels that a removal
pass misses (e.g. a minimal puzzle needing 3 guesses when expert is asked for) are rejected and a
new grid is drawn: about 2 draws per hard puzzle and 7 per expert one. ``nodes`` depends on which
cell the search branches on first, so a symmetric copy of a puzzle (see :mod:`.augment`) can grade
a few nodes differently; levels are defined on the puzzles as generated.

Reproducibility: puzzle ``i`` of ``generate(level, n, seed)`` is drawn from its own stream,
``SeedSequence(seed, spawn_key=(level index in LEVELS, i))``, so the output does not depend on
the number of workers nor on how the work is split, and puzzle ``i`` is the same for every
``n > i``. Only numpy's SeedSequence/PCG64 and Python's ``random.Random`` are used, both stable
across versions and platforms.
Bump ``GENERATOR_VERSION`` whenever the output for a given seed changes (it keys the cache).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import atomic
from ..cache import read_arrays
from ..pool import run_chunks
from .solver import (
    _BOXES,
    ALL,
    BOX,
    CELL_UNITS,
    COL,
    POPCOUNT,
    ROW,
    propagates,
    solve_cells,
)

GENERATOR_VERSION = 1


class Grade(NamedTuple):
    clues: int
    nodes: int
    propagation_only: bool


@dataclass(frozen=True)
class Level:
    """How to make a level (removal rule, clue target) and the test every output must pass."""

    singles_only: bool
    target_clues: tuple[int, int] | None  # remove down to a target drawn from [lo, hi]
    min_clues: int = 17
    max_clues: int = 81
    min_nodes: int = 0
    max_nodes: int | None = None

    def accepts(self, g: Grade) -> bool:
        if self.singles_only and not g.propagation_only:
            return False
        if not self.min_clues <= g.clues <= self.max_clues or g.nodes < self.min_nodes:
            return False
        return self.max_nodes is None or g.nodes <= self.max_nodes


LEVELS: dict[str, Level] = {
    "easy": Level(singles_only=True, target_clues=(36, 45), min_clues=36),
    "medium": Level(singles_only=True, target_clues=None, max_clues=30),
    "hard": Level(singles_only=False, target_clues=None, min_nodes=1, max_nodes=9),
    "expert": Level(singles_only=False, target_clues=None, min_nodes=10),
}
_MAX_ATTEMPTS = 10_000


def _py_random(rng: np.random.Generator) -> random.Random:
    # Python's Random shuffles small lists far faster than numpy calls in the inner loops
    return random.Random(int(rng.integers(0, 2**63)))


def _full_grid(r: random.Random) -> list[int]:
    while True:
        # the three diagonal boxes share no row/column, so independent random fills are
        # consistent; randomized search completes the rest
        cells = [0] * 81
        for b in (0, 4, 8):
            digits = list(range(1, 10))
            r.shuffle(digits)
            for c, d in zip(_BOXES[b], digits):
                cells[c] = d
        sols, _ = solve_cells(cells, 1, order=r, hidden=False)  # hidden singles rarely fire here
        if sols:
            return sols[0]


def random_full_grid(rng: np.random.Generator) -> np.ndarray:
    """A random complete valid grid, (81,) int8, determined by ``rng``."""
    return np.array(_full_grid(_py_random(rng)), dtype=np.int8)


def _hidden_single(cells, i, b, rows, cols, boxes) -> bool:
    """True when, in one of cell ``i``'s units, digit bit ``b`` is excluded by the givens from
    every other blank cell."""
    for unit in CELL_UNITS[i]:
        for j in unit:
            if j != i and not cells[j] and not (rows[ROW[j]] | cols[COL[j]] | boxes[BOX[j]]) & b:
                break
        else:
            return True
    return False


def _remove_clues(
    cells: list[int], r: random.Random, singles_only: bool, min_clues: int
) -> list[int]:
    """One pass of clue removal in random order (see the module docstring); modifies ``cells``."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(cells):
        if v:
            b = 1 << (v - 1)
            rows[ROW[i]] |= b
            cols[COL[i]] |= b
            boxes[BOX[i]] |= b
    clues = sum(1 for v in cells if v)
    order = [i for i in range(81) if cells[i]]
    r.shuffle(order)
    for i in order:
        if clues <= min_clues:
            break
        v = cells[i]
        b = 1 << (v - 1)
        ri, ci, xi = ROW[i], COL[i], BOX[i]
        rows[ri] ^= b
        cols[ci] ^= b
        boxes[xi] ^= b
        cells[i] = 0
        if POPCOUNT[ALL & ~(rows[ri] | cols[ci] | boxes[xi])] == 1:
            ok = True  # naked single: the removed digit is the only one its peers allow
        elif _hidden_single(cells, i, b, rows, cols, boxes):
            ok = True  # no other blank of one of its units can take the digit
        elif singles_only:
            # singles solved the puzzle with this clue and deductions only grow with the
            # givens, so they solve it without the clue iff they still recover the clue
            ok = propagates(cells, target=i)
        else:
            # the puzzle had one solution, with v here; it keeps one iff none has another digit
            ok = not solve_cells(cells, 1, exclude=(i, v))[0]
        if ok:
            clues -= 1
        else:
            cells[i] = v
            rows[ri] |= b
            cols[ci] |= b
            boxes[xi] |= b
    return cells


def _make(r: random.Random, min_clues: int, singles_only: bool, full: list[int] | None = None):
    """Pure-Python core of :func:`make_puzzle`: (puzzle list, solution list, Grade)."""
    if full is None:
        full = _full_grid(r)
    puzzle = _remove_clues(list(full), r, singles_only, min_clues)
    sols, nodes = solve_cells(puzzle, 2)  # the grade, and the proof of one solution
    if len(sols) != 1 or sols[0] != full:
        raise RuntimeError("generated puzzle is not uniquely solvable (generator bug)")
    return puzzle, full, Grade(81 - puzzle.count(0), nodes, nodes == 0)


def make_puzzle(
    rng: np.random.Generator,
    min_clues: int = 17,
    singles_only: bool = False,
    solution: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, Grade]:
    """Remove clues from ``solution`` (default: a random full grid) keeping one solution.

    Stops at ``min_clues`` clues or when no clue can be removed; ``singles_only`` keeps the puzzle
    solvable by singles propagation. Returns ``(puzzle, solution, grade)`` as (81,) int8 arrays.
    """
    full = None if solution is None else [int(v) for v in np.asarray(solution).ravel()]
    puzzle, full, grade = _make(_py_random(rng), min_clues, singles_only, full)
    return np.array(puzzle, dtype=np.int8), np.array(full, dtype=np.int8), grade


def make_level_puzzle(level: str, rng: np.random.Generator):
    """One puzzle of ``level``: draw, grade, and redraw until the grade fits the level."""
    spec = LEVELS[level]
    r = _py_random(rng)
    for _ in range(_MAX_ATTEMPTS):
        lo = 17 if spec.target_clues is None else r.randint(*spec.target_clues)
        puzzle, full, grade = _make(r, lo, spec.singles_only)
        if spec.accepts(grade):
            return np.array(puzzle, dtype=np.int8), np.array(full, dtype=np.int8), grade
    raise RuntimeError(f"no {level} puzzle in {_MAX_ATTEMPTS} attempts")


def _puzzle_seed(level: str, seed: int, i: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(list(LEVELS).index(level), i))


def _make_range(args: tuple[str, int, int, int]):
    """Puzzles ``start..stop-1`` as compact arrays (cheap to pickle back from a worker)."""
    level, seed, start, stop = args
    made = [
        make_level_puzzle(level, np.random.default_rng(_puzzle_seed(level, seed, i)))
        for i in range(start, stop)
    ]
    puzzles = np.stack([m[0] for m in made])
    solutions = np.stack([m[1] for m in made])
    grades = np.array([m[2] for m in made], dtype=np.int32).reshape(-1, 3)
    return start, puzzles, solutions, grades


def cache_path(cache_dir, level: str, n: int, seed: int) -> Path:
    return Path(cache_dir) / f"sudoku-{level}-n{n}-seed{seed}-v{GENERATOR_VERSION}.npz"


def generate(
    level: str,
    n: int,
    seed: int = 0,
    workers: int = 1,
    cache_dir=None,
    progress: bool = True,
    read_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``n`` puzzles of ``level``: ``(puzzles (n,81) int8, solutions (n,81) int8, grades)``.

    ``grades`` maps ``clues``, ``nodes`` and ``propagation_only`` to (n,) arrays. Identical for
    every ``workers``; with ``cache_dir`` the result is stored as an .npz keyed by level, n, seed
    and generator version, and read back on the next call; with ``read_only`` it is only read there
    (a cache folder named by a run folder's stored config, ``loopkit.runfolder``).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown sudoku level {level!r}; choose one of {', '.join(LEVELS)}")
    if n < 0 or seed < 0:
        raise ValueError("n and seed must be non-negative")
    path = cache_path(cache_dir, level, n, seed) if cache_dir is not None else None
    if path is not None and path.exists():
        z = read_arrays(path, ("puzzles", "solutions", "clues", "nodes", "propagation_only"))
        return z["puzzles"], z["solutions"], {k: z[k] for k in ("clues", "nodes", "propagation_only")}


    chunk = max(1, min(64, n // (max(workers, 1) * 8) or 1))
    tasks = [(level, seed, s, min(s + chunk, n)) for s in range(0, n, chunk)]
    puzzles = np.zeros((n, 81), dtype=np.int8)
    solutions = np.zeros((n, 81), dtype=np.int8)
    table = np.zeros((n, 3), dtype=np.int32)  # clues, nodes, propagation_only

    def store(part) -> int:
        start, p, s, g = part
        puzzles[start : start + len(p)], solutions[start : start + len(p)] = p, s
        table[start : start + len(p)] = g
        return len(p)

    run_chunks(_make_range, tasks, store, workers, n, f"sudoku {level}", "puzzle", progress)
    grades = {
        "clues": table[:, 0].astype(np.int16),
        "nodes": table[:, 1].copy(),
        "propagation_only": table[:, 2].astype(bool),
    }
    if path is not None and not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as tmp:
            np.savez(tmp, puzzles=puzzles, solutions=solutions, **grades)
    return puzzles, solutions, grades
