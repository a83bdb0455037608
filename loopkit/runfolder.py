"""A run folder is data, not code: what loading a run may take from the config stored in it.

- A program named by a stored config (`task.engine`, the chess engine) is never run: loading a
  run uses the engine the user names on the command line (`task.engine=...`), else the
  environment's default (`$LOOPKIT_STOCKFISH`, PATH).
- Relative paths (`task.cache_dir`, `task.eval_files`) are stored relative to the run folder
  (`for_storage`, at training) and read back relative to it (`load_stored`), so a run evaluates the
  same from any current folder, and a folder of runs with its data can move as a whole.
- A stored `task.cache_dir` outside the run folder is read, never written: data missing there is
  made but not cached (the task's `cache_read_only`), unless the user names the folder again on the
  command line. A stored config cannot make a command write anywhere the user did not ask.

Paths the user types on the command line keep their usual meaning (relative to the current folder).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, override_for_eval, parse_override

PATH_KEYS = ("cache_dir", "eval_files")  # task options holding paths (a string, or a list of them)
PROGRAM_KEYS = ("engine",)  # task options naming a program to run


def _is_relative(path: str) -> bool:
    return bool(path) and not path.startswith("~") and not Path(path).is_absolute()


def _map_paths(task: dict[str, Any], fn) -> dict[str, Any]:
    task = dict(task)
    for key in PATH_KEYS:
        value = task.get(key)
        if isinstance(value, str):
            task[key] = fn(value)
        elif isinstance(value, list):
            task[key] = [fn(v) if isinstance(v, str) else v for v in value]
    return task


def for_storage(task: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The task section as a run folder stores it: paths given relative to the current folder are
    rewritten relative to the run folder (the same files, found from wherever the run is loaded)."""
    here = os.path.abspath(run_dir)
    return _map_paths(task, lambda p: os.path.relpath(os.path.abspath(p), here) if _is_relative(p) else p)


def run_of_config(path: str | Path) -> Path | None:
    """The run folder a config file belongs to (its config.yaml beside checkpoints or a metrics
    log), or None for a config the user wrote."""
    path = Path(path)
    run = path.parent
    is_run = (run / "checkpoints").is_dir() or (run / "metrics.jsonl").is_file()
    return run if path.name == "config.yaml" and is_run else None


def _inside(path: str, run_dir: Path) -> bool:
    try:
        Path(path).expanduser().resolve().relative_to(run_dir.resolve())
        return True
    except ValueError:
        return False


def load_stored(cfg: Config, run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Config, bool]:
    """A config stored in a run folder, made safe to load, with the command line's `task.*` /
    `eval.*` overrides on top. Returns the config and whether the task's cache folder is read-only
    (see the module docstring)."""
    run_dir = Path(run_dir)
    given = {".".join(parse_override(o)[0]) for o in overrides}
    task = {k: v for k, v in cfg.task.items() if k not in PROGRAM_KEYS}
    task = _map_paths(task, lambda p: str(run_dir / p) if _is_relative(p) else p)
    cfg = dataclasses.replace(cfg, task=task)
    if overrides:
        cfg = override_for_eval(cfg, overrides)
    stored_cache = task.get("cache_dir")
    read_only = "task.cache_dir" not in given and bool(stored_cache) and not _inside(stored_cache, run_dir)
    return cfg, read_only


def check_output_folder(folder: str | Path, what: str, parents: bool = True) -> None:
    """Refuse, before any compute, an output folder that cannot be made or written: a file in the
    way, a folder without write permission, or (without `parents`) a missing parent folder."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        if not parents and probe == folder.parent:
            raise ConfigError(f"{what} {folder}: the folder {probe} does not exist")
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {folder} is a file, not a folder" if probe == folder else
                          f"{what} {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder}: {probe} is not writable")
