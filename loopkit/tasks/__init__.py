"""Tasks: generators with a difficulty knob, an easy train split, a ladder of harder test splits,
and the loss and exact-match metrics that go with them. `build_task` turns the `task:` section of
a config into a task object."""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, build_section
from .base import EvalSet, Task
from .chess import Chess
from .prefix_sums import PrefixSums
from .sudoku import Sudoku

TASKS: dict[str, type[Task]] = {"prefix_sums": PrefixSums, "sudoku": Sudoku, "chess": Chess}


def build_task(section: dict[str, Any]) -> Task:
    options = dict(section)
    name = options.pop("name", None)
    if name not in TASKS:
        raise ConfigError(f"task.name: {name!r} is not a known task; choose one of {', '.join(TASKS)}")
    cls = TASKS[name]
    return cls(build_section(cls.Options, options, "task"))


__all__ = ["EvalSet", "Task", "TASKS", "build_task"]
