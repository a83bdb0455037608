"""Print the recipe search's table from the run folders beside this file:
`python results/prefix_recipe/summarize.py`. Quick validation = exact match on 256 length-32
strings at the training T = 40, logged every 200 steps during training."""

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
COLUMNS = (400, 800, 1200, 1600)


def row(run: Path) -> str:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = {m["step"]: m["val/len32/exact"] for m in metrics if "val/len32/exact" in m}
    t, task = cfg["train"], cfg["task"]
    recipe = (f"alpha={t['alpha']:g} k={t['progressive_k'] or 'U'} lr={t['lr']:g} clip={t['grad_clip']:g} "
              f"beta2={t.get('adam_beta2', 0.99):g} len_min={task.get('train_length_min', 0) or '-'}")
    cells = [f"{100 * val[s]:.0f}" if s in val else "" for s in COLUMNS]
    grad = max(m["grad_norm"] for m in metrics)
    return (f"| {run.name} | {cfg['model']['recall']} | {t['seed']} | {recipe} | {metrics[-1]['step']} | "
            f"{metrics[-1]['loss']:.3f} | {grad:.1f} | " + " | ".join(cells) + " |")


def main() -> None:
    runs = sorted(p for p in HERE.iterdir() if (p / "metrics.jsonl").is_file())
    print("| run | recall | seed | recipe | last step | last loss | max logged grad norm | "
          + " | ".join(f"val@{s}" for s in COLUMNS) + " |")
    print("|" + " --- |" * (7 + len(COLUMNS)))
    for run in runs:
        print(row(run))


if __name__ == "__main__":
    sys.exit(main())
