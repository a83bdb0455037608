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

The same holds when a run's config.yaml is the recipe of a new training (`loopkit train
RUN/config.yaml`, a resume, a sweep whose base it is): `recipe` drops a stored engine and a
stored cache folder outside the run being trained, saying so, unless the command line names them.

Nothing inside a run folder is followed through a symbolic link (`check_no_links`): a linked step
folder would evaluate another run's weights, a linked `eval/` or `metrics.jsonl` would write
outside the folder the user asked for.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sys
from pathlib import Path
from typing import IO, Any

from . import config
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


def recipe(path: str | Path, overrides: list[str] | tuple[str, ...],
           target: str | Path) -> tuple[Config, frozenset[str]]:
    """The config of a training that reads its recipe from `path`, and the keys it dropped. A
    user's own config file means what it says; a run folder's config.yaml is data: its relative
    paths are read relative to that run, and a stored engine or a cache folder outside the run being
    trained (`target`) is dropped with a notice, unless the command line gives it again (a resume
    does not count a dropped key as a change of recipe; one the command line changes still is)."""
    run = run_of_config(path)
    if run is None:
        return config.load(path, overrides), frozenset()
    given = {".".join(parse_override(o)[0]) for o in overrides}
    stored = config.load(path)
    task = _map_paths(stored.task, lambda p: str(run / p) if _is_relative(p) else p)
    dropped = [key for key in PROGRAM_KEYS if task.get(key) and f"task.{key}" not in given]
    cache = task.get("cache_dir")
    if cache and "task.cache_dir" not in given and not _inside(cache, Path(target)):
        dropped.append("cache_dir")
    for key in dropped:
        print(f"loopkit: notice: {path} names task.{key}={task.pop(key)!r}; a run folder is data, so it is not "
              f"used (give task.{key}=... on the command line to use it)", file=sys.stderr)
    raw = config.apply_overrides(dataclasses.replace(stored, task=task).to_dict(), overrides)
    return config.from_dict(raw), frozenset(f"task.{key}" for key in dropped)


def check_no_links(run_dir: str | Path, *paths: str | Path) -> None:
    """Refuse a symbolic link on the way from the run folder to each of `paths` (relative to it, or
    inside it): loopkit never follows a link in a run folder, to read or to write."""
    run_dir = Path(run_dir)
    for path in paths:
        path = Path(path)
        rel = path.relative_to(run_dir) if path.is_relative_to(run_dir) else path
        probe = run_dir
        for part in rel.parts:
            probe = probe / part
            if probe.is_symlink():
                raise ConfigError(f"{probe} is a symbolic link (to {os.readlink(probe)}); a run folder is data and "
                                  "loopkit follows no link in it: put the file or folder itself there")


def output_folder(run_dir: str | Path, name: str) -> Path:
    """The folder `name` inside a run for a command's results, made if missing (links refused)."""
    check_no_links(run_dir, name)
    out = Path(run_dir) / name
    try:
        out.mkdir(exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot make the output folder {out}: {err.strerror or err}") from None
    return out


def hold_lock(run_dir: str | Path, name: str, holder: str, advice: str = "wait for it to end") -> IO:
    """An OS lock on `<run>/<name>` for this process (released when it ends, even killed): a second
    writer of the same outputs is refused instead of overwriting the first one's results. Keep the
    returned file open while writing."""
    path = Path(run_dir) / name
    check_no_links(run_dir, name)
    try:
        handle = open(path, "a")
    except OSError as err:
        raise ConfigError(f"cannot lock {path}: {err.strerror or err}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"{run_dir} is in use by another {holder} (it holds {path}); {advice}") from None
    return handle


def output_lock(run_dir: str | Path, out: str, command: str) -> IO:
    """The lock of one output folder of a run (`eval`, `analysis`, ...): two `loopkit eval` into
    the same folder at once would overwrite each other, two into different folders may run."""
    return hold_lock(run_dir, f".lock-{out.strip('/').replace('/', '_')}", f"loopkit {command} writing {out}/")


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
