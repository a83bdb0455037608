"""Maze generation rate: mazes per second per size, perfect and with loops, 1 process and a pool.

Every maze is counted with its target (BFS shortest path; with loops, start/goal redrawn until the
shortest path is unique), as ``loopkit.mazes.generate`` returns it. The 1-process column runs
``generate(..., workers=1)`` on ``--seconds`` worth of mazes; the pool column runs
``generate(..., workers=W)`` with the pool forced on (``POOL_MIN_CHARS = 0``) on ``--pool-seconds``
worth of serial work, its start-up (spawn, imports) included, as a caller would pay it.

    OMP_NUM_THREADS=1 python benchmarks/maze_rate.py [--sizes 9,59] [--loops 0.1] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from tqdm import tqdm

from loopkit.mazes import generate, maze_at
from loopkit.mazes import generator as generator_module

SIZES = (9, 11, 13, 15, 17, 19, 23, 29, 39, 49, 59, 99)


def probe(size: int, loops: float, seconds: float = 0.3) -> float:
    """A rough serial rate, to size the timed runs."""
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < seconds or k < 2:
        maze_at(size, 99, k, loops)
        k += 1
    return k / (time.perf_counter() - t)


def rate(size: int, n: int, loops: float, workers: int) -> float:
    t = time.perf_counter()
    x, _ = generate(size, n, seed=1, loops=loops, workers=workers, progress=False)
    assert len(x) == n
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--loops", type=float, default=0.1, help="the loopy variant's share of inner walls opened")
    ap.add_argument("--workers", type=int, default=2, help="pool size (0: skip the pool column)")
    ap.add_argument("--seconds", type=float, default=2.0, help="serial work per 1-process measurement")
    ap.add_argument("--pool-seconds", type=float, default=8.0, help="serial-equivalent work per pool measurement")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    generator_module.POOL_MIN_CHARS = 0  # measure the pool even where generate() would not start one

    rows = []
    cells = [(size, loops) for size in sizes for loops in (0.0, args.loops)]
    for size, loops in tqdm(cells, desc="maze rate", unit="setting"):
        guess = probe(size, loops)
        n1 = max(4, int(guess * args.seconds))
        one = rate(size, n1, loops, 1)
        pool = None
        if args.workers > 1:
            pool = rate(size, max(8, int(one * args.pool_seconds)), loops, args.workers)
        rows.append((size, loops, n1, one, pool))

    print(f"\nloopkit.mazes, mazes/second with targets; python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    head = f"| size | cells | loops | 1 process | {args.workers} workers (pool, start-up included) | ratio |"
    print(head)
    print("| --- | --- | --- | --- | --- | --- |")
    for size, loops, _, one, pool in rows:
        m = (size - 1) // 2
        par = f"{pool:,.1f}" if pool else "-"
        ratio = f"{pool / one:.2f}x" if pool else "-"
        print(f"| {size} | {m}x{m} | {loops:g} | {one:,.1f} | {par} | {ratio} |")


if __name__ == "__main__":
    main()
