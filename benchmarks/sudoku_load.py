"""Time to turn a user's sudoku file into eval sets (`loopkit.tasks.sudoku.file_sets`): parse,
check and solve every line. With ``--before REV`` the loader and task of that git revision run in
the same process on the same file, interleaved with the current ones (the machine's load hits
both alike).

The file has ``--lines`` lines of ``<id> <puzzle> <rating>`` and no solutions, so every puzzle is
searched: a few generated puzzles per level (easy, medium, hard), spread to the line count by
validity-preserving symmetries (the same search effort as the originals).

    python benchmarks/sudoku_load.py --lines 20000 --before d1cee99 --repeats 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from loopkit.sudoku import augment, generate, save_puzzles
from loopkit.tasks import sudoku as task_now

LEVELS = {"easy": 60, "medium": 30, "hard": 30}  # generated puzzles per level


def make_file(path: Path, lines: int) -> None:
    made = [generate(level, n, seed=5, workers=1, progress=False)[0] for level, n in LEVELS.items()]
    base = np.concatenate(made)
    rng = np.random.default_rng(0)
    puzzles, _ = augment(base[rng.integers(0, len(base), lines)], rng=rng)
    save_puzzles(path, puzzles, ids=[f"p{i:07d}" for i in range(lines)], ratings=rng.uniform(1, 9, lines).round(1))


def module_at(rev: str, file: str, name: str, package: str) -> types.ModuleType:
    """``file`` as it was at git revision ``rev``, imported as ``name`` inside ``package``."""
    source = subprocess.run(["git", "show", f"{rev}:{file}"], capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(name)
    module.__package__ = package
    sys.modules[name] = module
    exec(compile(source, f"{rev}:{file}", "exec"), module.__dict__)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--before", help="git revision to compare against (its io.py and tasks/sudoku.py)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    path = Path(tempfile.mkdtemp()) / "puzzles.txt"
    make_file(path, args.lines)
    versions = {"now": task_now.file_sets}
    if args.before:
        old_io = module_at(args.before, "loopkit/sudoku/io.py", "loopkit.sudoku._io_before", "loopkit.sudoku")
        old_task = module_at(args.before, "loopkit/tasks/sudoku.py", "loopkit.tasks._sudoku_before", "loopkit.tasks")
        old_task.io = old_io
        versions = {f"before ({args.before})": old_task.file_sets, **versions}
    print(f"{args.lines} lines, {path.stat().st_size / 1e6:.1f} MB, no solutions in the file")
    targets = {}
    for r in range(args.repeats):
        for name, file_sets in versions.items():
            started = time.perf_counter()
            sets = file_sets(path, [])
            print(f"  repeat {r + 1}  {name:24s} {time.perf_counter() - started:6.1f} s", flush=True)
            targets[name] = sets[0].y
    first, *rest = targets.values()
    assert all(bool((first == y).all()) for y in rest), "the versions made different targets"


if __name__ == "__main__":
    main()
