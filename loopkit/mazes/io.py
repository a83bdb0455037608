"""Read and write mazes as text: ``#`` wall, ``.`` open, ``S`` start, ``G`` goal.

One maze per block of lines; blocks are separated by one or more blank lines (a line holding only
whitespace is blank; whitespace at the end of a line is ignored). Example, a maze of size 9 (the
size convention is in :mod:`loopkit.mazes.generator`)::

    #########
    #S#.....#
    #.#.###.#
    #.#...#.#
    #.###.#.#
    #...#.#.#
    ###.#.#.#
    #.....#G#
    #########

The loader reads input mazes; their target (the shortest S -> G path) is computed by BFS. A maze
may also show that path with ``o`` marks (what :func:`format_maze` writes when given a target):
the marks are then checked against the computed path, so a file with marks always means what it
shows, and ``load(format(x, y))`` gives back ``x`` and ``y``.

Every maze is checked before anything is returned, and the first fault raises
:class:`MazeFormatError` (a :class:`~loopkit.config.ConfigError`) naming the file, the 1-based line
and the fault: a character other than ``# . S G o`` (named, with its column), rows of unequal
length, a maze that is not square, a side that is even or below 5, a border that is not all wall,
not exactly one S and one G, S or G not on a cell (cells lie at the odd rows and columns counted
from 0, i.e. the even ones counted from 1: a rule of the size convention, so that a loaded maze
looks like a generated one), no path from S to G, two or more shortest paths (a per-character
target needs one answer), ``o`` marks that are not the shortest path, text that is not UTF-8, and
a file with no maze. The inside of a maze is otherwise free: the loader does not require the
generator's walls at every (even, even) position, nor a perfect maze.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import atomic
from ..datafile import read_lines
from ..errors import ConfigError
from .generator import GOAL, OPEN, START, WALL, shortest_path

_TOKENS = {"#": WALL, ".": OPEN, "S": START, "G": GOAL, "o": OPEN}
_CHARS = "#.SG"  # token -> character
_ALLOWED = "# wall, . open, S start, G goal, o a marked path"


class MazeFormatError(ConfigError):
    """A maze file is malformed; the message names the file and line. A ConfigError, like every
    user-input error, so the CLI prints it as one line."""


@dataclass
class Mazes:
    """Loaded mazes, in file order: ``x`` (tokens) and ``y`` (targets), each a list of (n, n)
    uint8 arrays (mazes in one file may differ in size), and ``lines``: the 1-based line of each
    maze's first row."""

    x: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)

    def by_size(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """size -> ``(x, y)`` stacked as (k, size, size) arrays, in file order within a size."""
        out: dict[int, tuple[list, list]] = {}
        for x, y in zip(self.x, self.y):
            xs, ys = out.setdefault(len(x), ([], []))
            xs.append(x)
            ys.append(y)
        return {n: (np.stack(xs), np.stack(ys)) for n, (xs, ys) in sorted(out.items())}


def _check_rows(rows: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one maze given as (line number, text) rows; ValueError(line, message) if bad."""
    first, w = rows[0][0], len(rows[0][1])
    for lineno, text in rows:
        for col, ch in enumerate(text, 1):
            if ch not in _TOKENS:
                raise _Fault(lineno, f"bad character {ch!r} at column {col} (a maze uses {_ALLOWED})")
        if len(text) != w:
            raise _Fault(lineno, f"row of {len(text)} characters; the maze's first row (line {first}) has {w}")
    h = len(rows)
    span = f"lines {first}-{rows[-1][0]}"
    if h > w:  # name the first row too many: often two mazes without a blank line between them
        raise _Fault(rows[w][0], f"row {w + 1} of a maze {w} characters wide; a maze is square "
                                 "(a blank line missing between two mazes?)")
    if h < w:
        raise _Fault(first, f"maze of {h} rows of {w} characters ({span}); a maze is square")
    if w % 2 == 0 or w < 5:
        raise _Fault(first, f"maze side {w} ({span}); the side must be odd and at least 5 "
                            "(cells at the odd rows and columns counted from 0, walls around them)")
    for k, (lineno, text) in enumerate(rows):
        edge = range(w) if k in (0, w - 1) else (0, w - 1)
        col = next((c for c in edge if text[c] != "#"), None)
        if col is not None:
            raise _Fault(lineno, f"{text[col]!r} at column {col + 1} on the maze's border; "
                                 "the border must be all wall '#'")
    where: dict[str, list[tuple[int, int, int]]] = {"S": [], "G": []}
    for k, (lineno, text) in enumerate(rows):
        for ch in "SG":
            col = text.find(ch)
            while col >= 0:
                where[ch].append((lineno, k, col))
                col = text.find(ch, col + 1)
    for ch, name in (("S", "start"), ("G", "goal")):
        if not where[ch]:
            raise _Fault(first, f"maze ({span}) has no {ch} ({name}); a maze has exactly one")
        if len(where[ch]) > 1:
            lineno, _, col = where[ch][1]
            raise _Fault(lineno, f"a second {ch} ({name}) at column {col + 1} (the first is on line "
                                 f"{where[ch][0][0]}); a maze has exactly one")
        lineno, k, col = where[ch][0]
        if k % 2 == 0 or col % 2 == 0:
            raise _Fault(lineno, f"{ch} at row {k + 1}, column {col + 1} of the maze is not on a cell; cells lie at "
                                 "the even rows and columns counted from 1 (odd counted from 0)")
    table = np.zeros(128, dtype=np.uint8)
    for ch, tok in _TOKENS.items():
        table[ord(ch)] = tok
    codes = np.frombuffer("".join(t for _, t in rows).encode("ascii"), dtype=np.uint8)
    x = table[codes].reshape(w, w)
    marks = (codes == ord("o")).reshape(w, w)
    sol = shortest_path(x)
    s_line, g_line = where["S"][0][0], where["G"][0][0]
    if sol.paths == 0:
        raise _Fault(first, f"no path from S (line {s_line}) to G (line {g_line}) in the maze ({span})")
    if sol.paths > 1:
        raise _Fault(first, f"two or more shortest paths ({sol.length} characters) from S (line {s_line}) to G "
                            f"(line {g_line}) in the maze ({span}); the target must be one path: wall a loop off")
    y = sol.target
    if marks.any():
        inner = (y == 1) & (x == OPEN)
        diff = np.argwhere(marks != inner)
        if len(diff):
            k, col = (int(v) for v in diff[0])
            what = "marked 'o' but not on" if marks[k, col] else "on, but not marked 'o' on"
            raise _Fault(rows[k][0], f"column {col + 1} is {what} the shortest path from S to G; the 'o' marks, "
                                     "when a maze has any, must be exactly that path")
    return x, y


class _Fault(ValueError):
    def __init__(self, lineno: int, message: str):
        super().__init__(message)
        self.lineno = lineno


def _blocks(lines: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    rows: list[tuple[int, str]] = []
    for lineno, line in lines:
        text = line.rstrip()
        if text:
            rows.append((lineno, text))
        elif rows:
            yield rows
            rows = []
    if rows:
        yield rows


def _parse(lines: Iterable[tuple[int, str]], source: str) -> Mazes:
    out = Mazes()
    for rows in _blocks(lines):
        try:
            x, y = _check_rows(rows)
        except _Fault as fault:
            raise MazeFormatError(f"{source}:{fault.lineno}: {fault}") from None
        out.x.append(x)
        out.y.append(y)
        out.lines.append(rows[0][0])
    if not out.x:
        raise MazeFormatError(f"{source}: no maze in the file (it holds only blank lines, or nothing)")
    return out


def load_mazes(path) -> Mazes:
    """Load a maze file (format and checks in the module docstring); raises MazeFormatError."""
    path = Path(path)
    return _parse(read_lines(path, MazeFormatError), str(path))


def parse_mazes(text: str, source: str = "<text>") -> Mazes:
    """:func:`load_mazes` for text already in memory; errors name ``source`` as the file."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # line ends as read_lines splits them
    return _parse(enumerate(lines, 1), source)


def format_maze(x, y=None) -> str:
    """One maze as text rows joined by newlines (no final newline); with a target ``y``, the open
    characters on the path are written ``o`` (start and goal stay ``S`` and ``G``)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.min(initial=0) < 0 or x.max(initial=0) > GOAL:
        raise ValueError(f"a maze is a 2-D array of tokens 0..3 (got shape {x.shape})")
    chars = np.array(list(_CHARS))[x]
    if y is not None:
        y = np.asarray(y)
        if y.shape != x.shape:
            raise ValueError(f"target shape {y.shape} differs from the maze's {x.shape}")
        chars[(y == 1) & (x == OPEN)] = "o"
    return "\n".join("".join(row) for row in chars)


def format_mazes(xs, ys=None) -> str:
    """Mazes as a file's text: blocks separated by blank lines, a final newline."""
    if ys is not None and len(ys) != len(xs):
        raise ValueError(f"{len(ys)} targets for {len(xs)} mazes")
    return "\n\n".join(format_maze(x, None if ys is None else ys[i]) for i, x in enumerate(xs)) + "\n"


def save_mazes(path, xs, ys=None) -> None:
    """Write :func:`format_mazes` to ``path`` atomically (a temporary file in the same folder,
    then renamed into place)."""
    atomic.write_text(path, format_mazes(xs, ys))
