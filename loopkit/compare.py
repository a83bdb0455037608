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


JSON_KINDS = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}
KINDS = {"a mapping": dict, "a list": list, "a number": (int, float), "an integer": int}
MISSING = object()


def read_json(path: Path, again: str) -> dict[str, Any]:
    """A results file loopkit wrote, as a mapping. A half-written or foreign one is a ConfigError
    that names the file and `again` (the command that writes it anew), never a traceback."""
    try:
        res = json.loads(config.read_text(path))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is damaged: not JSON ({err.msg}: line {err.lineno} column {err.colno}); "
                          f"{again}") from None
    if not isinstance(res, dict):
        raise ConfigError(f"{path} is damaged: not a mapping of results but {JSON_KINDS.get(type(res))}; {again}")
    return res


def expect(value: Any, kind: str, path: Path, where: str, again: str) -> Any:
    """`value`, read at `where` in `path`, if it has the shape loopkit writes there (`kind`, a key
    of KINDS): the readers index into it, so a wrong shape must stop here with the file's name."""
    if isinstance(value, KINDS[kind]) and not isinstance(value, bool):
        return value
    found = "missing" if value is MISSING else JSON_KINDS.get(type(value), type(value).__name__)
    raise ConfigError(f"{path} is damaged: {where} is {found}, not {kind}; {again}")


def load_results(run_dir: str | Path, out_name: str = "eval", summary: bool = False) -> dict[str, Any]:
    """A run's eval results with the parts compare, claims and report read checked: the curves per
    set and metric, the residual traces, the summary per set (required with `summary`)."""
    path = Path(run_dir) / out_name / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run `loopkit eval {run_dir}` first")
    again = f"run `loopkit eval {run_dir}{'' if out_name == 'eval' else ' --out ' + out_name} --force` again"
    res = read_json(path, again)
    for part in ("curves", "median_residual"):
        for name, value in expect(res.get(part, {}), "a mapping", path, part, again).items():
            lists = {"": value} if part == "median_residual" else \
                {f".{m}": c for m, c in expect(value, "a mapping", path, f"{part}.{name}", again).items()}
            for key, curve in lists.items():
                for v in expect(curve, "a list", path, f"{part}.{name}{key}", again):
                    expect(v, "a number", path, f"an entry of {part}.{name}{key}", again)
    if res.get("curves"):
        expect(res.get("train_iters", MISSING), "an integer", path, "train_iters", again)
    if summary and not res.get("summary"):
        raise ConfigError(f"{path}: no summary of the eval sets (the file is not what `loopkit eval` writes); {again}")
    for name, row in expect(res.get("summary", {}), "a mapping", path, "summary", again).items():
        expect(row, "a mapping", path, f"summary.{name}", again)
        expect(row.get("best_exact", MISSING), "a number", path, f"summary.{name}.best_exact", again)
        if row.get("exact_at_train_T") is not None:  # null: evaluated short of the training T
            expect(row["exact_at_train_T"], "a number", path, f"summary.{name}.exact_at_train_T", again)
    return res


def run_label(run_dir: Path, switches: dict[str, Any], differing: list[str]) -> str:
    if not differing:
        return run_dir.name
    return " ".join(f"{k}={switches.get(k)}" for k in differing)


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config.yaml `loopkit train` saved in the run: it tells the run's task and switches. Without
    it a run would match any other such run, so a missing or unreadable one is refused."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist, so the run's task and switches are unknown: "
                          f"give run folders that `loopkit train` made")
    cfg = config.read_yaml(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} is damaged: {'empty' if cfg is None else 'not a mapping of sections'}; the "
                          f"run's checkpoints/*/state.json hold its config")
    for section in ("task", "model", "train"):
        if cfg.get(section) is not None and not isinstance(cfg[section], dict):
            raise ConfigError(f"{path} is damaged: its {section} section is not a mapping; the run's "
                              f"checkpoints/*/state.json hold its config")
    return cfg


def run_task(cfg: dict[str, Any]) -> str:
    """The task a run config names (the default task where it names none, as `loopkit train` reads it)."""
    return str((cfg.get("task") or {}).get("name", config.Config().task["name"]))


def run_switches(run_dir: Path, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's model and training switches, flat (`recall`, `train.lr`, ...), from its config
    (`cfg`: already read)."""
    cfg = run_config(run_dir) if cfg is None else cfg
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
