"""A user's data files fail loudly: one line naming the file, the line and the fault; never a
traceback, never a silently shorter or wrong set of puzzles (issue 11)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from loopkit import cli, datafile
from loopkit.chess.lichess import LichessFormatError
from loopkit.chess.lichess import load_puzzles as load_lichess
from loopkit.sudoku import solver
from loopkit.sudoku.io import SudokuFormatError, load_puzzles, save_puzzles
from loopkit.tasks.sudoku import Sudoku, SudokuOptions, file_sets

HEAD = "PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl\n"
ROWS = [
    "00sHx,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8d7 a2e6 d7d8 f7f8,1760,80,83,72,mate,x\n",
    "tewjc,r5k1/pp3p1p/2b2qp1/3pr3/8/4P2P/R1PN1PP1/Q3K2R w K - 0 19,a2a7 e5e3 f2e3 f6a1,1493,76,94,18768,crushing,y\n",
    "0kDWS,1r6/1PN5/3p4/4kpp1/1R6/P3n3/K1P5/8 b - - 0 49,e3d5 b4b5 b8b7 b5b7,1947,75,95,13691,endgame,z\n",
]
PUZ = "003020600900305001001806400008102900700000008006708200002609500800203009005010300"
SOL = "483921657967345821251876493548132976729564138136798245372689514814253769695417382"
SEVERAL = "0" * 17 + PUZ[17:]  # the first row's givens removed: more than one solution


def _error(load, path, error):
    with pytest.raises(error) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize("row", [1, 2])
def test_stray_quote_in_a_lichess_csv_names_its_line(tmp_path, row):
    """A quote opening a field swallowed every later line into it: 1 of 3 puzzles, no error."""
    rows = list(ROWS)
    rows[row] = rows[row].replace("crushing", '"crushing').replace("endgame", '"endgame')
    path = tmp_path / "quote.csv"
    path.write_text(HEAD + "".join(rows))
    message = _error(load_lichess, path, LichessFormatError)
    assert f"quote.csv:{row + 2}: a quote" in message and "remove the quote" in message


def test_quote_left_open_at_the_end_of_a_lichess_csv(tmp_path):
    path = tmp_path / "open.csv"
    for text, words in [(HEAD + ROWS[0] + '"' + ROWS[1], "open.csv:3: a quote"),
                        (HEAD + ROWS[0] + '"' + ROWS[1].rstrip("\n"), "open.csv:3: a quote"),
                        (HEAD + ROWS[0].replace("mate", '"ma"te'), "open.csv:2: not readable as CSV")]:
        path.write_text(text)
        assert words in _error(load_lichess, path, LichessFormatError)


def test_two_rows_run_together_are_an_error_not_a_lost_row(tmp_path):
    """A lost line break made one row of two; the columns the loader reads came from the first,
    so before, the second puzzle vanished (and a sudoku CSV's rating became 2.28)."""
    path = tmp_path / "merged.csv"
    for text, load, error, words in [
        (HEAD + ROWS[0].rstrip("\n") + ROWS[1] + ROWS[2], load_lichess, LichessFormatError,
         "merged.csv:2: has 17 fields, more than the 9 of the header"),
        (ROWS[0] + ROWS[1].rstrip("\n") + ROWS[2], load_lichess, LichessFormatError,
         "merged.csv:2: has 17 fields, more than the 9 of line 1"),
        (f"id,puzzle,solution,rating\n7,{PUZ},{SOL},2.2" + f"8,{PUZ},{SOL},0.5\n", load_puzzles, SudokuFormatError,
         "merged.csv:2: 7 columns, the header has only 4"),
    ]:
        path.write_text(text)
        assert words in _error(load, path, error)
    path.write_text(HEAD + ROWS[0].replace("\n", ",,\n"))  # empty fields past the header's are harmless
    assert len(load_lichess(path)) == 1


ENCODINGS = {  # name: (file bytes from good text, line the error names, words it must hold)
    "latin-1": (lambda t: t.replace("x", "\xe9", 1).encode("latin-1"), None, "not UTF-8 text: byte 0xe9"),
    "utf-16": (lambda t: t.encode("utf-16"), 1, "UTF-16 text"),
    "nul": (lambda t: t.replace("\n", "\n\x00", 1).encode(), 2, "NUL"),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_text_that_is_not_utf8_names_file_and_line(tmp_path, name):
    make, line, words = ENCODINGS[name]
    sudoku = f"a1 {PUZ}\nbx {PUZ}\nc3 {PUZ}\n"  # the first 'x' (line 2 of both) becomes Latin-1
    for load, error, text in [(load_puzzles, SudokuFormatError, sudoku),
                              (load_lichess, LichessFormatError, HEAD + "".join(ROWS))]:
        path = tmp_path / f"{name}.txt"
        path.write_bytes(make(text))
        message = _error(load, path, error)
        assert f"{name}.txt:{line or 2}: " in message and words in message, message


def test_old_mac_windows_and_unix_line_ends_all_load(tmp_path):
    for load, text in [(load_puzzles, f"{PUZ}\n{PUZ}\n"), (load_lichess, HEAD + "".join(ROWS))]:
        path = tmp_path / "ends.txt"
        for end in ("\r", "\r\n", "\n"):
            path.write_bytes(text.replace("\n", end).encode())
            assert len(load(path)) == text.count("\n") - (load is load_lichess), repr(end)
    path.write_bytes(f"{PUZ}\r{PUZ[:80]}\r{PUZ}\r".encode())  # lines are still counted right
    assert "ends.txt:2: puzzle has 80 characters" in _error(load_puzzles, path, SudokuFormatError)


def test_a_latin1_sudoku_id_is_an_error_not_a_replacement_character(tmp_path):
    """Before: the id silently became 'b\\ufffd'."""
    path = tmp_path / "ids.txt"
    path.write_bytes(f"a1 {PUZ}\n".encode() + f"b\xe9 {PUZ}\n".encode("latin-1"))
    assert "ids.txt:2: not UTF-8 text: byte 0xe9 at column 2" in _error(load_puzzles, path, SudokuFormatError)
    path.write_text(f"a1 {PUZ}\nb\xe9 {PUZ}\n", encoding="utf-8")  # the same id as UTF-8 is fine
    assert load_puzzles(path).ids == ["a1", "b\xe9"]


@pytest.mark.parametrize("text, words", [("", "it is empty"), ("\n\n", "it is empty"),
                                         (HEAD, "it holds only a header")])
def test_lichess_file_without_puzzles_is_an_error(tmp_path, text, words):
    path = tmp_path / "none.csv"
    path.write_text(text)
    assert f"none.csv: no puzzle in the file ({words}" in _error(load_lichess, path, LichessFormatError)


@pytest.mark.parametrize("text, words", [("", "no line other than"), ("# just a comment\n\n", "no line other than"),
                                         ("id,puzzle,solution\n", "only a header")])
def test_sudoku_file_without_puzzles_is_an_error(tmp_path, text, words):
    """Before: an empty Puzzles, and file_sets then failed inside np.stack."""
    path = tmp_path / "none.txt"
    path.write_text(text)
    assert f"none.txt: no puzzle in the file (it holds {words}" in _error(load_puzzles, path, SudokuFormatError)


def test_a_folder_or_missing_file_is_a_format_error(tmp_path):
    for load, error in [(load_puzzles, SudokuFormatError), (load_lichess, LichessFormatError)]:
        assert "cannot be read (Is a directory)" in _error(load, tmp_path, error)
        assert "cannot be read (No such file or directory)" in _error(load, tmp_path / "gone.txt", error)


def test_a_line_of_separators_only_is_a_format_error(tmp_path):
    """Before: IndexError from inside the parser."""
    path = tmp_path / "commas.txt"
    path.write_text(f"{PUZ}\n,, ,\n")
    assert "commas.txt:2: no puzzle on the line" in _error(load_puzzles, path, SudokuFormatError)


def test_saved_ratings_with_17_significant_characters_load_back(tmp_path):
    """Before: save_puzzles wrote repr(4.123456789012345) and the loader took it for a solution."""
    path = tmp_path / "rated.txt"
    ratings = [4.123456789012345, 1.0000000000000002]
    save_puzzles(path, np.array([[int(c) for c in PUZ]] * 2), ratings=ratings)
    assert load_puzzles(path).ratings.tolist() == ratings


def test_cli_prints_a_bad_data_file_as_one_line(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_bytes(f"{PUZ}\n".encode() + f"\xe9{PUZ[1:]}\n".encode("latin-1"))
    status = cli.main(["data", "loopkit/configs/sudoku.yaml", "task.eval_levels=[]", f"task.eval_files=[{path}]"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"loopkit: error: {path}:2: not UTF-8"), err


def test_a_bad_eval_file_fails_before_any_puzzle_is_generated(tmp_path, monkeypatch):
    path = tmp_path / "bad.txt"
    path.write_text(PUZ[:80] + "\n")
    monkeypatch.setattr(Sudoku, "_generate", lambda *a: pytest.fail("generated before reading the file"))
    with pytest.raises(SudokuFormatError, match="bad.txt:1"):
        Sudoku(SudokuOptions(eval_files=[str(path)])).eval_sets()


# -- sudoku puzzles with several solutions ------------------------------------------------------
def _onehot(grid: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(grid, dtype=torch.long) - 1, 9).float()


def test_another_valid_solution_counts_as_solved_and_the_load_warns_once(tmp_path, capsys):
    path = tmp_path / "several.txt"
    path.write_text(f"{PUZ}\n{SEVERAL}\n{SEVERAL}\n")
    (evalset,) = file_sets(path, [])
    assert capsys.readouterr().err.count("2 of 3 puzzles have more than one solution") == 1
    first, second = solver.solve(np.array([int(c) for c in SEVERAL]), limit=2).solutions
    assert (evalset.y[1].numpy() + 1 == first).all()  # the target is one of the solutions ...
    logits = torch.stack([_onehot(np.array([int(c) for c in SOL])), _onehot(second), _onehot(first)])
    scores = Sudoku(SudokuOptions(eval_levels=[])).scores(logits, evalset.y, evalset.x)
    assert scores["valid"].tolist() == [1.0, 1.0, 1.0]
    assert scores["exact"].tolist() == [1.0, 1.0, 1.0]  # ... and the other one solves it too


def test_unique_puzzles_score_as_before_and_do_not_warn(tmp_path, capsys):
    path = tmp_path / "unique.txt"
    path.write_text(f"{PUZ}\n")
    (evalset,) = file_sets(path, [])
    assert capsys.readouterr().err == ""
    wrong = np.array([int(c) for c in SOL])
    wrong[[0, 1]] = wrong[[1, 0]]  # breaks the grid's rules: neither valid nor exact
    scores = Sudoku(SudokuOptions(eval_levels=[])).scores(_onehot(wrong)[None], evalset.y, evalset.x)
    assert scores["exact"].item() == 0.0 and scores["valid"].item() == 0.0


def test_each_puzzle_of_a_file_is_searched_once(tmp_path, monkeypatch):
    """Before: the loader solved each puzzle to check it, then file_sets solved it again."""
    path = tmp_path / "p.txt"
    path.write_text(f"{PUZ}\n{SEVERAL}\n")
    calls = []
    real = solver.solve_cells
    monkeypatch.setattr("loopkit.sudoku.io.solve_cells", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(solver, "solve_cells", lambda *a, **k: calls.append(1) or real(*a, **k))
    file_sets(path, [])
    assert len(calls) == 2


# -- progress -----------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only(tmp_path, monkeypatch):
    path = tmp_path / "p.txt"
    path.write_text(f"{PUZ}\n" * 3)
    monkeypatch.setattr(datafile, "PROGRESS_AFTER_S", 0.0)  # as if the file took long
    for stderr, shown in [(_Terminal(), True), (io.StringIO(), False)]:
        monkeypatch.setattr("sys.stderr", stderr)
        load_puzzles(path)
        assert ("reading p.txt" in stderr.getvalue()) == shown, stderr.getvalue()
