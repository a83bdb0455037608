"""Where generated data is cached: one folder per task under ~/.cache/loopkit unless the user
names another (`task.cache_dir`)."""

from __future__ import annotations

from pathlib import Path


def cache_dir(option: str, task: str) -> Path:
    """The folder `task.cache_dir` names (`~` expanded), or ~/.cache/loopkit/<task> when it is ""."""
    return Path(option).expanduser() if option else Path.home() / ".cache" / "loopkit" / task
