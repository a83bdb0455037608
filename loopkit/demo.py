"""`loopkit demo`: the README's main job. Trains a recall + outer-norm model and a no-recall model
on 32-bit prefix sums, evaluates both on 32 ... 512 bits with up to 4x the training iterations,
and prints the extrapolation table (claims C1 and C2 of docs/design.md, "Claims", in one screen)."""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

from . import checkpoint, config
from .evaluate import evaluate_run
from .progress import enabled
from .train import train

DEMO_MODELS = {
    "recall_outer": ["model.recall=standard", "model.norm=outer"],
    "no_recall": ["model.recall=none", "model.norm=outer"],
}


def default_config_path() -> Path:
    return Path(str(resources.files("loopkit") / "configs" / "prefix_sums.yaml"))


def run_demo(out: Path, fresh: bool = False) -> dict[str, dict]:
    results = {}
    for name, overrides in DEMO_MODELS.items():
        run_dir = out / name
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        cfg = config.load(default_config_path(), overrides)
        started = time.perf_counter()
        done = checkpoint.latest(run_dir) is not None and checkpoint.read_state(checkpoint.latest(run_dir))["step"] >= cfg.train.steps
        if not done:
            print(f"[demo] training {name} ({' '.join(overrides)}) -> {run_dir}")
            train(cfg, run_dir, resume=(run_dir / "config.yaml").exists(), progress=enabled())
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        results[name] = evaluate_run(run_dir)
        print(f"[demo] {name}: trained in {train_s:.0f} s, evaluated up to T={results[name]['max_iters']} "
              f"in {time.perf_counter() - started:.0f} s")
    print(extrapolation_table(results))
    return results


def extrapolation_table(results: dict[str, dict]) -> str:
    names = list(results)
    first = results[names[0]]
    header = f"{'length':>8} | " + " | ".join(f"{n:>22}" for n in names)
    sub = f"{'':>8} | " + " | ".join(f"{'T=' + str(r['train_iters']):>10} {'T=' + str(r['max_iters']):>11}" for r in results.values())
    lines = [f"exact match (% of sequences) on prefix sums, trained on length {first['task'].get('train_length')}",
             header, sub, "-" * len(header)]
    for s in first["summary"]:
        cells = []
        for r in results.values():
            row = r["summary"][s]
            at_t = row["exact_at_train_T"]  # None when evaluated short of the training T
            cells.append(("      n/a " if at_t is None else f"{100 * at_t:9.1f}%") + f" {100 * row['exact_at_max_T']:10.1f}%")
        lines.append(f"{s[3:]:>8} | " + " | ".join(cells))
    return "\n".join(lines)
