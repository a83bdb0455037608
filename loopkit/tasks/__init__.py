"""Tasks: generators with a difficulty knob, an easy train split, a ladder of harder test splits,
and the loss and exact-match metrics that go with them. `build_task` turns the `task:` section of
a config into a task object; `register_task` makes a task (the built-in ones, or a user's own
`Task` subclass, docs/tasks.md) known by name."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from ..sections import build_section
from .base import EvalSet, Task
from .chess import Chess
from .mazes import Mazes
from .prefix_sums import PrefixSums
from .sudoku import Sudoku

# task name -> its class; and -> (option, check, what is allowed) for every option with a range,
# checked with the rest of the config (config.validate) before a run folder exists, as
# config.RANGES does for model/train/eval
TASKS: dict[str, type[Task]] = {}
TASK_RANGES: dict[str, list[tuple[str, Any, str]]] = {}


def register_task(name: str, cls: type[Task], ranges: list[tuple[str, Any, str]] | tuple = ()) -> type[Task]:
    """Make `cls` the task `task.name: NAME` builds. `cls.Options` is a dataclass of its options
    (each typed, with a default), `ranges` the allowed range of some of them; cross-field checks go
    in `cls.check_options`. Registering a second class under a taken name is an error."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"a task name is an identifier (letters, digits, _), got {name!r}")
    if name in TASKS and TASKS[name] is not cls:
        raise ValueError(f"task name {name!r} is taken by {TASKS[name].__module__}.{TASKS[name].__qualname__}")
    if not (isinstance(cls, type) and issubclass(cls, Task) and hasattr(cls, "Options")):
        raise ValueError(f"{cls!r} is not a Task subclass with an Options dataclass")
    TASKS[name] = cls
    TASK_RANGES[name] = list(ranges)
    return cls


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
    ("eval_files", _distinct, "a list of distinct files"),
]
_LEVELS = [  # tasks with named levels and rated puzzle files
    ("eval_levels", _distinct, "a list of distinct levels"),
    ("rating_buckets", lambda v: all(math.isfinite(x) for x in v) and _distinct(v),
     "a list of distinct finite numbers"),
]

register_task("prefix_sums", PrefixSums, [
    ("train_length", _at_least(1), ">= 1"),
    ("train_length_min", _at_least(0), ">= 0 (0: every batch of train_length)"),
    ("eval_lengths", lambda v: len(v) > 0 and all(n >= 1 for n in v) and _distinct(v),
     "a non-empty list of distinct lengths >= 1"),
    ("eval_samples", _at_least(1), ">= 1"),
    ("eval_seed", _at_least(0), ">= 0"),
])
register_task("sudoku", Sudoku, _COMMON + _LEVELS)
register_task("chess", Chess, _COMMON + _LEVELS + [
    ("max_depth", _at_least(1), ">= 1"),
    ("margin_cp", _at_least(1), ">= 1"),
    ("mate_margin", _at_least(0), ">= 0 (0: off)"),
    ("cp_cap", _at_least(1), ">= 1"),
    ("play_nodes", _at_least(1), ">= 1"),
    ("mistake_rate", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("opening_plies", lambda v: len(v) == 2 and 0 <= v[0] <= v[1], "[min, max] with 0 <= min <= max"),
    ("max_ply", _at_least(1), ">= 1"),
    ("games_per_shard", _at_least(1), ">= 1"),
])
_MAZE_SIZES = (lambda v: len(v) > 0 and all(n >= 5 and n % 2 for n in v) and _distinct(v),
               "a non-empty list of distinct odd sizes >= 5")
register_task("mazes", Mazes, _COMMON + [
    ("train_sizes", *_MAZE_SIZES),
    ("eval_sizes", *_MAZE_SIZES),
    ("loops", lambda v: 0 <= v < 1, "in [0, 1)"),
])


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
    TASKS[name].check_options(o)
    return o


def build_task(section: dict[str, Any]) -> Task:
    options = check_options(section)
    return TASKS[section["name"]](options)


__all__ = ["EvalSet", "Task", "TASKS", "TASK_RANGES", "build_task", "check_options", "register_task"]
