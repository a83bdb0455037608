"""EPD test suites for chess (issue 13, item 4): the loader (`loopkit.chess.epd`), its faults
named by file and line, the targets and the ``solved`` score of the chess task, one eval set per
section, ``solved`` in the eval table, and a fuzz test of the loader (Hypothesis)."""

from __future__ import annotations

from pathlib import Path

import chess
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from loopkit import config
from loopkit.chess import encoding
from loopkit.chess.epd import EpdFormatError, load_suite, section_of, split_operations
from loopkit.config import ConfigError
from loopkit.evaluate import format_table, summarize, trace_set
from loopkit.model import LoopedTransformer
from loopkit.tasks import build_task
from loopkit.tasks.chess import AVOID, BEST, NO_ANSWER, Chess, file_sets
from test_loader_fuzz import LOADERS, damaged

SUITE = Path(__file__).resolve().parents[1] / "data" / "chess" / "sample_suite.epd"  # CC0, data/README.md
START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -"
GOOD = f'{START} bm e4 d4; id "opening.1";'


@pytest.fixture(scope="module")
def task():
    return build_task({"name": "chess"})


def _write(tmp_path, text: str | bytes, name: str = "suite.epd") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# -- parsing -------------------------------------------------------------------------------------

def test_sample_suite_loads_with_sections_several_best_moves_and_moves_to_avoid():
    suite = load_suite(SUITE)
    assert len(suite) == 13 and suite.section_rows() == {"mate": list(range(8)), "hanging": list(range(8, 13))}
    row = {ident: i for i, ident in enumerate(suite.ids)}
    assert suite.best[row["mate.06"]] == ["a1a8", "e1e8"]  # two bm, in the file's order
    assert suite.best[row["mate.07"]] == ["b1b7"] and suite.avoid[row["mate.07"]] == ["b1b6"]
    assert suite.best[row["mate.08"]] == [] and suite.avoid[row["mate.08"]] == ["b8b3"]  # am only
    assert suite.fens[row["mate.02"]] == "r5k1/8/8/8/8/8/5PPP/6K1 b - - 0 1"  # hmvc, fmvn ignored
    assert suite.lines[0] == 4  # two comment lines and a blank one before it
    for board, best, avoid in zip(suite.boards(), suite.best, suite.avoid):
        assert board.is_valid() and (best or avoid) and not set(best) & set(avoid)
        assert all(chess.Move.from_uci(u) in board.legal_moves for u in best + avoid)


def test_sample_suite_agrees_with_python_chess():
    """Where python-chess's own EPD parser reads a record, it finds the same moves and id."""
    suite = load_suite(SUITE)
    records = [line for line in SUITE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(records) == len(suite)
    for i, line in enumerate(records):
        board, ops = chess.Board.from_epd(line)
        assert board.board_fen() == chess.Board(suite.fens[i]).board_fen() and ops["id"] == suite.ids[i]
        assert [m.uci() for m in ops.get("bm", [])] == suite.best[i]
        assert [m.uci() for m in ops.get("am", [])] == suite.avoid[i]


def test_quoted_semicolons_escapes_and_other_opcodes(tmp_path):
    line = (f'{START} c0 "a; b \\"quoted\\"; c"; bm e4; acd 20; ce +35; pv e4 e5 Nf3; c1 unquoted words; '
            'noop; id "quirk.7";  am  h4 ;c9 "last"')  # the last ; may be missing
    suite = load_suite(_write(tmp_path, line))
    assert suite.ids == ["quirk.7"] and suite.best == [["e2e4"]] and suite.avoid == [["h2h4"]]
    assert suite.sections == ["quirk"]
    ops = split_operations('c0 "a; b \\"q\\""; bm e4 d4;;id "x"')
    assert ops == [[("c0", False), ('a; b "q"', True)], [("bm", False), ("e4", False), ("d4", False)],
                   [("id", False), ("x", True)]]


@pytest.mark.parametrize("ident, section", [
    ("WAC.001", "WAC"), ("STS(v1.0) Undermining.001", "STS(v1.0) Undermining"), ("BT2630-01", "BT2630"),
    ("arasan21.1", "arasan21"), ("ECM 0042", "ECM"), ("mate.a", "mate"), ("Kasparov", "Kasparov"),
    ("17", "suite"), ("", "suite"),
])
def test_section_is_the_id_without_its_number(ident, section):
    assert section_of(ident, "suite") == section


def test_records_without_id_go_to_the_file_stem(tmp_path):
    path = _write(tmp_path, f"{START} bm e4;\n{START} am f3;\n{GOOD}\n", name="openers.epd")
    suite = load_suite(path)
    assert suite.ids == ["", "", "opening.1"] and suite.sections == ["openers", "openers", "opening"]
    assert [s.name for s in file_sets(path, [])] == ["openers:openers", "openers:opening"]


# -- malformed files: one ConfigError naming file and line ---------------------------------------

BAD = [
    ("8/8/8/8/8/8/8/8 w - - bm e4;", "illegal position"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR x KQkq - bm e4;", "illegal FEN"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq", "four FEN fields"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq bm e4;", "illegal FEN"),  # en passant field missing
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1 bm e4;", "move counters"),
    (f"{START} bm e5;", "'e5' is not a legal best move"),
    (f"{START} bm Xy9;", "'Xy9' is not a legal best move"),
    (f"{START} bm e4 Qh5;", "'Qh5' is not a legal best move"),
    (f"{START} am Ke2;", "'Ke2' is not a legal move to avoid"),
    ("4k3/8/8/8/8/8/8/1N2KN2 w - - bm Nd2;", "ambiguous"),
    (f"{START} bm --;", "null move"),
    (f'{START} bm "e4";', "quoted string, not a move"),
    (f"{START} bm;", "bm has no move"),
    (f'{START} id "no moves";', "neither bm"),
    (f"{START} c0 x;", "neither bm"),
    (f"{START} bm e4; am e4;", "e4 is both a best move"),
    (f"{START} bm e4 Nf3; am e2e4;", "e4 is both a best move"),  # the same move in other notation
    (f"{START} bm e4; bm d4;", "bm appears twice"),
    (f'{START} bm e4; id "a" "b";', "id needs one operand"),
    (f'{START} bm e4; id "open;', "does not close"),
    (f"{START} 1bm e4;", "not an EPD opcode"),
    (f'{START} "bm" e4;', "not an EPD opcode"),
]


@pytest.mark.parametrize("line, fault", BAD)
def test_a_bad_record_names_file_line_and_fault(tmp_path, line, fault):
    path = _write(tmp_path, f"# a comment\n{GOOD}\n\n{line}\n{GOOD}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    message = str(err.value)
    assert isinstance(err.value, EpdFormatError) and "\n" not in message
    assert message.startswith(f"{path}:4: ") and fault in message, message


@pytest.mark.parametrize("content, fault", [
    (b"", "no EPD record"), (b"\n  \n# only a comment\n", "no EPD record"),
    (f"{GOOD}\n".encode() + b"caf\xe9 w - - bm e4;\n", ":2: not UTF-8"),
    ("\ufeff".encode("utf-16") + GOOD.encode("utf-16-le"), ":1: the file is UTF-16"),
])
def test_empty_and_undecodable_files_are_one_error(tmp_path, content, fault):
    path = _write(tmp_path, content)
    with pytest.raises(EpdFormatError, match=fault) as err:
        load_suite(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_missing_epd_file_is_one_error(tmp_path):
    with pytest.raises(EpdFormatError, match="cannot be read"):
        load_suite(tmp_path / "nowhere.epd")


# -- targets and scores --------------------------------------------------------------------------

def _argmax_at(classes: list[int]) -> torch.Tensor:
    """(B, 64, 73) logits whose argmax is the given move class of each row."""
    logits = torch.zeros(len(classes), encoding.NUM_MOVES)
    logits[torch.arange(len(classes)), torch.as_tensor(classes)] = 5.0
    return logits.view(len(classes), 64, encoding.PLANES)


def test_file_sets_give_one_set_per_section():
    sets = file_sets(SUITE, [1500])  # rating buckets are for Lichess files only
    assert [(s.name, len(s.x), len(s.y)) for s in sets] == [("sample_suite:mate", 8, 8), ("sample_suite:hanging", 5, 5)]
    assert all(s.x.shape[1] == 64 and s.x.dtype == s.y.dtype == torch.int64 for s in sets)


def test_solved_is_a_best_move_and_no_move_to_avoid_for_every_legal_move(task):
    """Every legal move of every record, as the model's argmax: solved exactly when python-chess's
    own reading of the record has it among bm (or there is no bm) and not among am."""
    suite = load_suite(SUITE)
    records = [line for line in SUITE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    sets = {s.name.split(":")[1]: s for s in file_sets(SUITE, [])}
    checked = 0
    for section, rows in suite.section_rows().items():
        s = sets[section]
        for j, r in enumerate(rows):
            board, ops = chess.Board.from_epd(records[r])
            best, avoid = ops.get("bm", []), ops.get("am", [])
            moves = list(board.legal_moves)
            y = s.y[j : j + 1].expand(len(moves), -1)
            scores = task.scores(_argmax_at([encoding.move_index(m, board) for m in moves]), y)
            want = [(m in best if best else True) and m not in avoid for m in moves]
            assert scores["solved"].tolist() == [float(w) for w in want], suite.ids[r]
            assert scores["exact"].tolist() == [float(bool(best) and m == best[0]) for m in moves]
            assert scores["illegal"].sum() == 0
            checked += len(moves)
    assert checked > 200


def test_an_illegal_argmax_never_solves_and_am_only_records_have_no_answer(task):
    sets = {s.name: s for s in file_sets(SUITE, [])}
    mate = sets["sample_suite:mate"]
    assert mate.y[7, 0] == NO_ANSWER and (mate.y[:7, 0] >= 0).all()  # mate.08: am only
    assert (mate.y[5] >= BEST).sum() == 1 and ((mate.y[6] >= AVOID).sum()) == 1  # mate.06: 2 bm; mate.07: an am
    board = chess.Board("1q6/8/8/8/8/2k5/8/K7 b - -")
    illegal = encoding.move_index(chess.Move.from_uci("c3c5"), board)  # a king does not go two squares
    legal = encoding.move_index(chess.Move.from_uci("b8b7"), board)
    scores = task.scores(_argmax_at([illegal, legal]), mate.y[7:8].expand(2, -1))
    assert scores["solved"].tolist() == [0, 1] and scores["illegal"].tolist() == [1, 0]
    assert scores["exact"].tolist() == scores["legal_exact"].tolist() == scores["token"].tolist() == [0, 0]


def test_black_to_move_is_mirrored_like_its_board():
    """mate.02 is mate.01 with colours swapped and ranks flipped: black's Ra1# is, seen from the
    side to move, white's Ra8#: same tokens, same answer class, and the class decodes to Ra1#."""
    mate = file_sets(SUITE, [])[0]
    assert torch.equal(mate.x[0], mate.x[1]) and mate.y[0, 0] == mate.y[1, 0]
    black = chess.Board("r5k1/8/8/8/8/8/5PPP/6K1 b - -")
    assert black.san(encoding.index_move(int(mate.y[1, 0]), black)) == "Ra1#"
    fool = chess.Board("rnbqkbnr/pppp1ppp/8/4p3/6P1/5P2/PPPPP2P/RNBQKBNR b KQkq g3")
    assert fool.san(encoding.index_move(int(mate.y[3, 0]), fool)) == "Qh4#"


def test_solved_equals_exact_on_single_answer_targets(task):
    board = chess.Board()
    legal = encoding.legal_indices(board)
    enc = encoding.Encoded(encoding.board_tokens(board)[None].repeat(3, 0), legal[:3].astype(np.int16),
                           np.arange(4) * len(legal), np.tile(legal, 3))
    y = torch.as_tensor(encoding.targets(enc))
    logits = torch.randn(5, 3, 64, encoding.PLANES, generator=torch.Generator().manual_seed(0))
    logits.view(5, 3, -1)[0, torch.arange(3), torch.as_tensor(legal[:3].astype(np.int64))] = 99  # T = 1: all right
    scores = task.scores(logits, y)
    assert torch.equal(scores["solved"], scores["exact"]) and scores["solved"][0].tolist() == [1, 1, 1]


def test_eval_traces_and_prints_solved_per_section(task):
    cfg = config.load(None, ["task.name=chess", "model.position=axes", "model.width=16", "model.heads=2"]).model
    torch.manual_seed(0)
    model = LoopedTransformer(cfg, encoding.VOCAB_SIZE, encoding.PLANES, layout=Chess.layout)
    curves = {}
    for s in file_sets(SUITE, []):
        trace = trace_set(model, task, s, 3, 4, torch.device("cpu"))
        assert trace.scores["solved"].shape == (len(s.x), 3)
        curves[s.name] = {m: trace.curve(m) for m in trace.scores}
    summary = summarize(curves, train_iters=2)
    assert all(0 <= row["solved_at_max_T"] <= 1 for row in summary.values())
    head, *rows = format_table(summary).splitlines()
    assert "solved" in head.split() and [r.split()[0] for r in rows] == list(curves)
    assert "solved" not in format_table(summarize({"len8": {"exact": [1.0], "token": [1.0]}}, 1))


# -- fuzz ----------------------------------------------------------------------------------------

def _content_lines(raw: bytes) -> int:
    """Lines of ``raw`` neither blank nor comments, split as the loader splits them: one record each."""
    lines = raw.decode("utf-8-sig").encode().splitlines()
    return sum(bool(t) and not t.startswith("#") for t in (line.decode().strip() for line in lines))


def _check(path: Path):
    """The loaded suite, checked record by record, or None after checking the failure is one line."""
    try:
        suite = load_suite(path)
    except EpdFormatError as err:
        assert "\n" not in str(err) and str(path) in str(err), str(err)
        return None
    assert len(suite) == _content_lines(path.read_bytes())  # no record lost or run together
    fields = (suite.ids, suite.fens, suite.best, suite.avoid, suite.sections, suite.lines)
    assert all(len(f) == len(suite) for f in fields)
    for board, best, avoid in zip(suite.boards(), suite.best, suite.avoid):
        assert board.is_valid() and (best or avoid) and not set(best) & set(avoid)
        assert all(chess.Move.from_uci(u) in board.legal_moves for u in best + avoid)
    suite.classes()  # every move has its class
    return suite


FUZZ_FILE = "\n".join(SUITE.read_text().splitlines()[3:9]) + "\n"  # six records of the sample


@LOADERS
@given(data=st.data())
def test_damaged_epd_files_load_right_or_fail_clearly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("epd") / "suite.epd"
    path.write_bytes(data.draw(damaged(FUZZ_FILE)))
    _check(path)


LINE_PARTS = st.sampled_from([START, "8/8/8/8/8/8/8/8", "4k3/8/8/8/8/8/8/4K3", "w", "b", "-", "KQkq", "e3",
                              "bm", "am", "id", "c0", "e4", "Nf3", "O-O", "Ke2", "Kd1", "--", '"', ";", '"x;y"',
                              "\\", "#", "0", "1", "+", " ", "\t", "\r", "\n", "\u2028", "\xe9"])


@LOADERS
@given(parts=st.lists(LINE_PARTS | st.text(max_size=6), max_size=30), raw=st.binary(max_size=40))
def test_random_lines_load_or_fail_clearly(tmp_path_factory, parts, raw):
    folder = tmp_path_factory.mktemp("epd")
    (folder / "lines.epd").write_text(" ".join(parts), encoding="utf-8")
    _check(folder / "lines.epd")
    (folder / "bytes.epd").write_bytes(raw)
    _check(folder / "bytes.epd")
