"""Read and write sudoku collections in the one-puzzle-a-line text format people share.

A line holds an 81-character puzzle (digits 1-9, ``0`` or ``.`` for blanks), optionally preceded
by an id and followed, in either order, by a rating (a number) and/or a solution (81 digits 1-9).
Tokens are separated by whitespace or commas. Blank lines and lines starting with ``#`` are
skipped. Examples::

    000694f16758 570060003030005060601007000053000001000080000900000270000800402080100030200040019 2.5
    4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......
    <puzzle> <solution> 7.2

Every line is checked before anything is returned, and the first bad one raises
:class:`SudokuFormatError` naming the file, the 1-based line and the fault: wrong length, bad
character, givens that contradict each other, a solution that is invalid or disagrees with the
givens, text that is not UTF-8, and (``check_solvable=True``) a puzzle with no solution; a file
with no puzzle is an error too. An optional field (id, rating, solution) present on one line must
be present on all, so arrays never hold silent fillers.

A CSV with a header line (the form of the public Kaggle and Hugging Face dumps, e.g.
``id,puzzle,solution,clues,difficulty`` or ``quizzes,solutions``) is read by column name instead:
the header says which column is the puzzle (``puzzle``/``quizzes``/``question``), the solution
(``solution``/``solutions``/``answer``), the rating (``rating``/``difficulty``) and the id
(``id``/``puzzleid``); other columns are ignored. Each row then goes through the same checks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..datafile import read_lines
from ..errors import ConfigError
from .solver import first_conflict, solve_cells

_SEP = re.compile(r"[\s,]+")
_COLUMNS = {  # header name -> role, for CSVs that name their columns
    "id": "id", "puzzleid": "id", "puzzle": "puzzle", "quizzes": "puzzle", "question": "puzzle",
    "solution": "solution", "solutions": "solution", "answer": "solution",
    "rating": "rating", "difficulty": "rating",
}
_PUZZLE_CHARS = b"0123456789."


class SudokuFormatError(ConfigError):
    """A line of a sudoku file is malformed; the message names the file and line. A ConfigError,
    like every user-input error, so the CLI prints it as one line."""


@dataclass
class Puzzles:
    """A loaded collection: ``puzzles`` (n, 81) int8 with 0 for blanks, and optional fields."""

    puzzles: np.ndarray
    solutions: np.ndarray | None = None
    ids: list[str] | None = None
    ratings: np.ndarray | None = None
    # check_solvable on a file without solutions: a solution the loader's search found for each
    # puzzle, and whether it found several (the file then fixes no unique answer)
    solved: np.ndarray | None = None
    multiple: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.puzzles)


def _cells(tok: str, what: str, blanks: bool) -> list[int]:
    """Digits of an 81-character puzzle/solution token; raises ValueError saying what is wrong."""
    if len(tok) != 81:
        raise ValueError(f"{what} has {len(tok)} characters, expected 81")
    raw = tok.encode("ascii", errors="replace")
    bad = raw.translate(None, _PUZZLE_CHARS if blanks else b"123456789")
    if bad:
        k = next(i for i, ch in enumerate(raw) if ch == bad[0])
        kind = "blank" if tok[k] in "0." else "bad character"
        raise ValueError(f"{what} has a {kind} {tok[k]!r} at position {k + 1}")
    return [0 if ch == 46 else ch - 48 for ch in raw]  # 46 = '.'


def _is_rating(tok: str) -> bool:
    if len(tok) > 16 and tok.isdigit():  # a mangled solution, not a number (but 17-digit
        return False  # float reprs such as 4.1234567890123456, which save_puzzles writes, are)
    try:
        return math.isfinite(float(tok))
    except ValueError:
        return False


def _parse_line(line: str, check_solvable: bool):
    """(id, puzzle cells, rating, solution cells, found) of one line; ValueError when malformed.
    ``found``: for a line without solution and ``check_solvable``, the search's solutions (one, or
    two when the puzzle has several), so that no caller solves the puzzle again."""
    tokens = [t for t in _SEP.split(line.strip()) if t]
    if not tokens:
        raise ValueError("no puzzle on the line, only separators")
    if len(tokens[0]) == 81:
        ident, rest = None, tokens
    elif len(tokens) > 1 and len(tokens[1]) == 81:
        ident, rest = tokens[0], tokens[1:]
    else:  # no puzzle where one may stand: blame the longer of the first two tokens
        raise ValueError(f"puzzle has {len(max(tokens[:2], key=len))} characters, expected 81")
    puzzle = _cells(rest[0], "puzzle", blanks=True)
    rating = solution = None
    for tok in rest[1:]:
        if _is_rating(tok):
            if rating is not None:
                raise ValueError(f"two ratings ({rating!r} and {tok!r})")
            rating = float(tok)
        elif len(tok) == 81 or not tok.strip("0123456789."):
            if solution is not None:
                raise ValueError("two solutions")
            solution = _cells(tok, "solution", blanks=False)
        else:
            raise ValueError(f"unrecognised token {tok!r} (expected a rating or a solution)")
    conflict = first_conflict(puzzle)
    if conflict:
        raise ValueError(f"givens contradict each other: {conflict}")
    if solution is not None:
        conflict = first_conflict(solution)
        if conflict:
            raise ValueError(f"solution is not a valid sudoku: {conflict}")
        for k, (p, s) in enumerate(zip(puzzle, solution)):
            if p and p != s:
                raise ValueError(
                    f"solution disagrees with the given at row {k // 9 + 1}, column {k % 9 + 1}"
                    f" (given {p}, solution {s})"
                )
    found = None
    if solution is None and check_solvable:
        found = solve_cells(puzzle, 2)[0]  # limit 2: also tells a puzzle with several solutions
        if not found:
            raise ValueError("puzzle has no solution")
    return ident, puzzle, rating, solution, found


def _header_columns(line: str) -> dict[str, int] | None:
    """role -> column index when ``line`` is a header (every cell a name, none a puzzle, rating
    or solution), else None."""
    names = [t.strip().lower().replace("_", "") for t in line.split(",")]
    if len([n for n in names if n]) < 2 or not all(n.isalpha() for n in names if n):
        return None
    columns = {}
    for k, name in enumerate(names):
        role = _COLUMNS.get(name)
        if role in columns:
            raise ValueError(f"header names two {role} columns ({names[columns[role]]!r} and {name!r})")
        if role:
            columns[role] = k
    if "puzzle" not in columns:
        raise ValueError(f"header {line!r} names no puzzle column (one of puzzle, quizzes, question)")
    return columns


def _reorder(line: str, columns: dict[str, int], width: int) -> str:
    """A named-column CSV row as a plain line: id, puzzle, solution, rating. Cells beyond the
    header's ``width`` must be empty: two rows run together would otherwise lose the second."""
    cells = [c.strip() for c in line.split(",")]
    needed = max(columns.values()) + 1
    if len(cells) < needed:
        raise ValueError(f"{len(cells)} columns, the header has at least {needed}")
    if any(cells[width:]):
        raise ValueError(f"{len(cells)} columns, the header has only {width} (two lines run together?)")
    return " ".join(cells[columns[r]] for r in ("id", "puzzle", "solution", "rating") if r in columns)


def load_puzzles(path, check_solvable: bool = True) -> Puzzles:
    """Load a puzzle file (format in the module docstring); raises SudokuFormatError.

    ``check_solvable`` searches every puzzle that comes without a solution, to reject those with
    none (its cost: benchmarks/README.md, "Design notes"), and keeps what it found in ``solved``
    and ``multiple`` (a puzzle with more than one solution); puzzles that come with a solution are
    not searched.
    """
    path = Path(path)
    rows = []
    fields = None  # which optional fields the first puzzle line has
    columns = None  # role -> column index, when the file starts with a header line
    width = 0  # the header's number of columns
    for lineno, line in read_lines(path, SudokuFormatError):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if fields is None and columns is None:
                columns = _header_columns(text)
                if columns is not None:
                    width = text.count(",") + 1
                    continue
            if columns is not None:
                text = _reorder(text, columns, width)
            row = _parse_line(text, check_solvable)
            has = (row[0] is not None, row[2] is not None, row[3] is not None)
            if fields is None:
                fields = has
            elif has != fields:
                names = ("an id", "a rating", "a solution")
                k = next(i for i in range(3) if has[i] != fields[i])
                raise ValueError(
                    f"{'has' if has[k] else 'lacks'} {names[k]}, unlike the lines before it"
                )
        except ValueError as e:
            raise SudokuFormatError(f"{path}:{lineno}: {e}") from None
        rows.append(row)
    if not rows:
        what = "only a header" if columns is not None else "no line other than blank lines and # comments"
        raise SudokuFormatError(f"{path}: no puzzle in the file (it holds {what})")
    n = len(rows)
    has_id, has_rating, has_solution = fields
    searched = rows[0][4] is not None

    def grids(k: int) -> np.ndarray:
        return np.array([r[k] for r in rows], dtype=np.int8).reshape(n, 81)

    return Puzzles(
        puzzles=grids(1),
        solutions=grids(3) if has_solution else None,
        ids=[r[0] for r in rows] if has_id else None,
        ratings=np.array([r[2] for r in rows], dtype=np.float64) if has_rating else None,
        solved=np.array([r[4][0] for r in rows], dtype=np.int8).reshape(n, 81) if searched else None,
        multiple=np.array([len(r[4]) > 1 for r in rows]) if searched else None,
    )


def save_puzzles(path, puzzles, solutions=None, ids=None, ratings=None) -> None:
    """Write ``[id] puzzle [rating] [solution]`` lines (blanks as ``0``), atomically.

    ``puzzles`` may be a :class:`Puzzles`, whose fields are then used.
    """
    if isinstance(puzzles, Puzzles):
        puzzles, solutions, ids, ratings = (
            puzzles.puzzles, puzzles.solutions, puzzles.ids, puzzles.ratings
        )
    puzzles = np.asarray(puzzles).reshape(-1, 81)
    n = len(puzzles)
    for name, field in (("solutions", solutions), ("ids", ids), ("ratings", ratings)):
        if field is not None and len(field) != n:
            raise ValueError(f"{name} has {len(field)} entries for {n} puzzles")
    lines = []
    for i in range(n):
        parts = []
        if ids is not None:
            ident = str(ids[i])
            if not ident or _SEP.search(ident) or ident.startswith("#"):
                raise ValueError(f"id {ident!r} is empty, has a separator or starts with '#'")
            parts.append(ident)
        parts.append("".join(map(str, puzzles[i].tolist())))
        if ratings is not None:
            rating = float(ratings[i])
            if not math.isfinite(rating):
                raise ValueError(f"rating {rating} of puzzle {i} is not a finite number")
            parts.append(repr(rating))
        if solutions is not None:
            parts.append("".join(map(str, np.asarray(solutions[i]).reshape(81).tolist())))
        lines.append(" ".join(parts) + "\n")
    atomic.write_text(path, "".join(lines))


def parse_grid(text: str) -> list[int]:
    """One puzzle written as 81 characters (digits, '0' or '.' for blanks) -> 81 cells (0 = blank)."""
    try:
        return _cells(text.strip(), "puzzle", blanks=True)
    except ValueError as err:
        raise SudokuFormatError(str(err)) from None


def format_grid(cells: list[int]) -> str:
    """A 9 x 9 board as text with box rules ('.' for a blank)."""
    rows = []
    for r in range(9):
        if r and r % 3 == 0:
            rows.append("------+-------+------")
        row = cells[9 * r:9 * r + 9]
        rows.append(" | ".join(" ".join(str(d) if d else "." for d in row[c:c + 3]) for c in (0, 3, 6)))
    return "\n".join(rows)
