"""Tasks: generators with a difficulty knob, an easy train split, a ladder of harder test splits,
and the loss and exact-match metrics that go with them. `build_task` turns the `task:` section of
a config into a task object."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from ..sections import build_section
from .base import EvalSet, Task
from .chess import Chess
from .prefix_sums import PrefixSums
from .sudoku import Sudoku

TASKS: dict[str, type[Task]] = {"prefix_sums": PrefixSums, "sudoku": Sudoku, "chess": Chess}


def _at_least(lo: int):
    return lambda v: v >= lo


def _distinct(v: list) -> bool:
    return len(set(map(str, v))) == len(v)


_COMMON = [  # options several tasks share
    ("train_size", _at_least(1), ">= 1"),
    ("eval_samples", _at_least(1), ">= 1"),
    ("seed", _at_least(0), ">= 0"),
    ("eval_seed", _at_least(0), ">= 0"),
    ("workers", _at_least(0), ">= 0 (0: every core)"),
    ("eval_levels", _distinct, "a list of distinct levels"),
    ("eval_files", _distinct, "a list of distinct files"),
    ("rating_buckets", lambda v: all(math.isfinite(x) for x in v) and _distinct(v),
     "a list of distinct finite numbers"),
]

# task name -> (option, check, what is allowed): every option's range, checked with the rest of the
# config (config.validate) before a run folder exists, as config.RANGES does for model/train/eval
TASK_RANGES: dict[str, list[tuple[str, Any, str]]] = {
    "prefix_sums": [
        ("train_length", _at_least(1), ">= 1"),
        ("train_length_min", _at_least(0), ">= 0 (0: every batch of train_length)"),
        ("eval_lengths", lambda v: len(v) > 0 and all(n >= 1 for n in v) and _distinct(v),
         "a non-empty list of distinct lengths >= 1"),
        ("eval_samples", _at_least(1), ">= 1"),
        ("eval_seed", _at_least(0), ">= 0"),
    ],
    "sudoku": _COMMON,
    "chess": _COMMON + [
        ("max_depth", _at_least(1), ">= 1"),
        ("margin_cp", _at_least(1), ">= 1"),
        ("mate_margin", _at_least(0), ">= 0 (0: off)"),
        ("cp_cap", _at_least(1), ">= 1"),
        ("play_nodes", _at_least(1), ">= 1"),
        ("mistake_rate", lambda v: 0 <= v <= 1, "in [0, 1]"),
        ("opening_plies", lambda v: len(v) == 2 and 0 <= v[0] <= v[1], "[min, max] with 0 <= min <= max"),
        ("max_ply", _at_least(1), ">= 1"),
        ("games_per_shard", _at_least(1), ">= 1"),
    ],
}


def check_options(section: dict[str, Any]) -> Any:
    """The task section as its task's Options: unknown keys, types and ranges checked, each fault
    one line naming the key and what is allowed."""
    if not isinstance(section, dict):
        raise ConfigError(f"task: expected a mapping with at least task.name, got {section!r}")
    options = dict(section)
    name = options.pop("name", None)
    if name not in TASKS:
        raise ConfigError(f"task.name: {name!r} is not a known task; choose one of {', '.join(TASKS)}")
    o = build_section(TASKS[name].Options, options, "task")
    for key, ok, allowed in TASK_RANGES.get(name, []):
        if not ok(getattr(o, key)):
            raise ConfigError(f"task.{key}={getattr(o, key)!r} is out of range: allowed {allowed}")
    if hasattr(o, "eval_levels") and not (o.eval_levels or o.eval_files):
        raise ConfigError("task.eval_levels=[] and task.eval_files=[]: the task would have no eval set; "
                          "give a level or a file")
    if name == "prefix_sums" and o.train_length_min > o.train_length:
        raise ConfigError(f"task.train_length_min={o.train_length_min} is out of range: allowed at most "
                          f"task.train_length={o.train_length}")
    if name == "chess" and o.opening_plies[1] >= o.max_ply:
        raise ConfigError(f"task.opening_plies={o.opening_plies!r} is out of range: allowed a max below "
                          f"task.max_ply={o.max_ply}")
    return o


def build_task(section: dict[str, Any]) -> Task:
    options = check_options(section)
    return TASKS[section["name"]](options)


__all__ = ["EvalSet", "Task", "TASKS", "TASK_RANGES", "build_task", "check_options"]
