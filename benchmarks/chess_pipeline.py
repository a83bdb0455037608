"""Chess puzzle pipeline throughput: puzzles per minute for N puzzles with W worker processes, and
the grade histogram of what was made (how many puzzles each rung of the ladder gets).

    python benchmarks/chess_pipeline.py --puzzles 200 --workers 1
    python benchmarks/chess_pipeline.py --puzzles 200 --workers 2 --max-depth 8 --mistake-rate 0.3

Runs in a fresh temporary cache (nothing is reused) unless --cache-dir is given.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from loopkit.chess.engine import engine_name
from loopkit.chess.pipeline import PipelineSettings, generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--puzzles", type=int, default=200)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    d = PipelineSettings()
    p.add_argument("--max-depth", type=int, default=d.max_depth)
    p.add_argument("--margin-cp", type=int, default=d.margin_cp)
    p.add_argument("--mistake-rate", type=float, default=d.mistake_rate)
    p.add_argument("--play-nodes", type=int, default=d.play_nodes)
    p.add_argument("--games-per-shard", type=int, default=d.games_per_shard)
    args = p.parse_args()
    settings = PipelineSettings(max_depth=args.max_depth, margin_cp=args.margin_cp, mistake_rate=args.mistake_rate,
                                play_nodes=args.play_nodes, games_per_shard=args.games_per_shard)
    print(f"{engine_name()}, {args.workers} worker(s) on {os.cpu_count()} cores "
          f"(load average {os.getloadavg()[0]:.1f}), {settings}")
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu0 = time.perf_counter(), os.times()
        (made,) = generate([(1, settings.max_depth, args.puzzles)], seed=args.seed, settings=settings,
                           workers=args.workers, cache_dir=args.cache_dir or tmp)
        seconds, cpu1 = time.perf_counter() - started, os.times()
    # CPU time of this process and of every finished child (the engines, worker processes): on a
    # machine shared with other jobs it tells what an idle core would do, which wall time cannot
    cpu = sum(cpu1[k] - cpu0[k] for k in range(4))
    print(f"{len(made)} puzzles in {seconds:.1f} s: {60 * len(made) / seconds:.1f} puzzles/min "
          f"({60 * len(made) / seconds / args.workers:.1f} per worker); {cpu:.0f} CPU s: "
          f"{60 * len(made) / max(cpu, 1e-9):.1f} puzzles per CPU-minute")
    counts = np.bincount(made.grade, minlength=settings.max_depth + 1)[1:]
    print("grade  puzzles  share  (of which mates)")
    for g, c in enumerate(counts, 1):
        mates = int(((made.grade == g) & (made.mate > 0)).sum())
        print(f"{g:5d} {c:8d} {100 * c / max(1, len(made)):5.1f}%  ({mates})")
    print(f"mate puzzles: {int((made.mate > 0).sum())}; side to move white: "
          f"{sum(' w ' in f for f in made.fen)}; median ply {int(np.median(made.ply)) if len(made) else 0}")


if __name__ == "__main__":
    main()
