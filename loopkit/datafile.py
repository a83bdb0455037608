"""Read a user's data file the way every loader needs it: text line by line, faults named.

Decoding is strict UTF-8, one line at a time, so a Latin-1 byte or a UTF-16 file stops the load
with the line and column named, instead of a traceback from inside the text decoder or a silent
replacement character inside an id. Big files show a progress bar on stderr, only when stderr is
a terminal and only once reading has taken a couple of seconds (small files never show one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

PROGRESS_AFTER_S = 2.0  # a load that takes longer shows a progress bar (on a terminal)
_WIDE = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def _fault(line: bytes, start: int | None) -> str:
    """Why ``line`` is not UTF-8 text: a wide encoding's BOM or NULs, else the first bad byte."""
    for bom, name in _WIDE:
        if line.startswith(bom):
            return f"the file is {name} text, not UTF-8 (save it as UTF-8)"
    if start is None:
        return "holds NUL bytes (UTF-16 text without a BOM, or a binary file? save it as UTF-8 text)"
    column = len(line[:start].decode("utf-8", errors="replace")) + 1
    return (f"not UTF-8 text: byte 0x{line[start]:02x} at column {column} "
            "(Latin-1 or another legacy encoding? save the file as UTF-8)")


def _decode(line: bytes, first: bool) -> tuple[str, str]:
    """(text, "") or ("", fault) for one line; a UTF-8 BOM is dropped from the first."""
    if b"\x00" in line:
        return "", _fault(line, None)
    try:
        return line.decode("utf-8-sig" if first else "utf-8"), ""
    except UnicodeDecodeError as err:
        return "", _fault(line, err.start)


def read_lines(path, error: type[Exception]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line of ``path``: 1-based, the line end (\\n, \\r\\n or \\r)
    kept, a leading BOM dropped. A line that is not UTF-8 text raises ``error("PATH:LINE: ...")``."""
    from tqdm import tqdm

    path = Path(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from None
    # disable=None: off when stderr is not a terminal; delay: no bar for a quick load
    with f, tqdm(total=size, desc=f"reading {path.name}", unit="B", unit_scale=True, disable=None,
                 delay=PROGRESS_AFTER_S, leave=False) as bar:
        lineno = 0
        for chunk in f:  # split at \n; a bare \r (old Mac line ends) also ends a line, as in text mode
            for line in chunk.splitlines(keepends=True) if b"\r" in chunk[:-2] else (chunk,):
                lineno += 1
                text, fault = _decode(line, lineno == 1)
                if fault:
                    raise error(f"{path}:{lineno}: {fault}")
                bar.update(len(line))
                yield lineno, text
