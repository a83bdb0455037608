"""Property-based tests of the file loaders (Hypothesis): a valid file with random damage either
loads into puzzles that are all correct, one per line, or fails with the loader's own one-line
format error. Never another exception (a traceback for the user), never a wrong or lost puzzle.

Damage: characters inserted, deleted or replaced (quotes, commas, separators, line breaks, '#',
digits, letters, Latin-1 and NUL bytes, UTF-8 multibyte text, a BOM), and truncation.
"""

from __future__ import annotations

import csv

import chess
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopkit.chess.lichess import LichessFormatError
from loopkit.chess.lichess import load_puzzles as load_lichess
from loopkit.sudoku.io import _SEP, SudokuFormatError, load_puzzles, save_puzzles
from loopkit.sudoku.solver import valid_solutions

# modest counts: the whole file runs in well under 20 s on one core; no example database on disk
settings.register_profile("loaders", max_examples=150, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
LOADERS = settings.get_profile("loaders")

PUZ = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOL = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
HARD = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"
SUDOKU_FILES = [  # valid files in every layout the loader reads
    f"{PUZ}\n{HARD}\n{PUZ.replace('0', '.')}\n",
    f"# comment\na1 {PUZ} 2.5\nb2 {HARD} 7.25\n",
    f"{PUZ} {SOL}\n{PUZ},{SOL}\n",
    f"x {PUZ} 3.5 {SOL}\n\ny {PUZ} {SOL} 1e1\n",
    f"id,puzzle,solution,difficulty\n7,{PUZ},{SOL},2.2\n8,{PUZ.replace('0', '.')},{SOL},0.5\n",
    f"quizzes,solutions\n{PUZ},{SOL}\n",
]
LICHESS_FILE = (
    "PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl\n"
    "00sHx,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8d7 a2e6 d7d8 f7f8,1760,80,83,72,mate,x\n"
    "tewjc,r5k1/pp3p1p/2b2qp1/3pr3/8/4P2P/R1PN1PP1/Q3K2R w K - 0 19,a2a7 e5e3 f2e3 f6a1,1493,76,94,18768,long,y\n"
    "0kDWS,1r6/1PN5/3p4/4kpp1/1R6/P3n3/K1P5/8 b - - 0 49,e3d5 b4b5 b8b7 b5b7,1947,75,95,13691,endgame,z\n"
)
PIECES = [b'"', b",", b" ", b"\t", b"\n", b"\r", b"\r\n", b"#", b".", b"0", b"1", b"9", b"x", b"-", b"/", b"e",
          b"\xe9", b"\xff", b"\x00", "é".encode(), "\u2028".encode(), b"\xef\xbb\xbf"]


@st.composite
def damaged(draw, text: str, pieces: list[bytes] | None = None) -> bytes:
    """``text`` with one to four random edits (inserted or replacing pieces: `pieces`, default the
    CSV/sudoku ones, or random bytes)."""
    data = bytearray(text.encode())
    piece = st.sampled_from(pieces or PIECES) | st.binary(min_size=1, max_size=2)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(piece)
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 3))]
        elif op == "replace":
            data[at:at + 1] = draw(piece)
        else:
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _content_lines(raw: bytes, lichess: bool) -> int:
    """Lines of ``raw`` that are neither blank nor (sudoku) a comment: each must give one puzzle
    (or the header), so a line swallowed by another one cannot go unnoticed."""
    count = 0
    for line in raw.decode("utf-8-sig").encode().splitlines():  # \n, \r\n or \r, as the loaders
        line = line.decode()
        if lichess:
            line = "".join(next(csv.reader([line]), []))
        line = line.strip()
        count += bool(line) and not (not lichess and line.startswith("#"))
    return count


def _load(load, error, path):
    """The loaded file, or None after checking that the failure is the loader's one-line error."""
    try:
        return load(path)
    except error as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        return None


@LOADERS
@given(data=st.data(), which=st.integers(0, len(SUDOKU_FILES) - 1))
def test_damaged_sudoku_files_load_right_or_fail_clearly(folder, data, which):
    path = folder / "puzzles.txt"
    path.write_bytes(data.draw(damaged(SUDOKU_FILES[which])))
    loaded = _load(load_puzzles, SudokuFormatError, path)
    if loaded is None:
        return
    grids = loaded.solutions if loaded.solutions is not None else loaded.solved
    assert grids is not None and valid_solutions(grids, loaded.puzzles).all()  # givens agree with a solution
    header = SUDOKU_FILES[which].split("\n", 1)[0].count(",") > 0
    assert len(loaded) == _content_lines(path.read_bytes(), lichess=False) - header  # no line lost
    for field in (loaded.ids, loaded.ratings, loaded.multiple):
        assert field is None or len(field) == len(loaded)


@LOADERS
@given(data=st.data())
def test_damaged_lichess_files_load_right_or_fail_clearly(folder, data):
    path = folder / "puzzles.csv"
    path.write_bytes(data.draw(damaged(LICHESS_FILE)))
    loaded = _load(load_lichess, LichessFormatError, path)
    if loaded is None:
        return
    assert len(loaded.ids) == len(loaded.moves) == len(loaded.ratings) == len(loaded)
    assert len(loaded) == _content_lines(path.read_bytes(), lichess=True) - 1  # the header; no line lost
    for board, move in zip(loaded.boards(), loaded.moves):
        assert board.is_valid() and chess.Move.from_uci(move) in board.legal_moves
    assert np.isfinite(loaded.ratings).all()


IDS = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Z")), min_size=1, max_size=12).filter(
    lambda s: not _SEP.search(s) and not s.startswith("#"))


@LOADERS
@given(n=st.integers(1, 4), data=st.data())
def test_saved_files_load_back_unchanged(folder, n, data):
    """Whatever save_puzzles writes (any id, any finite rating), load_puzzles reads back as is."""
    sol = np.array([int(c) for c in SOL], dtype=np.int8)
    puzzles = np.stack([np.where(data.draw(st.lists(st.booleans(), min_size=81, max_size=81)), sol, 0)
                        for _ in range(n)]).astype(np.int8)
    ids = data.draw(st.none() | st.lists(IDS, min_size=n, max_size=n))
    ratings = data.draw(st.none() | st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    solutions = data.draw(st.sampled_from([None, np.tile(sol, (n, 1))]))
    path = folder / "saved.txt"
    save_puzzles(path, puzzles, solutions=solutions, ids=ids, ratings=ratings)
    back = load_puzzles(path)
    assert np.array_equal(back.puzzles, puzzles) and back.ids == ids
    assert (back.ratings is None) == (ratings is None) and (ratings is None or back.ratings.tolist() == ratings)
    assert (back.solutions is None) == (solutions is None)
