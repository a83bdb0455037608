"""Table of the bf16-vs-fp32 runs (results/precision/lanes.sh): per task and precision, mean ± sd
over seeds of exact match at the training T, at 4T and at the best T, the final training loss and
the training time. `python results/precision/summarize.py [DIR]` (default: results/precision)."""

import json
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/precision")


def mean_sd(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


for task, first in (("prefix", "len32"), ("sudoku", "easy")):
    print(f"\n{task}: exact match (%) on {first} and the other sets' best, mean ± sd over seeds (per seed in brackets)")
    print("| precision | seeds | final loss | train s | "
          + f"{first} @T | {first} @4T | {first} best | other sets best |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for prec in ("fp32", "bf16"):
        runs = sorted(root.glob(f"{task}_{prec}_s*"))
        runs = [r for r in runs if (r / "eval" / "results.json").exists()]
        if not runs:
            continue
        cols: dict[str, list[float]] = {}
        others: dict[str, list[float]] = {}
        for r in runs:
            rows = [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
            s = json.loads((r / "eval" / "results.json").read_text())["summary"]
            log_every = rows[1]["step"] - rows[0]["step"] if len(rows) > 1 else rows[0]["step"]
            cols.setdefault("loss", []).append(rows[-1]["loss"])
            cols.setdefault("time", []).append(sum(row["sec_per_step"] * log_every for row in rows))
            cols.setdefault("T", []).append(100 * s[first]["exact_at_train_T"])
            cols.setdefault("4T", []).append(100 * s[first].get("exact_at_4x_T", s[first]["exact_at_max_T"]))
            cols.setdefault("best", []).append(100 * s[first]["best_exact"])
            for name, v in s.items():
                if name != first:
                    others.setdefault(name, []).append(100 * v["best_exact"])
        seeds = ",".join(r.name.rsplit("_s", 1)[1] for r in runs)
        per = {k: f"{mean_sd(cols[k])} [{' / '.join(f'{v:.0f}' for v in cols[k])}]" for k in ("T", "4T", "best")}
        other = "; ".join(f"{n} {mean_sd(v)}" for n, v in others.items())
        print(f"| {prec} | {seeds} | {mean_sd(cols['loss'], 3)} [{' / '.join(f'{v:.3f}' for v in cols['loss'])}] | "
              f"{statistics.mean(cols['time']):.0f} | {per['T']} | {per['4T']} | {per['best']} | {other} |")
