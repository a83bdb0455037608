"""Files written whole or not at all: the content goes to a temporary file in the target's folder,
which then replaces the target in one rename (`os.replace`). A reader, or a process killed half-way,
sees the old file or the new one, never a part of one.

The temporary file is hidden, unique (`.STEM.tmp-XXXXXXXX.SUFFIX`), keeps the target's suffix (so a
writer that appends one, as `np.savez` appends '.npz', writes to it unchanged), and is made with
the permissions a plain `open(path, "w")` gives (0666 less the umask).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the block to write; when the block finishes, that
    file replaces `path`. When the block raises, `path` stays as it was and the temporary file is
    removed. `fsync`: flush the file to disk before the rename (a pointer that must survive a
    power cut, such as checkpoints/latest)."""
    path = Path(path)
    tmp = _create_beside(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False, encoding: str = "utf-8") -> None:
    """`Path(path).write_text(text)`, atomically (see `replacing`)."""
    with replacing(path, fsync=fsync) as tmp, open(tmp, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """`Path(path).write_bytes(data)`, atomically (see `replacing`)."""
    with replacing(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def _create_beside(path: Path) -> Path:
    """A new empty file in `path`'s folder under a name no other writer holds (O_EXCL)."""
    while True:
        tmp = path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
