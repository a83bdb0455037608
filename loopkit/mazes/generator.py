"""Seeded maze generator: perfect mazes (one path between any two cells) and mazes with loops.

Size convention (that of the easy-to-hard maze datasets of the deep-thinking networks, where
mazes of size 9 are trained on and mazes of size 59 are tested): a maze of *size n* (n odd,
n >= 5) is an n x n grid of characters, walls included. Its ``m = (n - 1) / 2`` by ``m`` *cells*
lie at the odd coordinates (row and column both odd, 0-based); the characters between two
neighbouring cells (one coordinate odd, the other even) are walls or *passages*; the characters
with both coordinates even, the border included, are always walls. Size 9 has 4 x 4 cells, 59
has 29 x 29.

A maze is a NumPy ``uint8`` array of tokens ``WALL = 0``, ``OPEN = 1``, ``START = 2``,
``GOAL = 3``, shape ``(n, n)``. Its target is a ``uint8`` array of the same shape: 1 on every
character of the start -> goal path (start, goal, the cells in between and the passages that
join them), 0 elsewhere.

How a maze is made:

- **Perfect maze**: randomized depth-first search over the cells (an explicit stack, so size 201
  and beyond need no recursion): from a uniformly drawn first cell, repeatedly step to a uniformly
  drawn unvisited neighbour of the cell on top of the stack, opening the passage between them, and
  pop when there is none. The passages form a spanning tree of the cells: exactly one path joins
  any two cells.
- **Loops** (``loops > 0``): of the interior walls left between two neighbouring cells
  (``(m - 1) ** 2`` of them in a perfect maze), ``round(loops * (m - 1) ** 2)`` drawn uniformly
  are opened too, so several paths can join two cells.
- **Start and goal**: two distinct cells drawn uniformly (as the deep-thinking mazes do; not the
  pair at maximal distance), so the path length varies from maze to maze.
- **Target**: the shortest start -> goal path, found by breadth-first search on the character grid
  (:func:`shortest_path`), which also counts shortest paths (up to 2). A per-character target
  needs one answer, so with loops a start/goal pair with two or more shortest paths is rejected
  and another pair is drawn, up to ``PAIR_DRAWS`` times, after which a whole new maze (tree and
  opened walls) is drawn from the same stream. Every returned maze therefore has a *unique*
  shortest path. This rejection slightly favours pairs whose shortest path avoids symmetric
  loops; in a perfect maze the first pair is always accepted (the path is unique by the tree
  property).

Reproducibility: maze ``i`` of ``generate(size, n, seed, loops)`` is drawn from its own stream,
``SeedSequence(seed, spawn_key=(size, loops key, i))`` (:func:`maze_seed`; the loops key is the
bit pattern of ``loops`` as a float64), so any maze can be regenerated alone (:func:`maze_at`),
the output does not depend on the number of workers nor on how the work is split, and maze ``i``
is the same for every ``n > i``. Only numpy's SeedSequence/PCG64 and Python's ``random.Random``
(seeded from it) are used, both stable across versions and platforms.
Bump ``GENERATOR_VERSION`` whenever the output for a given seed changes (it keys the cache).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import atomic
from ..cache import read_arrays
from ..pool import run_chunks

GENERATOR_VERSION = 1
WALL, OPEN, START, GOAL = 0, 1, 2, 3
PAIR_DRAWS = 16  # start/goal pairs tried on one maze with loops before the maze is redrawn
_MAX_ATTEMPTS = 10_000  # mazes drawn for one output before giving up (loops near 1 on huge sizes)
# a spawned pool pays 1.5-4 s to start (numpy, then loopkit's imports, torch among them), and one
# process makes ~1.5 M characters of maze a second, so a pool is started only for jobs of n * size**2
# >= 20 M characters (~13 s serially: 5,700 mazes of size 59); benchmarks/README.md, "Maze generator"
POOL_MIN_CHARS = 20_000_000


class Solution(NamedTuple):
    """What :func:`shortest_path` found: ``target`` (uint8, 1 on a shortest start -> goal path;
    None when there is no path or several shortest ones), ``length`` (characters on a shortest
    path, start and goal included; 0 when there is none) and ``paths`` (number of shortest paths:
    0, 1, or 2 meaning two or more)."""

    target: np.ndarray | None
    length: int
    paths: int


def check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 5 or size % 2 == 0:
        raise ValueError(f"maze size must be an odd integer >= 5 (got {size!r}); see loopkit.mazes.generator")


def _check_loops(loops: float) -> float:
    loops = float(loops) + 0.0  # -0.0 -> 0.0, so both name the same mazes
    if not 0.0 <= loops <= 1.0:
        raise ValueError(f"loops must be in [0, 1] (got {loops!r})")
    return loops


def _py_random(rng: np.random.Generator) -> random.Random:
    # Python's Random draws small integers far faster than numpy calls in the inner loops
    return random.Random(int(rng.integers(0, 2**63)))


def _carve(n: int, r: random.Random) -> bytearray:
    """A perfect maze as a flat row-major bytearray of WALL/OPEN (randomized DFS, explicit stack)."""
    grid = bytearray(n * n)
    m = (n - 1) // 2
    is_cell = bytearray(n * n)
    for row in range(1, n, 2):
        is_cell[row * n + 1 : row * n + n - 1 : 2] = b"\x01" * m
    size = n * n
    steps = (1, -1, n, -n)
    first = (2 * r.randrange(m) + 1) * n + 2 * r.randrange(m) + 1
    grid[first] = OPEN
    stack = [first]
    while stack:
        p = stack[-1]
        # a step of 2 from a cell lands on a cell or on a wall-only position (column 0 or n - 1,
        # rows 0 or n - 1, or outside the grid), never wrapping onto another cell
        free = [d for d in steps if 0 <= p + 2 * d < size and is_cell[p + 2 * d] and not grid[p + 2 * d]]
        if not free:
            stack.pop()
            continue
        d = free[r.randrange(len(free))] if len(free) > 1 else free[0]
        grid[p + d] = OPEN
        grid[p + 2 * d] = OPEN
        stack.append(p + 2 * d)
    return grid


def _inner_walls(grid: bytearray, n: int) -> list[int]:
    """Flat positions of the walls that separate two neighbouring cells."""
    walls = []
    for row in range(1, n - 1):
        first = 2 if row % 2 else 1  # odd rows: walls between cells side by side; even: above/below
        walls.extend(p for p in range(row * n + first, row * n + n - 1, 2) if not grid[p])
    return walls


def _bfs(open_: bytes | bytearray, n: int, s: int, g: int) -> tuple[list[int] | None, int, int]:
    """Level-by-level BFS from ``s`` on a flat grid of row length ``n`` whose border is closed
    (no bounds checks needed): (the shortest path's positions from s to g when it is unique, else
    None; its length in characters; shortest paths, capped at 2)."""
    dist = [-1] * len(open_)
    count = [0] * len(open_)
    dist[s], count[s] = 0, 1
    frontier = [s]
    steps = (1, -1, n, -n)
    while frontier and dist[g] < 0:
        nxt = []
        for p in frontier:
            dq, cp = dist[p] + 1, count[p]
            for d in steps:
                q = p + d
                if open_[q]:
                    if dist[q] < 0:
                        dist[q], count[q] = dq, cp
                        nxt.append(q)
                    elif dist[q] == dq and count[q] < 2:
                        count[q] = min(2, count[q] + cp)
        frontier = nxt
    if dist[g] < 0:
        return None, 0, 0
    if count[g] > 1:
        return None, dist[g] + 1, 2
    path = [g]
    q = g
    while q != s:  # exactly one neighbour one step closer, since g has exactly one shortest path
        q = next(q + d for d in steps if dist[q + d] == dist[q] - 1 and open_[q + d])
        path.append(q)
    return path[::-1], dist[g] + 1, 1


def shortest_path(x: np.ndarray) -> Solution:
    """The shortest START -> GOAL path of maze ``x`` (a 2-D token array, any non-wall token
    passable, 4-connected moves), found by BFS on the character grid; see :class:`Solution`.

    Needs exactly one START and one GOAL and an all-wall border (ValueError otherwise)."""
    x = np.asarray(x)
    if x.ndim != 2 or min(x.shape) < 3:
        raise ValueError(f"a maze is a 2-D array of at least 3 x 3 (got shape {x.shape})")
    h, w = x.shape
    if x[0].any() or x[-1].any() or x[:, 0].any() or x[:, -1].any():
        raise ValueError("the maze's border must be all walls")
    flat = x.ravel()
    starts, goals = np.flatnonzero(flat == START), np.flatnonzero(flat == GOAL)
    if len(starts) != 1 or len(goals) != 1:
        raise ValueError(f"a maze needs one START and one GOAL (has {len(starts)} and {len(goals)})")
    passable = (flat != WALL).astype(np.uint8).tobytes()
    path, length, paths = _bfs(passable, w, int(starts[0]), int(goals[0]))
    target = None
    if path is not None:
        target = np.zeros(h * w, dtype=np.uint8)
        target[path] = 1
        target = target.reshape(h, w)
    return Solution(target, length, paths)


def make_maze(size: int, rng: np.random.Generator, loops: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One maze of ``size`` drawn from ``rng``: ``(x, y)``, both (size, size) uint8 (module
    docstring: tokens, target, how loops keep the shortest path unique)."""
    check_size(size)
    loops = _check_loops(loops)
    return _make(size, _py_random(rng), loops)


def _make(n: int, r: random.Random, loops: float) -> tuple[np.ndarray, np.ndarray]:
    m = (n - 1) // 2
    for _ in range(_MAX_ATTEMPTS):
        grid = _carve(n, r)
        if loops:
            walls = _inner_walls(grid, n)
            for p in r.sample(walls, round(loops * len(walls))):
                grid[p] = OPEN
        for _ in range(PAIR_DRAWS if loops else 1):
            a = r.randrange(m * m)
            b = r.randrange(m * m - 1)
            b += b >= a  # uniform over the cells other than a
            s = (2 * (a // m) + 1) * n + 2 * (a % m) + 1
            g = (2 * (b // m) + 1) * n + 2 * (b % m) + 1
            path, _, paths = _bfs(grid, n, s, g)
            if paths == 1:
                x = np.frombuffer(bytes(grid), dtype=np.uint8).copy()
                x[s], x[g] = START, GOAL
                y = np.zeros(n * n, dtype=np.uint8)
                y[path] = 1
                return x.reshape(n, n), y.reshape(n, n)
            if not loops:
                raise RuntimeError("a perfect maze with no unique path (generator bug)")
    raise RuntimeError(f"no maze of size {n} with loops={loops} and a unique shortest path in {_MAX_ATTEMPTS} draws")


def maze_seed(size: int, seed: int, i: int, loops: float = 0.0) -> np.random.SeedSequence:
    """The seed sequence of maze ``i`` of ``generate(size, n, seed, loops)``."""
    key = int(np.array(_check_loops(loops), dtype=np.float64).view(np.uint64))
    return np.random.SeedSequence(seed, spawn_key=(int(size), key, int(i)))


def maze_at(size: int, seed: int, i: int, loops: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Maze ``i`` of ``generate(size, n, seed, loops)`` for any ``n > i``, made alone."""
    return make_maze(size, np.random.default_rng(maze_seed(size, seed, i, loops)), loops)


def _make_range(args: tuple[int, int, float, int, int]):
    """Mazes ``start..stop-1`` as stacked arrays (cheap to pickle back from a worker)."""
    size, seed, loops, start, stop = args
    made = [maze_at(size, seed, i, loops) for i in range(start, stop)]
    return start, np.stack([m[0] for m in made]), np.stack([m[1] for m in made])


def cache_path(cache_dir, size: int, n: int, seed: int, loops: float = 0.0) -> Path:
    return Path(cache_dir) / f"maze-s{size}-n{n}-seed{seed}-loops{_check_loops(loops)!r}-v{GENERATOR_VERSION}.npz"


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def generate(
    size: int,
    n: int,
    seed: int = 0,
    loops: float = 0.0,
    workers: int = 0,
    cache_dir=None,
    progress: bool = True,
    read_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` mazes of ``size``: ``(x, y)``, both (n, size, size) uint8 (tokens and targets).

    ``workers``: processes to use, 0 for one per available CPU; a pool is started only when
    ``workers != 1`` and the work is large (``n * size**2 >= POOL_MIN_CHARS``), and the output is
    identical for every ``workers``. With ``cache_dir`` the result is stored as an .npz keyed by
    size, n, seed, loops and generator version (written to a temporary file in the same folder,
    then renamed into place) and read back on the next call; with ``read_only`` it is only read.
    """
    check_size(size)
    loops = _check_loops(loops)
    if n < 0 or seed < 0:
        raise ValueError("n and seed must be non-negative")
    if workers < 0:
        raise ValueError("workers must be >= 0 (0: one per CPU)")
    path = cache_path(cache_dir, size, n, seed, loops) if cache_dir is not None else None
    if path is not None and path.exists():
        z = read_arrays(path, ("x", "y"))
        return z["x"], z["y"]


    workers = workers or _cpus()
    if n * size * size < POOL_MIN_CHARS:
        workers = 1
    chunk = max(1, min(4096, n // (workers * 8)))
    tasks = [(size, seed, loops, s, min(s + chunk, n)) for s in range(0, n, chunk)]
    x = np.zeros((n, size, size), dtype=np.uint8)
    y = np.zeros((n, size, size), dtype=np.uint8)

    def store(part) -> int:
        start, px, py = part
        x[start : start + len(px)], y[start : start + len(px)] = px, py
        return len(px)

    run_chunks(_make_range, tasks, store, workers, n, f"mazes {size}x{size}", "maze", progress)
    if path is not None and not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as tmp:
            np.savez(tmp, x=x, y=y)
    return x, y
