"""Load an engine test suite in EPD (Extended Position Description): positions with best moves.

One record a line: the four FEN fields (board, side to move, castling, en passant; no move
counters), then operations ``opcode operand ...;``. Read here:

- ``bm``: the best move(s), SAN, one or more (any of them solves the position);
- ``am``: move(s) to avoid, SAN, one or more;
- ``id``: the record's name, one operand (normally a quoted string: ``id "WAC.001";``).

Every other opcode (``c0`` .. ``c9``, ``hmvc``, ``fmvn``, ``ce``, ``acd``, ``pv``, ...) is skipped
unread: only its quoting is honoured, so a ``;`` inside a quoted string does not end it (a
backslash inside a string escapes the next character, e.g. ``\\"``). A record needs ``bm`` or
``am`` or both; no move may be both. A record's last ``;`` may be missing.

python-chess parses the FEN fields (``Board.from_epd``) and the SAN moves (``Board.parse_san``:
check marks optional, a fully specified from-square such as ``e2e4`` accepted). The operations
are split here, not by ``Board.set_epd``, because that one reads *every* operand as a move,
number or string: an unquoted comment or a bad ``pv`` of an opcode this loader ignores would
fail the record, and a second ``bm`` would silently replace the first (here it is an error).

Blank lines and comment lines (first non-blank character ``#``; no EPD record starts so, as the
board field holds no ``#``) are skipped. Every record is checked before anything is returned,
and the first bad one raises :class:`EpdFormatError` naming the file, the 1-based line and the
fault, so a file is loaded whole or not at all; a file without records is an error too.

Sections: a record's section is its id without the number at its end: a trailing run of digits
and the separators before it (``.``, ``-``, ``_``, ``:``, ``#``, ``/``, spaces) are dropped, so
``WAC.001`` -> ``WAC``, ``STS(v1.0) Undermining.001`` -> ``STS(v1.0) Undermining``,
``BT2630-01`` -> ``BT2630``, ``arasan21.1`` -> ``arasan21``. An id with no number at its end
goes by the text before its last ``.`` (``mate.a`` -> ``mate``) or else is its own section. A
record without an id, or whose id is only a number, goes to the section named after the file's
stem (``suite.epd`` -> ``suite``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import chess

from ..datafile import read_lines
from ..errors import ConfigError
from . import encoding

OPCODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,14}\Z")  # EPD: a letter, then letters, digits or _; 15 at most
_SEPARATORS = " \t.-_:#/"  # dropped between an id's stem and its trailing number
_MOVE_OPS = {"bm": "best move", "am": "move to avoid"}


class EpdFormatError(ConfigError):
    """A line of an EPD file is malformed; the message names the file and line. A ConfigError so
    that the command line prints it as one line (the file is the user's input)."""


@dataclass
class EpdSuite:
    """One EPD file: per record its ``ids`` ("" when it has none), ``fens`` (the position, move
    counters 0 1), ``best`` and ``avoid`` moves (UCI lists, either may be empty, not both),
    ``sections`` (module docstring) and ``lines`` (1-based line in the file)."""

    ids: list[str]
    fens: list[str]
    best: list[list[str]]
    avoid: list[list[str]]
    sections: list[str]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.fens)

    def boards(self) -> list[chess.Board]:
        return [chess.Board(f) for f in self.fens]

    def section_rows(self) -> dict[str, list[int]]:
        """Section -> its records' rows, sections in the order of their first record."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.sections):
            out.setdefault(s, []).append(i)
        return out

    def classes(self) -> tuple[list[list[int]], list[list[int]]]:
        """Move classes (``loopkit.chess.encoding.move_index``, in the mover's frame, so a black
        move is mirrored as its board is) of every record's best and avoid moves."""
        best, avoid = [], []
        for board, b, a in zip(self.boards(), self.best, self.avoid):
            best.append([encoding.move_index(chess.Move.from_uci(u), board) for u in b])
            avoid.append([encoding.move_index(chess.Move.from_uci(u), board) for u in a])
        return best, avoid


def section_of(ident: str, default: str) -> str:
    """The section of a record with id ``ident`` (rule in the module docstring)."""
    ident = ident.strip()
    unnumbered = ident.rstrip("0123456789")
    if unnumbered != ident:
        stem = unnumbered.rstrip(_SEPARATORS).strip()
    elif "." in ident:
        stem = ident.rpartition(".")[0].strip()
    else:
        stem = ident
    return stem or default


def split_operations(text: str) -> list[list[tuple[str, bool]]]:
    """The operations of a record, each a list of ``(token, quoted)``: the opcode, then its
    operands. ``;`` ends an operation except inside a ``"`` string; a string that does not close
    is a ValueError."""
    ops, tokens, i, n = [], [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == ";":
            if tokens:
                ops.append(tokens)
            tokens, i = [], i + 1
        elif ch == '"':
            buf, j = [], i + 1
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                what = f"of {tokens[0][0]} " if tokens else ""
                raise ValueError(f'a quoted string {what}does not close (a " is missing)')
            tokens.append(("".join(buf), True))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ';"':
                j += 1
            tokens.append((text[i:j], False))
            i = j
    if tokens:
        ops.append(tokens)
    return ops


def _moves(board: chess.Board, opcode: str, operands: list[tuple[str, bool]]) -> list[chess.Move]:
    """The moves of a ``bm`` or ``am`` operation, each legal in ``board``; ValueError naming the fault."""
    if not operands:
        raise ValueError(f"{opcode} has no move")
    moves: list[chess.Move] = []
    for token, quoted in operands:
        if quoted:
            raise ValueError(f'{opcode} operand "{token}" is a quoted string, not a move (SAN, unquoted)')
        try:
            move = board.parse_san(token)
        except ValueError as err:  # python-chess: InvalidMoveError, IllegalMoveError, AmbiguousMoveError
            what = _MOVE_OPS[opcode]
            raise ValueError(f"{opcode} {token!r} is not a legal {what} in this position ({err})") from None
        if not move:
            raise ValueError(f"{opcode} {token!r} is a null move")
        if move not in moves:
            moves.append(move)
    return moves


def parse_record(text: str, default_section: str) -> tuple[str, str, list[str], list[str], str]:
    """(id, FEN, best UCI moves, avoid UCI moves, section) of one EPD record; ValueError naming the fault."""
    fields = text.split(None, 4)
    if len(fields) < 4:
        raise ValueError(f"has {len(fields)} field(s); an EPD record starts with the four FEN fields "
                         "(board, side to move, castling, en passant)")
    fen = " ".join(fields[:4])
    try:
        board, _ = chess.Board.from_epd(fen)
    except ValueError as err:
        raise ValueError(f"illegal FEN fields {fen!r}: {err}") from None
    encoding.check_legal(board, f"illegal position {fen!r}")
    found: dict[str, list[tuple[str, bool]]] = {}
    for tokens in split_operations(fields[4] if len(fields) > 4 else ""):
        opcode, quoted = tokens[0]
        if quoted or not OPCODE.match(opcode):
            hint = " (move counters after the FEN? an EPD record has four FEN fields)" if opcode.isdigit() else ""
            raise ValueError(f"{opcode!r} is not an EPD opcode (a letter, then letters, digits or _){hint}")
        if opcode in ("bm", "am", "id"):
            if opcode in found:
                raise ValueError(f"{opcode} appears twice (give all its operands in one operation)")
            found[opcode] = tokens[1:]
    ident = ""
    if "id" in found:
        if len(found["id"]) != 1:
            raise ValueError(f"id needs one operand (a quoted string), got {len(found['id'])}")
        ident = found["id"][0][0]
    best = _moves(board, "bm", found["bm"]) if "bm" in found else []
    avoid = _moves(board, "am", found["am"]) if "am" in found else []
    if not best and not avoid:
        raise ValueError("has neither bm (best move) nor am (move to avoid)")
    both = [board.san(m) for m in best if m in avoid]
    if both:
        raise ValueError(f"{', '.join(both)} is both a best move (bm) and a move to avoid (am)")
    return (ident, board.fen(), [m.uci() for m in best], [m.uci() for m in avoid],
            section_of(ident, default_section))


def load_suite(path) -> EpdSuite:
    """Load an EPD test suite (format in the module docstring); raises EpdFormatError."""
    path = Path(path)
    suite = EpdSuite([], [], [], [], [], [])
    lines = read_lines(path, EpdFormatError)
    try:
        for lineno, text in lines:
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            try:
                ident, fen, best, avoid, section = parse_record(text, path.stem)
            except ValueError as err:
                raise EpdFormatError(f"{path}:{lineno}: {err}") from None
            for out, v in zip((suite.ids, suite.fens, suite.best, suite.avoid, suite.sections, suite.lines),
                              (ident, fen, best, avoid, section, lineno)):
                out.append(v)
    finally:
        lines.close()  # the file and its progress bar, also when a bad line stops the load
    if not len(suite):
        raise EpdFormatError(f"{path}: no EPD record in the file (it is empty or holds only blank or # lines)")
    return suite
