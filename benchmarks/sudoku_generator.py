"""Sudoku generation rate: loopkit.sudoku against py-sudoku (PyPI), same process, same machine.

Every loopkit puzzle is counted only after ``solve(puzzle, limit=2)`` proved it has exactly one
solution (the generator does this for each puzzle, inside the timing). py-sudoku
(``Sudoku(3, seed=i).difficulty(d)``) blanks a random fraction ``d`` of a solved grid and then runs
its own two-way search (``has_multiple_solutions``); its time therefore includes that check, and
we report both its rate of puzzles made and its rate of puzzles that came out unique (its
outputs are re-checked with loopkit's solver outside the timing). ``d = 0.5`` leaves 41 clues,
about loopkit's "easy" level (36..45 clues); ``d = 0.6`` leaves 33.

    pip install py-sudoku   # benchmark-only, not a loopkit dependency
    python benchmarks/sudoku_generator.py [--seconds 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from loopkit.sudoku import generate, make_puzzle, solve

DEFAULT_N = {"easy": 2000, "medium": 600, "hard": 200, "expert": 60}


def ours_level(level: str, n: int, workers: int) -> float:
    t = time.perf_counter()
    puzzles, _, _ = generate(level, n, seed=1, workers=workers, progress=False)
    rate = n / (time.perf_counter() - t)
    assert all(solve(p).unique for p in puzzles[: min(n, 200)])  # spot re-check, untimed
    return rate


def ours_clues(clues: int, seconds: float) -> tuple[float, int]:
    """Unique puzzles with exactly ``clues`` givens (no singles constraint), like py-sudoku's."""
    rng = np.random.default_rng(7)
    t, made, exact = time.perf_counter(), 0, 0
    while time.perf_counter() - t < seconds:
        _, _, grade = make_puzzle(rng, min_clues=clues)
        made += 1
        exact += grade.clues == clues  # a removal pass can get stuck above the target
    return exact / (time.perf_counter() - t), made


def theirs(Sudoku, d: float, seconds: float) -> tuple[float, float, int, int]:
    t, made, flagged, boards = time.perf_counter(), 0, 0, []
    while time.perf_counter() - t < seconds:
        p = Sudoku(3, seed=made).difficulty(d)  # pass the seed: its default is fixed at import
        made += 1
        if p.get_difficulty() != -3:  # -3: its own check found several solutions
            flagged += 1
            boards.append([v or 0 for row in p.board for v in row])
    dt = time.perf_counter() - t
    truly = sum(solve(np.array(b, dtype=np.int8)).unique for b in boards)
    clues = 81 - int(d * 81)
    return made / dt, truly / dt, clues, flagged - truly


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="time per py-sudoku setting")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the puzzles per level")
    args = ap.parse_args()

    print("loopkit.sudoku, unique puzzles/second")
    ours = {}
    for level, n in DEFAULT_N.items():
        n = max(4, int(n * args.scale))
        ours[level] = ours_level(level, n, 1)
        par = ours_level(level, n, args.workers)
        print(
            f"  {level:7s} n={n:5d}  1 process: {ours[level]:8.1f}/s"
            f"   {args.workers} workers: {par:8.1f}/s ({par / ours[level]:.2f}x)"
        )
    try:
        from sudoku import Sudoku
    except ImportError:
        print("\npy-sudoku not installed: `pip install py-sudoku` to compare (benchmark only)")
        return
    print("\nsame clue count, unique puzzles/second, 1 process")
    for d in (0.5, 0.6):
        made, unique, clues, wrong = theirs(Sudoku, d, args.seconds)
        mine, _ = ours_clues(clues, args.seconds / 2)
        print(
            f"  {clues} clues  py-sudoku: {made:7.1f} made/s, {unique:6.1f} unique/s"
            f"{f' ({wrong} flagged unique wrongly)' if wrong else ''}"
            f"   loopkit make_puzzle(min_clues={clues}): {mine:7.1f}/s"
            f"   ratio {mine / max(unique, 1e-9):.1f}x unique, {mine / made:.1f}x made"
        )
        if d == 0.5:
            easy = ours["easy"]
            print(
                f"  loopkit 'easy' (36-45 clues, singles-solvable) {easy:.1f}/s: "
                f"{easy / max(unique, 1e-9):.1f}x py-sudoku's unique rate, {easy / made:.1f}x its made rate"
            )


if __name__ == "__main__":
    main()
