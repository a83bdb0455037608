"""Where generated data is cached: one folder per task under ~/.cache/loopkit unless the user
names another (`task.cache_dir`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import ConfigError


def cache_dir(option: str, task: str) -> Path:
    """The folder `task.cache_dir` names (`~` expanded), or ~/.cache/loopkit/<task> when it is ""."""
    return Path(option).expanduser() if option else Path.home() / ".cache" / "loopkit" / task


def read_arrays(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a cached .npz file (all, or `keys`), read whole. A file cut short or garbled
    (a full disk, a copy interrupted) is a ConfigError naming it: cached data is made again once
    the file is deleted, never read half-way. No pickles are loaded."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys or () if k not in z.files]
            if missing:
                raise ConfigError(f"cache file {path} is damaged: it lacks {', '.join(missing)}; delete it and it is "
                                  "made again")
            return {k: z[k] for k in (keys or z.files)}
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        fault = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"cache file {path} is damaged ({fault}); delete it and it is made again") from None
