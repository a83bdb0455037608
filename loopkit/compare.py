"""`loopkit compare`: one table across runs, the view a sweep over architectures needs.

Each run's `eval` results (written by `loopkit eval`) become rows labelled by the switches that
tell the runs apart (recall, norm, ...), one column group per eval set, at the training T, 2x and
4x it, for any metric the task scores (exact, token; valid for sudoku; illegal, legal_exact for
chess). Reads JSON only, so it is instant and never touches weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import config
from .config import ConfigError
from .multiples import MULTIPLES, at_multiples, percent

IGNORED = {"train.threads", "train.device", "train.log_every", "train.eval_every", "train.ckpt_every"}


def load_results(run_dir: str | Path, out_name: str = "eval") -> dict[str, Any]:
    path = Path(run_dir) / out_name / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run `loopkit eval {run_dir}` first")
    try:
        res = json.loads(config.read_text(path))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is damaged: not JSON ({err.msg}: line {err.lineno} column {err.colno}); "
                          f"run `loopkit eval {run_dir} --force` again") from None
    if not isinstance(res, dict):
        raise ConfigError(f"{path} is damaged: not a mapping of results")
    return res


def run_label(run_dir: Path, switches: dict[str, Any], differing: list[str]) -> str:
    if not differing:
        return run_dir.name
    return " ".join(f"{k}={switches.get(k)}" for k in differing)


def run_switches(run_dir: Path) -> dict[str, Any]:
    """The run's model and training switches, flat (`recall`, `train.lr`, ...)."""
    path = run_dir / "config.yaml"
    cfg = (config.read_yaml(path) or {}) if path.is_file() else {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} is damaged: not a mapping of sections")
    flat = config.as_recorded("model", cfg.get("model"))  # runs saved before a rename or a new key match
    train = config.as_recorded("train", cfg.get("train"))
    flat.update({f"train.{k}": v for k, v in train.items() if f"train.{k}" not in IGNORED})
    return flat


def _at(res: dict[str, Any], name: str, metric: str, k: int) -> float | None:
    """metric on eval set `name` at k x the training T, or None when not evaluated that far."""
    curve = res.get("curves", {}).get(name, {}).get(metric)
    return None if curve is None else at_multiples(curve, res["train_iters"], (k,))[k]


def compare(run_dirs: list[str | Path], out_name: str = "eval", metric: str = "exact") -> str:
    """A markdown table: rows are runs, columns are (eval set, T multiple), `metric` in %."""
    runs = [Path(r) for r in run_dirs]
    results = [load_results(r, out_name) for r in runs]
    switches = [run_switches(r) for r in runs]
    keys = sorted({k for m in switches for k in m})
    differing = [k for k in keys if len({json.dumps(m.get(k)) for m in switches}) > 1]
    sets = list(dict.fromkeys(name for res in results for name in res.get("curves", {})))
    # the training T's column stays when a run stops short of it (--max-iters below T): "–", not gone
    cols = [(s, k, "T" if k == 1 else f"{k}T") for s in sets for k in MULTIPLES
            if any(_at(res, s, metric, k) is not None for res in results)
            or k == 1 and any(metric in res.get("curves", {}).get(s, {}) for res in results)]
    if not cols:
        raise ConfigError(f"no run has metric {metric!r}; the eval results hold "
                          f"{sorted({m for res in results for c in res.get('curves', {}).values() for m in c})}")
    header = "| run | " + " | ".join(f"{s} @{head}" for s, _, head in cols) + " |"
    lines = [f"{metric} (%)", header, "|" + " --- |" * (len(cols) + 1)]
    for run, res, sw in zip(runs, results, switches):
        cells = []
        for s, k, _ in cols:
            value = _at(res, s, metric, k)
            cells.append(percent(value, unit="", missing="–"))
        lines.append(f"| {run_label(run, sw, differing)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
