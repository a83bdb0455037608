"""`loopkit demo`: the README's main job. Trains a recall + outer-norm model and a no-recall model
on 32-bit prefix sums (the recipe of configs/prefix_sums.yaml; `DEMO_MODELS` says where each
differs), evaluates both on 32 ... 512 bits up to T = `eval.max_iters`, and prints, per length, exact
match at the training T, at the largest T, and at the best T with that T, then the fixed-point
residual of each loop (claims C1 and C2 of docs/design.md, "Claims", in one screen).

Each model trains and then evaluates as its own chain of one-thread processes, the two chains side
by side when the machine has two cores or more: two one-thread processes do more work than one
two-thread process on a small CPU, and the model that trains faster starts evaluating at once.
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
    # No recall learns 32 bits only with pre-norm (its residual stream carries the input forward) at a
    # low rate and after ~1600 steps (results/prefix_none/README.md). Its steps cost what the recall
    # model's cost, but its evaluation stops at T = 300 (it has forgotten even 32 bits by T = 150), so
    # its chain ends before the recall model's 1600 steps plus evaluation to T = 1000.
    "no_recall": ["model.recall=none", "model.norm=pre", "train.lr=0.0005", "train.steps=2400",
                  "eval.max_iters=300"],
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


def side_by_side(jobs: dict[str, tuple[list[str], Path, int]], run_dirs: list[Path], threads: int,
                 config_path: Path) -> None:
    """Each model's `loopkit train` (the pending `jobs`) and then its `loopkit eval` as a chain of
    processes with `threads` threads, the chains running at once: a model that finishes training
    early starts evaluating while the other still trains. One bar over all training steps. A failed
    process ends the demo with its own one-line error (kept in <run>/demo.log)."""
    chains: dict[str, list[list[str]]] = {}
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        chains[run_dir.name] = [["eval", "--quiet", "--force", str(run_dir)]]  # the demo owns these runs
    for name, (overrides, run_dir, _) in jobs.items():
        resume = ["--resume"] if (run_dir / "config.yaml").exists() else []
        chains[name].insert(0, ["train", "--quiet", "--run-dir", str(run_dir), *resume, str(config_path),
                                *overrides, f"train.threads={threads}"])
    dirs = {run_dir.name: run_dir for run_dir in run_dirs}
    running = {name: spawn(chain.pop(0), dirs[name], threads) for name, chain in chains.items()}
    failed: dict[str, list[str]] = {"training": [], "evaluation": []}
    total = sum(steps for _, _, steps in jobs.values())
    with tqdm(total=total, desc="[demo] training " + " + ".join(jobs) if jobs else "[demo] evaluating",
              unit="step", disable=not enabled(), dynamic_ncols=True, file=sys.stderr) as bar:
        while running:
            time.sleep(1.0)
            bar.n = sum(min(logged_step(run_dir), steps) for _, run_dir, steps in jobs.values())
            evaluating = [n for n in running if not chains[n]]  # on the last process of its chain
            bar.set_postfix_str("evaluating " + ", ".join(evaluating) if evaluating else "", refresh=True)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                if proc.returncode:
                    stage = "evaluation" if not chains[name] else "training"
                    failed[stage].append(f"{name}: {last_line(dirs[name] / 'demo.log')}")
                elif chains[name]:
                    running[name] = spawn(chains[name].pop(0), dirs[name], threads)
    for stage, lines in failed.items():
        if lines:  # in the models' order, not the order the processes happened to end in
            lines.sort(key=lambda line: list(chains).index(line.partition(":")[0]))
            raise ConfigError(f"demo {stage} failed - " + "; ".join(lines) + " (full output in <run>/demo.log)")


def run_demo(out: Path, fresh: bool = False, config_path: Path | None = None,
             extra: list[str] | tuple[str, ...] = ()) -> dict[str, dict]:
    """Train (or resume) both demo models, evaluate them and print the tables. `config_path` and
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
    run_dirs = [out / name for name in DEMO_MODELS]
    if jobs:
        print(f"[demo] training {', '.join(jobs)} -> {out}" + (" (side by side)" if cores >= 2 else ""))
    if cores >= 2:
        side_by_side(jobs, run_dirs, threads=max(1, cores // len(DEMO_MODELS)), config_path=config_path)
        results = [json.loads((run_dir / "eval" / "results.json").read_text()) for run_dir in run_dirs]
    else:
        for overrides, run_dir, _ in jobs.values():
            train(config.load(config_path, overrides), run_dir,
                  resume=(run_dir / "config.yaml").exists(), progress=enabled())
        results = [evaluate_run(run_dir) for run_dir in run_dirs]
    results = dict(zip(DEMO_MODELS, results))
    caps = ", ".join(f"{name} up to T={r['max_iters']}" for name, r in results.items())
    print(f"[demo] {'trained and ' if jobs else ''}evaluated ({caps}) in {time.perf_counter() - started:.0f} s")
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
