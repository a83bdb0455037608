"""Finding and starting Stockfish (a UCI engine) through python-chess.

The engine is an external program (Debian/Ubuntu package ``stockfish``, installed as
/usr/games/stockfish, which is not on a normal user's PATH). It is looked up in this order: an
explicit path, the environment variable ``LOOPKIT_STOCKFISH``, ``stockfish`` on PATH,
/usr/games/stockfish. When none exists, :class:`EngineNotFound` says how to install it.

Settings that change what the engine answers (threads, hash size) are fixed here: one thread and
a small hash make a search a deterministic function of the position and the limit, which is what
makes the puzzle pipeline reproducible; parallelism comes from running one engine per process.
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache
from pathlib import Path

import chess.engine

from ..errors import ConfigError

ENV_VAR = "LOOPKIT_STOCKFISH"
DEFAULT_PATHS = ("/usr/games/stockfish", "/usr/local/bin/stockfish")
INSTALL_HINT = ("install it with `sudo apt-get install -y stockfish` (Debian/Ubuntu; the binary is "
                "/usr/games/stockfish), or point the environment variable LOOPKIT_STOCKFISH or "
                "task.engine at a Stockfish binary")


class EngineNotFound(ConfigError):
    """No Stockfish binary could be found or started. A ConfigError so that the command line
    prints it as one line: the user fixes it by installing the engine or setting a path."""


def find_engine(path: str | os.PathLike | None = None) -> str:
    """The Stockfish binary to use (see the module docstring for the search order)."""
    if path:
        where = "task.engine"
    elif os.environ.get(ENV_VAR):
        path, where = os.environ[ENV_VAR], ENV_VAR
    else:
        found = shutil.which("stockfish") or next((p for p in DEFAULT_PATHS if os.access(p, os.X_OK)), None)
        if found is None:
            raise EngineNotFound("Stockfish was not found (looked for `stockfish` on PATH and "
                                 f"{', '.join(DEFAULT_PATHS)}); " + INSTALL_HINT)
        return found
    resolved = shutil.which(str(path)) or (str(path) if os.access(path, os.X_OK) and Path(path).is_file() else None)
    if resolved is None:
        raise EngineNotFound(f"{where}={str(path)!r} is not an executable file; " + INSTALL_HINT)
    return resolved


def open_engine(path: str | os.PathLike | None = None, hash_mb: int = 16) -> chess.engine.SimpleEngine:
    """Start Stockfish with one thread and a ``hash_mb`` MB hash table; close it with ``.quit()``."""
    binary = find_engine(path)
    try:
        engine = chess.engine.SimpleEngine.popen_uci(binary)
    except (OSError, chess.engine.EngineError) as err:
        raise EngineNotFound(f"could not start {binary} as a UCI engine ({err}); " + INSTALL_HINT) from None
    try:
        engine.configure({"Threads": 1, "Hash": hash_mb})
    except BaseException:
        engine.quit()
        raise
    return engine


def engine_name(path: str | os.PathLike | None = None) -> str:
    """The engine's UCI id name (e.g. 'Stockfish 15.1'): recorded with generated puzzles, since
    another version can label or grade positions differently."""
    return _engine_name(find_engine(path))


@lru_cache(maxsize=8)
def _engine_name(binary: str) -> str:
    engine = open_engine(binary)
    try:
        return str(engine.id.get("name", "unknown engine"))
    finally:
        engine.quit()
