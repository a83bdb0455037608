"""Chess: the Stockfish puzzle pipeline, the Lichess loader, the board/move encoding, the metrics
and a short training run. Engine tests run the real engine and skip only when none is installed."""

import random
from pathlib import Path

import chess
import numpy as np
import pytest
import torch

from loopkit import config
from loopkit.chess import encoding, pipeline
from loopkit.chess.engine import EngineNotFound, find_engine, open_engine
from loopkit.chess.lichess import LichessFormatError, load_puzzles
from loopkit.config import ConfigError
from loopkit.early_exit import evaluate_until_converged
from loopkit.evaluate import evaluate_run
from loopkit.model import LoopedTransformer
from loopkit.tasks import build_task
from loopkit.tasks.chess import Chess
from loopkit.train import train

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "chess" / "lichess_puzzles_1000.csv"  # CC0, data/README.md
TINY = pipeline.PipelineSettings(max_depth=4, play_nodes=300, max_ply=40, games_per_shard=1)


def _have_engine() -> bool:
    try:
        find_engine()
        return True
    except EngineNotFound:
        return False


needs_engine = pytest.mark.skipif(not _have_engine(), reason="Stockfish not found (apt-get install stockfish)")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny pipeline run, cached: (cache dir, the puzzles)."""
    cache = tmp_path_factory.mktemp("chess-cache")
    (puzzles,) = pipeline.generate([(1, 4, 12)], seed=0, settings=TINY, workers=1, cache_dir=cache, progress=False)
    return cache, puzzles


# -- pipeline -----------------------------------------------------------------------------------
@needs_engine
def test_pipeline_puzzles_are_legal_and_the_engine_agrees(made):
    _, puzzles = made
    assert len(puzzles) == 12 and set(puzzles.grade) <= {1, 2, 3, 4}
    engine = open_engine()
    try:
        for fen, uci, grade in zip(puzzles.fen, puzzles.move, puzzles.grade):
            board = chess.Board(str(fen))
            assert board.is_valid() and board.is_legal(chess.Move.from_uci(str(uci)))
            again = pipeline.analyse(engine, board, TINY)
            assert again.move.uci() == uci and pipeline.grade(again, TINY) == grade
            assert pipeline.is_puzzle(again, TINY)
    finally:
        engine.quit()


@needs_engine
def test_pipeline_is_reproducible_and_resumes_from_its_cache(made, tmp_path, monkeypatch):
    cache, first = made
    # the same seed in a fresh cache gives the same puzzles
    (again,) = pipeline.generate([(1, 4, 12)], seed=0, settings=TINY, workers=1, cache_dir=tmp_path, progress=False)
    for name in pipeline.FIELDS:
        assert np.array_equal(first.arrays[name], again.arrays[name]), name
    (other,) = pipeline.generate([(1, 4, 3)], seed=1, settings=TINY, workers=1, cache_dir=None, progress=False)
    assert other.fen[0] != first.fen[0]
    # an interrupted run: the shards on disk are reused, only the missing one is made again
    shards = sorted(tmp_path.glob("chess-*/shard-*.npz"))
    assert len(shards) >= 2
    shards[-1].unlink()
    made_now = []
    real = pipeline.make_shard
    monkeypatch.setattr(pipeline, "make_shard", lambda s, seed, i, e=None: made_now.append(i) or real(s, seed, i, e))
    (resumed,) = pipeline.generate([(1, 4, 12)], seed=0, settings=TINY, workers=1, cache_dir=tmp_path, progress=False)
    assert made_now == [len(shards) - 1]
    assert np.array_equal(resumed.fen, first.fen)
    # a second call is served from the cache alone: no engine work at all
    monkeypatch.setattr(pipeline, "make_shard", lambda *a: pytest.fail("shard made again instead of read"))
    (cached,) = pipeline.generate([(1, 4, 12)], seed=0, settings=TINY, workers=1, cache_dir=cache, progress=False)
    assert np.array_equal(cached.move, first.move)


COMMITTED = Path(__file__).resolve().parents[1] / "results" / "chess" / "puzzle_cache"


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed puzzle cache next to the tests")
def test_committed_dataset_is_legal_and_the_engine_agrees():
    """The puzzles the results were trained and evaluated on: every move legal; a sample re-asked
    of the engine gives the same move and grade (a cleared hash and one thread make it exact)."""
    import json

    folders = sorted(COMMITTED.glob("chess-*-seed*"))
    assert folders
    rng = np.random.default_rng(0)
    engine = open_engine() if _have_engine() else None
    try:
        for folder in folders:
            manifest = json.loads((folder / "manifest.json").read_text())
            settings = pipeline.PipelineSettings(**{**manifest["settings"],
                                                    "opening_plies": tuple(manifest["settings"]["opening_plies"])})
            assert folder.name == f"chess-{settings.key()}-seed{manifest['seed']}"
            shards = [pipeline._load(f) for f in sorted(folder.glob("shard-*.npz"))]
            puzzles = pipeline.PuzzleSet.concat(shards)
            assert len(puzzles) > 100
            for fen, uci in zip(puzzles.fen, puzzles.move):
                board = chess.Board(str(fen))
                assert board.is_valid() and board.is_legal(chess.Move.from_uci(str(uci))), (fen, uci)
            assert ((puzzles.grade >= 1) & (puzzles.grade <= settings.max_depth)).all()
            if engine is None or pipeline.engine_name() != manifest["engine"]:
                continue  # another engine version may label differently: legality is what can be checked
            for i in rng.choice(len(puzzles), 8, replace=False):
                again = pipeline.analyse(engine, chess.Board(str(puzzles.fen[i])), settings)
                assert (again.move.uci(), pipeline.grade(again, settings)) == (puzzles.move[i], puzzles.grade[i])
    finally:
        if engine is not None:
            engine.quit()


def test_missing_engine_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(EngineNotFound, match="apt-get install -y stockfish"):
        find_engine(tmp_path / "no-such-stockfish")
    monkeypatch.setenv("LOOPKIT_STOCKFISH", str(tmp_path / "nope"))
    with pytest.raises(EngineNotFound, match="LOOPKIT_STOCKFISH"):
        find_engine()


def test_bad_grade_ranges_are_named():
    with pytest.raises(ConfigError, match="1-4"):
        pipeline.generate([(3, 9, 1)], settings=TINY, progress=False)
    with pytest.raises(ConfigError, match="task.eval_levels"):
        build_task({"name": "chess", "eval_levels": ["1-2", "hard"]})
    with pytest.raises(ConfigError, match="task.train_grades"):
        build_task({"name": "chess", "train_grades": "0-3"})


# -- Lichess loader -----------------------------------------------------------------------------
def test_lichess_sample_loads_with_the_setup_move_applied():
    loaded = load_puzzles(SAMPLE)
    assert len(loaded) == 1000
    import csv

    with open(SAMPLE, newline="") as f:
        first = next(r for r in csv.DictReader(f))
    setup, answer = first["Moves"].split()[:2]
    board = chess.Board(first["FEN"])
    board.push_uci(setup)
    assert loaded.ids[0] == first["PuzzleId"] and loaded.fens[0] == board.fen()
    assert loaded.moves[0] == answer and loaded.ratings[0] == float(first["Rating"])
    assert 800 <= loaded.ratings.min() and loaded.ratings.max() <= 2200
    assert all(b.is_legal(chess.Move.from_uci(m)) for b, m in zip(loaded.boards(), loaded.moves))


GOOD = "00sHx,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8d7 a2e6 d7d8 f7f8,1760,80,83,72,mate,x,\n"


def test_lichess_errors_name_file_and_line(tmp_path):
    no_header = tmp_path / "plain.csv"
    no_header.write_text(GOOD + "\n" + GOOD)
    loaded = load_puzzles(no_header)
    assert len(loaded) == 2 and loaded.moves[0] == "a2e6" and " w " in loaded.fens[0]

    header = "PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl\n"
    cases = {
        "fen": (GOOD.replace("q3k1nr", "q3k1nrr"), "illegal FEN"),
        "kings": (GOOD.replace("5K2", "8"), "illegal FEN"),
        "setup": (GOOD.replace("e8d7 a2e6", "e8e6 a2e6"), "move 1 of Moves, e8e6, is illegal"),
        "answer": (GOOD.replace("e8d7 a2e6", "e8d7 a2a8"), "move 2 of Moves, a2a8, is illegal"),
        "syntax": (GOOD.replace("e8d7 a2e6", "e8d7 zz"), "not a UCI move"),
        "rating": (GOOD.replace(",1760,", ",high,"), "rating 'high'"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(header + GOOD + bad + GOOD)
        with pytest.raises(LichessFormatError, match=rf"{name}\.csv:3: .*{message}"):
            load_puzzles(path)


# -- encoding -----------------------------------------------------------------------------------
def _random_positions(n_games: int, seed: int):
    """Positions of random games biased towards pawn moves, so promotions come up often."""
    r = random.Random(seed)
    for _ in range(n_games):
        board = chess.Board()
        while not board.is_game_over() and board.ply() < 200:
            yield board
            legal = list(board.legal_moves)
            pawn = [m for m in legal if board.piece_type_at(m.from_square) == chess.PAWN]
            board.push(r.choice(pawn if pawn and r.random() < 0.6 else legal))


def test_every_legal_move_round_trips_through_its_class():
    seen = {"promotions": 0, "under": 0, "castles": 0, "ep": 0, chess.WHITE: 0, chess.BLACK: 0}
    for board in _random_positions(25, seed=1):
        legal = list(board.legal_moves)
        classes = [encoding.move_index(m, board) for m in legal]
        assert len(set(classes)) == len(classes)
        assert all(0 <= c < encoding.NUM_MOVES for c in classes)
        for move, c in zip(legal, classes):
            assert encoding.index_move(c, board) == move
            seen["promotions"] += move.promotion is not None
            seen["under"] += move.promotion not in (None, chess.QUEEN)
            seen["castles"] += board.is_castling(move)
            seen["ep"] += board.is_en_passant(move)
        assert np.array_equal(encoding.legal_indices(board), np.sort(classes))
        seen[board.turn] += 1
    assert min(seen.values()) > 0, seen


def test_tokens_see_the_board_from_the_movers_side():
    board = chess.Board()
    tokens = encoding.board_tokens(board)
    assert tokens[chess.E1] == 6 and tokens[chess.E8] == 12 and tokens[chess.A2] == 1
    assert tokens[chess.A1] == tokens[chess.H1] == encoding.CASTLE_ROOK and tokens[chess.A8] == encoding.OPP_CASTLE_ROOK
    board.push_uci("e2e4")  # black to move sees the mirror image: the same tokens as white's view of it
    assert np.array_equal(encoding.board_tokens(board), encoding.board_tokens(board.mirror()))
    seen = encoding.board_tokens(board)  # black's e7 pawn is "my e2 pawn", white's e4 pawn "their e5 pawn"
    assert seen[chess.E2] == 1 and seen[chess.E7] == 0 and seen[chess.E5] == 7 and seen[chess.E1] == 6
    ep = chess.Board("4k3/8/8/8/3pP3/8/8/4K3 b - e3 0 1")
    assert encoding.board_tokens(ep)[chess.E6] == encoding.EN_PASSANT  # e3 seen from black's side
    # the same puzzle for black and for white gets one class
    black_move = chess.Move.from_uci("d4e3")
    assert encoding.move_index(black_move, ep) == encoding.move_index(chess.Move.from_uci("d5e6"), ep.mirror())


def test_file_flip_maps_legal_moves_to_legal_moves():
    checked = 0
    for board in _random_positions(6, seed=2):
        if board.castling_rights:
            continue
        flipped = board.transform(chess.flip_horizontal)
        enc = encoding.encode_positions([board, flipped], [next(iter(board.legal_moves))] * 1
                                        + [next(iter(flipped.legal_moves))])
        y = encoding.targets(enc)
        tokens, y_flip = encoding.flip_files(enc.tokens[:1], y[:1])
        assert np.array_equal(tokens[0], enc.tokens[1])
        assert set(y_flip[0, 1:][y_flip[0, 1:] >= 0]) == set(enc.legal_of(1))
        checked += 1
    assert checked > 50


def test_metrics_on_hand_made_logits():
    board = chess.Board()
    legal = encoding.legal_indices(board)
    answer = encoding.move_index(chess.Move.from_uci("e2e4"), board)
    enc = encoding.Encoded(encoding.board_tokens(board)[None].repeat(4, 0), np.full(4, answer, dtype=np.int16),
                           np.arange(5) * len(legal), np.tile(legal, 4))
    y = torch.as_tensor(encoding.targets(enc))
    task = build_task({"name": "chess"})
    logits = torch.zeros(4, encoding.NUM_MOVES)
    e2e3 = encoding.move_index(chess.Move.from_uci("e2e3"), board)
    illegal = encoding.move_index(chess.Move.from_uci("e2e5"), board)
    logits[0, answer] = 5  # right
    logits[1, e2e3] = 5  # legal, wrong (but the right from-square)
    logits[2, illegal] = 5  # illegal; the answer is the best legal move
    logits[2, answer] = 3
    logits[3, illegal] = 5  # illegal; a wrong legal move is the best legal one
    logits[3, e2e3] = 3
    logits = logits.view(4, 64, encoding.PLANES)
    scores = task.scores(logits, y)
    assert scores["exact"].tolist() == [1, 0, 0, 0]
    assert scores["illegal"].tolist() == [0, 0, 1, 1]
    assert scores["legal_exact"].tolist() == [1, 0, 1, 0]
    assert scores["token"].tolist() == [1, 0.5, 0.5, 0.5]
    stacked = task.scores(torch.stack([logits, logits.flip(0)]), y)  # (T, B, ...) as evaluation passes
    assert stacked["exact"].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert task.loss(logits, y).item() > 0


def test_board_positions_need_64_squares():
    cfg = config.load(None, ["task.name=chess", "model.position=axes", "model.width=16", "model.heads=2"]).model
    model = LoopedTransformer(cfg, encoding.VOCAB_SIZE, encoding.PLANES, layout=Chess.layout)
    assert model(torch.zeros(2, 64, dtype=torch.long), 2).logits.shape == (2, 64, encoding.PLANES)
    with pytest.raises(ValueError, match="64 cells"):
        model(torch.zeros(2, 81, dtype=torch.long), 2)


def test_axes_positions_need_a_task_that_declares_axes():
    with pytest.raises(ConfigError, match="model.position=axes .* task prefix_sums declares none"):
        config.load(None, ["model.position=axes"])


# -- the task in training and evaluation ----------------------------------------------------------
def _tiny_task(cache) -> list[str]:
    """Overrides for a chess task on the TINY pipeline settings, cached in ``cache``."""
    return ["task.name=chess", f"task.cache_dir={cache}", "task.workers=1", "task.max_depth=4", "task.play_nodes=300",
            "task.max_ply=40", "task.games_per_shard=1", "task.train_grades=1-4", "task.train_size=12",
            "task.eval_levels=[1-4]", "task.eval_seed=0", "task.eval_samples=6"]


@needs_engine
def test_data_command_fills_the_cache_for_engine_free_training(made, tmp_path, capsys):
    """`loopkit data` makes the puzzles once; afterwards no engine is needed for what is cached,
    and asking for more without one is a clear error."""
    from loopkit.cli import main

    cache, _ = made
    cfg = tmp_path / "chess.yaml"
    cfg.write_text("task:\n  name: chess\n")
    assert main(["data", str(cfg), *_tiny_task(cache)]) == 0
    out = capsys.readouterr().out
    assert "train: 12 examples" in out and "eval grade1-4: 6 examples" in out
    no_engine = f"task.engine={tmp_path / 'no-stockfish'}"
    assert main(["data", str(cfg), *_tiny_task(cache), no_engine]) == 0
    assert main(["data", str(cfg), *_tiny_task(cache), no_engine, "task.train_size=500"]) == 2
    assert "no-stockfish" in capsys.readouterr().err


@needs_engine
def test_training_and_evaluation_run_on_chess(made, tmp_path):
    cache, _ = made
    overrides = [
        *_tiny_task(cache), "task.augment=true",
        "model.width=32", "model.heads=2", "model.position=axes", "model.recall=internal",
        "train.max_iters=3", "train.batch_size=8", "train.steps=30", "train.warmup_steps=2", "train.threads=1",
        "train.log_every=10", "train.eval_every=30", "train.ckpt_every=30", "eval.max_iters=6",
    ]
    rows = SAMPLE.read_text().splitlines()[:41]
    (tmp_path / "lichess.csv").write_text("\n".join(rows) + "\n")
    overrides += [f"task.eval_files=[{tmp_path / 'lichess.csv'}]", "task.rating_buckets=[1500]"]
    cfg = config.load(None, overrides)
    last = train(cfg, tmp_path / "run", progress=False)
    assert np.isfinite(last["loss"]) and "val/grade1-4/exact" in last
    result = evaluate_run(tmp_path / "run")
    curves = result["curves"]["grade1-4"]
    assert len(curves["exact"]) == 6 and {"illegal", "legal_exact", "token"} <= set(curves)
    assert all(a <= b + 1e-9 for a, b in zip(curves["exact"], curves["legal_exact"]))
    assert {"lichess:-1500", "lichess:1500-"} <= set(result["curves"])
    early = evaluate_until_converged(tmp_path / "run", max_iters=4)
    assert 1 <= early["sets"]["grade1-4"]["mean_iters"] <= 4
