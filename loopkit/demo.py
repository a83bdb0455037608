"""`loopkit demo`: the README's main job. Trains a recall + outer-norm model and a no-recall model
on 32-bit prefix sums (the recipe of configs/prefix_sums.yaml; `DEMO_MODELS` says where no-recall's
differs), evaluates both on 32 ... 512 bits up to T = `eval.max_iters`, and prints, per length, exact
match at the training T, at the largest T, and at the best T with that T (claims C1 and C2 of
docs/design.md, "Claims", in one screen).

Both models train, and then evaluate, side by side, one process each, when the machine has two
cores or more: two one-thread processes do more work than one two-thread process on a small CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import IO

from tqdm import tqdm

from . import checkpoint, config
from .config import ConfigError
from .evaluate import evaluate_run
from .multiples import percent
from .progress import enabled
from .train import train

DEMO_MODELS = {
    "recall_outer": ["model.recall=standard", "model.norm=outer"],
    # half the loss on the full T with backprop through every iteration: without recall, e enters
    # only through h_0 = e, and the progressive loss alone cuts that path whenever n > 0. Those
    # steps cost about 3x the recall model's, so it gets 600 in the same wall time as its 1600.
    "no_recall": ["model.recall=none", "model.norm=outer", "train.alpha=0.5", "train.steps=600"],
}


def default_config_path() -> Path:
    return Path(str(resources.files("loopkit") / "configs" / "prefix_sums.yaml"))


def finished(run_dir: Path, steps: int) -> bool:
    latest = checkpoint.latest(run_dir) if (run_dir / "checkpoints").exists() else None
    return latest is not None and checkpoint.read_state(latest)["step"] >= steps


def logged_step(run_dir: Path) -> int:
    """The last step in the run's metrics log (0 before the first line): the parent's progress."""
    try:
        lines = (run_dir / "metrics.jsonl").read_bytes().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        if line.startswith(b'{"step": '):
            return int(line[9:].split(b",")[0])
    return 0


def train_side_by_side(jobs: dict[str, tuple[list[str], Path, int]], threads: int, config_path: Path) -> None:
    """Each job as its own `loopkit train` process with `threads` threads; one bar over all steps.
    A failed job ends the demo with its own one-line error (kept in <run>/demo.log)."""
    procs = {}
    for name, (overrides, run_dir, _) in jobs.items():
        run_dir.mkdir(parents=True, exist_ok=True)
        resume = ["--resume"] if (run_dir / "config.yaml").exists() else []
        procs[name] = spawn(["train", "--quiet", "--run-dir", str(run_dir), *resume, str(config_path), *overrides,
                             f"train.threads={threads}"], run_dir, threads)
    total = sum(steps for _, _, steps in jobs.values())
    with tqdm(total=total, desc="[demo] training " + " + ".join(jobs), unit="step", disable=not enabled(),
              dynamic_ncols=True, file=sys.stderr) as bar:
        while any(p.poll() is None for p, _ in procs.values()):
            time.sleep(1.0)
            bar.n = sum(min(logged_step(run_dir), steps) for _, run_dir, steps in jobs.values())
            bar.refresh()
    failed = []
    for name, (p, log) in procs.items():
        log.close()
        if p.returncode:
            failed.append(f"{name}: {last_line(jobs[name][1] / 'demo.log')}")
    if failed:
        raise ConfigError("demo training failed - " + "; ".join(failed) + " (full output in <run>/demo.log)")


def run_demo(out: Path, fresh: bool = False, config_path: Path | None = None,
             extra: list[str] | tuple[str, ...] = ()) -> dict[str, dict]:
    """Train (or resume) both demo models, evaluate them and print the table. `config_path` and
    `extra` overrides replace the shipped recipe (tests run a tiny one)."""
    config_path = config_path or default_config_path()
    jobs = {}
    for name, model_overrides in DEMO_MODELS.items():
        run_dir, overrides = out / name, [*model_overrides, *extra]
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        steps = config.load(config_path, overrides).train.steps
        if not finished(run_dir, steps):
            jobs[name] = (overrides, run_dir, steps)
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    if jobs:
        print(f"[demo] training {', '.join(jobs)} -> {out}"
              + (" (side by side)" if cores >= 2 and len(jobs) > 1 else ""))
    if cores >= 2 and len(jobs) > 1:
        train_side_by_side(jobs, threads=max(1, cores // len(jobs)), config_path=config_path)
    else:
        for overrides, run_dir, _ in jobs.values():
            train(config.load(config_path, overrides), run_dir,
                  resume=(run_dir / "config.yaml").exists(), progress=enabled())
    if jobs:
        print(f"[demo] trained in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    if cores >= 2:
        results = evaluate_side_by_side([out / name for name in DEMO_MODELS], threads=max(1, cores // len(DEMO_MODELS)))
    else:
        results = [evaluate_run(out / name) for name in DEMO_MODELS]
    results = dict(zip(DEMO_MODELS, results))
    print(f"[demo] evaluated both up to T={results['recall_outer']['max_iters']} "
          f"in {time.perf_counter() - started:.0f} s")
    print(extrapolation_table(results))
    print(residual_table(results, out))
    return results


def residual_table(results: dict[str, dict], out: Path) -> str:
    """The fixed-point diagnosis the evaluation pass already measured: per length and model, the
    median relative residual r_t = ||h_t - h_{t-1}|| / ||h_{t-1}|| at the training T and at the
    largest T. A loop that has reached a fixed point has r_t near 0 (below eval.tol); one still
    moving (or cycling) does not. ρ(J), attractors and input dependence: `loopkit analyze`."""
    names = list(results)
    tol = config.load(default_config_path()).eval.tol
    header = f"{'length':>8} | " + " | ".join(f"{n:>24}" for n in names)
    lines = [f"fixed-point residual r_t (median over sequences; settled: r_t < {tol:g})", header,
             f"{'':>8} | " + " | ".join(f"{'T=' + str(r['train_iters']):>11} {'T=' + str(r['max_iters']):>12}"
                                        for r in results.values()), "-" * len(header)]
    for s in results[names[0]]["summary"]:
        cells = []
        for r in results.values():
            trace = r["median_residual"][s]
            at_t = trace[r["train_iters"] - 1] if r["train_iters"] <= len(trace) else float("nan")
            cells.append(f"{at_t:11.1e} {trace[-1]:9.1e}{' ok' if trace[-1] < tol else ' --'}")
        lines.append(f"{s[3:]:>8} | " + " | ".join(cells))
    lines.append(f"full diagnostics (ρ(J) with its residual, attractors and cycles, dependence on h_0 and on the "
                 f"input): loopkit analyze {out / names[0]} --sets len32,len128")
    return "\n".join(lines)


def evaluate_side_by_side(run_dirs: list[Path], threads: int) -> list[dict]:
    """`loopkit eval` of each run in its own process (the demo owns these runs: --force), then
    their results.json; a failure ends the demo with the process's own one-line error."""
    procs = []
    for run_dir in run_dirs:
        procs.append((*spawn(["eval", "--quiet", "--force", str(run_dir)], run_dir, threads), run_dir))
    with tqdm(total=len(procs), desc="[demo] evaluating", unit="model", disable=not enabled(), file=sys.stderr) as bar:
        for p, log, _ in procs:
            p.wait()
            log.close()
            bar.update(1)
    failed = [f"{run_dir.name}: {last_line(run_dir / 'demo.log')}" for p, _, run_dir in procs if p.returncode]
    if failed:
        raise ConfigError("demo evaluation failed - " + "; ".join(failed) + " (full output in <run>/demo.log)")
    return [json.loads((run_dir / "eval" / "results.json").read_text()) for run_dir in run_dirs]


def spawn(args: list[str], run_dir: Path, threads: int) -> tuple[subprocess.Popen, IO]:
    """`loopkit ARGS` as its own process with `threads` threads, its output appended to <run>/demo.log."""
    log = open(run_dir / "demo.log", "a")
    return subprocess.Popen([sys.executable, "-m", "loopkit.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)}), log


def last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def extrapolation_table(results: dict[str, dict]) -> str:
    """Per length and model: exact match at the training T, at the largest T, and at the best T
    (the smallest T reaching the best exact match, an oracle choice) with that T."""
    names = list(results)
    first = results[names[0]]
    width = 33
    header = f"{'length':>8} | " + " | ".join(f"{n:>{width}}" for n in names)
    sub = f"{'':>8} | " + " | ".join(
        f"{'T=' + str(r['train_iters']):>9} {'T=' + str(r['max_iters']):>9} {'best (T)':>13}" for r in results.values())
    lines = [f"exact match (% of sequences) on prefix sums, trained on length {first['task'].get('train_length')}",
             header, sub, "-" * len(header)]
    for s in first["summary"]:
        cells = []
        for r in results.values():
            row = r["summary"][s]
            best = f"{percent(row['best_exact'])} ({row['best_T']})"
            # exact_at_train_T is None when evaluated short of the training T
            cells.append(f"{percent(row['exact_at_train_T'], 9)} {percent(row['exact_at_max_T'], 9)} {best:>13}")
        lines.append(f"{s[3:]:>8} | " + " | ".join(cells))
    return "\n".join(lines)
