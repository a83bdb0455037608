"""Files written whole or not at all: the content goes to a temporary file in the target's folder,
which then replaces the target in one rename (`os.replace`). A reader, or a process killed half-way,
sees the old file or the new one, never a part of one.

The temporary file is hidden, unique (`.STEM.tmp-XXXXXXXX.SUFFIX`), keeps the target's suffix (so a
writer that appends one, as `np.savez` appends '.npz', writes to it unchanged), and is made with
the permissions a plain `open(path, "w")` gives (0666 less the umask).

Only regular files are replaced: a rename over a device node, a pipe, a folder or a symbolic link
would destroy something that is not loopkit's output (or leave a link pointing elsewhere replaced
by a copy), so such a target is refused. A write the system refuses (disk full, quota, read-only
file system) is a `WriteError` naming the file, with the target left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LoopkitError


class WriteError(LoopkitError):
    """An output that cannot be written: the target is not a regular file, or the system refused
    the write (disk full, quota, permissions). The message names the file; nothing was changed."""


def describe(err: OSError) -> str:
    """An OS error in a few words (`No space left on device`), for a one-line message."""
    return err.strerror or os.strerror(err.errno or errno.EIO)


def check_target(path: str | os.PathLike) -> None:
    """Refuse a target that exists and is not a regular file (a device, pipe, folder or link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise WriteError(f"cannot write {path}: {describe(err)}") from None
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a pipe or socket")
        raise WriteError(f"{path} is {kind}, not a regular file; loopkit writes its outputs only as regular files "
                         "(remove it or write elsewhere)")


@contextmanager
def replacing(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the block to write; when the block finishes, that
    file replaces `path`. When the block raises, `path` stays as it was and the temporary file is
    removed. `fsync`: flush the file to disk before the rename (a pointer that must survive a
    power cut, such as checkpoints/latest)."""
    path = Path(path)
    check_target(path)
    try:
        tmp = _create_beside(path)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {describe(err)}") from None
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        check_target(path)  # made meanwhile by someone else: still never renamed over
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {describe(err)}; it is left as it was") from None
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


def write_texts(texts: dict[str | os.PathLike, str], encoding: str = "utf-8") -> None:
    """Several files that belong together (claims.json and claims.md), each atomically, and none
    replaced unless every one was written whole: a full disk leaves the old pair, not a mixed one."""
    with contextlib.ExitStack() as stack:
        for path, text in texts.items():
            with open(stack.enter_context(replacing(path)), "w", encoding=encoding) as f:
                f.write(text)


def save_figure(fig, path: str | os.PathLike, **options) -> None:
    """`fig.savefig(path)`, atomically and only over a regular file (the format from the suffix)."""
    with replacing(path) as tmp:
        fig.savefig(tmp, **options)


def _create_beside(path: Path) -> Path:
    """A new empty file in `path`'s folder under a name no other writer holds (O_EXCL)."""
    while True:
        tmp = path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
