"""SIGKILL a training at random moments, resume it each time, and compare with an uninterrupted run.

What a user relies on when a machine dies mid-run: the resumed run's metrics log and final weights
equal those of a run that was never interrupted, bit for bit, wherever the kill landed (inside a
checkpoint write included). Prints one line per kill and the count of runs that matched.

    python benchmarks/kill_resume.py --kills 10 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["task.train_length=8", "task.eval_lengths=[8, 16]", "task.eval_samples=16", "model.width=16",
        "model.heads=2", "model.window=1", "model.causal=true", "train.max_iters=3", "train.batch_size=8",
        "train.warmup_steps=1", "train.log_every=2", "train.eval_every=0", "train.ckpt_every=3", "train.threads=1",
        "train.steps=400", "train.precision=fp32"]


def command(config: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loopkit.cli", "train", str(config), "--run-dir", str(run), *TINY, "--quiet", *extra]


def fingerprint(run: Path) -> tuple[list[dict], str]:
    """The metrics log without wall-clock fields, and a hash of the final weights."""
    rows = [{k: v for k, v in json.loads(line).items() if k != "sec_per_step"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return rows, hashlib.sha256((run / "checkpoints" / latest / "model.safetensors").read_bytes()).hexdigest()


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Until the run folder is prepared (training starts right after) or the process ended."""
    while not path.exists() and proc.poll() is None:
        time.sleep(0.01)


def train_seconds(argv: list[str], run: Path, env: dict[str, str]) -> float:
    """Train uninterrupted; the seconds from the run folder's preparation to the process's end."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(run / "config.yaml", proc)
    started = time.perf_counter()
    if proc.wait():
        raise SystemExit(f"the uninterrupted run failed: {' '.join(argv)}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "tiny.yaml"
        config.write_text("task:\n  name: prefix_sums\n")
        whole_s = train_seconds(command(config, tmp / "whole"), tmp / "whole", env)
        expected = fingerprint(tmp / "whole")
        matched = 0
        for i in range(args.kills):
            run = tmp / f"cut{i}"
            delay = rng.uniform(0, whole_s)  # a moment of the training itself (not of the imports before it)
            proc = subprocess.Popen(command(config, run), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            wait_for(run / "config.yaml", proc)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            latest = run / "checkpoints" / "latest"
            at = latest.read_text().strip() if latest.exists() else "no checkpoint"
            again = ["--resume"] if (run / "config.yaml").exists() else []
            done = subprocess.run(command(config, run, *again), env=env, capture_output=True, text=True)
            same = done.returncode == 0 and fingerprint(run) == expected
            matched += same
            print(f"kill {i + 1}: after {delay:.2f} s (latest: {at}); resume exit {done.returncode}; "
                  f"{'bit-exact' if same else 'DIFFERENT: ' + done.stderr.strip()[-200:]}")
        print(f"{matched} of {args.kills} killed runs resumed to the uninterrupted run's log and weights "
              f"(an uninterrupted run trains for {whole_s:.1f} s)")
        return 0 if matched == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
