"""Load the Lichess puzzle database CSV (``PuzzleId,FEN,Moves,Rating,...``).

As in the Lichess database, ``FEN`` is the position *before* the opponent's setup move: the first
move of ``Moves`` (UCI) is the opponent's, and the puzzle is the position after it, with the
second move as the answer. The rating is the difficulty.

A header line (its first field ``PuzzleId``) is skipped and its column names are used; without
one the standard column order is assumed. Blank lines are skipped. Every line is checked before
anything is returned, and the first bad one raises :class:`LichessFormatError` naming the file,
the 1-based line and the fault (missing field, illegal FEN, an illegal or malformed move, a
rating that is not a number, text that is not UTF-8, a stray quote that would swallow the lines
after it into one field), so a file is loaded whole or not at all; a file with no puzzle is an
error too.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import chess
import numpy as np

from ..datafile import read_lines
from ..errors import ConfigError
from .encoding import check_legal

COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating")


class LichessFormatError(ConfigError):
    """A line of a Lichess puzzle file is malformed; the message names the file and line. A
    ConfigError so that the command line prints it as one line (the file is the user's input)."""


@dataclass
class LichessPuzzles:
    """``fens``: the puzzle positions (setup move applied); ``moves``: the answers (UCI)."""

    ids: list[str]
    fens: list[str]
    moves: list[str]
    ratings: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return len(self.fens)

    def boards(self) -> list[chess.Board]:
        return [chess.Board(f) for f in self.fens]


def _parse(fields: list[str], cols: dict[str, int]) -> tuple[str, str, str, float]:
    """(id, puzzle FEN, answer UCI, rating) of one row; ValueError naming the fault."""
    need = max(cols.values()) + 1
    if len(fields) < need:
        raise ValueError(f"has {len(fields)} fields, expected at least {need} ({', '.join(COLUMNS)})")
    ident, fen, moves, rating = (fields[cols[c]].strip() for c in COLUMNS)
    try:
        board = chess.Board(fen)
    except ValueError as err:
        raise ValueError(f"illegal FEN {fen!r}: {err}") from None
    check_legal(board, f"illegal FEN {fen!r}")
    ucis = moves.split()
    if len(ucis) < 2:
        raise ValueError(f"Moves {moves!r} needs the opponent's setup move and the answer")
    for k, uci in enumerate(ucis[:2]):
        try:
            move = chess.Move.from_uci(uci)
        except ValueError:
            raise ValueError(f"move {k + 1} of Moves, {uci!r}, is not a UCI move") from None
        if not board.is_legal(move):
            raise ValueError(f"move {k + 1} of Moves, {uci}, is illegal in {board.fen()}")
        if k == 0:
            board.push(move)
    try:
        value = float(rating)
    except ValueError:
        raise ValueError(f"rating {rating!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"rating {rating!r} is not a finite number")
    return ident, board.fen(), ucis[1], value


def _rows(path: Path):
    """``(line number, fields)`` of every CSV record, one record a line: a record that runs over
    several lines (a stray ``"`` opens a field that swallows the lines after it) is an error."""
    lines = read_lines(path, LichessFormatError)
    reader = csv.reader((text for _, text in lines), strict=True)

    def stray_quote(start: int, end: str) -> LichessFormatError:
        return LichessFormatError(
            f"{path}:{start}: a quote (\") opens a field that does not close on this line (the field runs on "
            f"to {end}); puzzle fields never hold a line break: remove the quote")

    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                if "end of data" in str(err):  # strict mode: a quote still open at the end of the file
                    raise stray_quote(start, "the end of the file") from None
                if reader.line_num > start:
                    raise stray_quote(start, f"line {reader.line_num}") from None
                raise LichessFormatError(f"{path}:{reader.line_num}: not readable as CSV ({err})") from None
            if reader.line_num > start:
                raise stray_quote(start, f"line {reader.line_num}")
            yield start, fields
    finally:
        lines.close()  # the file and its progress bar, also when a bad line stops the load


def load_puzzles(path) -> LichessPuzzles:
    """Load a Lichess puzzle CSV (format in the module docstring); raises LichessFormatError.
    Only the first two moves are checked: the rest of the line does not enter the task."""
    path = Path(path)
    ids, fens, moves, ratings = [], [], [], []
    cols = {c: i for i, c in enumerate(COLUMNS)}
    first = True
    width, source = 0, ""  # fields of the header (or else of the first row): later rows have no more
    for lineno, fields in _rows(path):
        if not fields or not "".join(fields).strip():
            continue
        try:
            if first and fields[0].strip().lower() == "puzzleid":
                names = [x.strip().lower() for x in fields]
                missing = [c for c in COLUMNS if c.lower() not in names]
                if missing:
                    raise ValueError(f"header lacks column(s) {', '.join(missing)}")
                cols = {c: names.index(c.lower()) for c in COLUMNS}
                first = False
                width, source = len(fields), "the header"
                continue
            first = False
            if not width:
                width, source = len(fields), f"line {lineno}"
            if any(f.strip() for f in fields[width:]):  # two rows run together: the second would be lost
                raise ValueError(f"has {len(fields)} fields, more than the {width} of {source} "
                                 "(two lines run together?)")
            row = _parse(fields, cols)
        except ValueError as err:
            raise LichessFormatError(f"{path}:{lineno}: {err}") from None
        for out, v in zip((ids, fens, moves, ratings), row):
            out.append(v)
    if not ids:
        what = "it is empty or holds only blank lines" if first else "it holds only a header"
        raise LichessFormatError(f"{path}: no puzzle in the file ({what})")
    return LichessPuzzles(ids, fens, moves, np.array(ratings, dtype=np.float64))
