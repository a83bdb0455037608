"""Chess puzzles: a board (64 square tokens, seen from the side to move) -> the best move.

The head scores 73 move planes per square (AlphaZero's layout, `loopkit.chess.encoding`), so the
output is one of 64 x 73 = 4672 move classes and the loss is a cross-entropy over all of them.
Targets are (B, 1 + M) integers: the answer's class, then the position's legal classes padded
with -1. That is enough for every metric and slices along the batch like any other target:

- ``exact``: the argmax move is the answer (the task's exact match);
- ``illegal``: the argmax move is not legal in the position (its mean is the share of illegal
  predictions);
- ``legal_exact``: the best-scored *legal* move is the answer (decoding restricted to legal moves);
- ``token``: partial credit, the share of the answer's two squares (from, to) the argmax move has;
- ``solved``: the argmax move is one of the best moves and none of the moves to avoid (an EPD
  suite's ``bm`` / ``am``; with ``am`` only: a legal move not to avoid). Elsewhere it is ``exact``.

EPD test suites (`loopkit.chess.epd`) carry more in the targets' tail: besides legal classes c
(0 <= c < 4672), a further best move is ``BEST + c`` and a move to avoid ``AVOID + c``, and
column 0 is the first best move, or ``NO_ANSWER`` (-100) for a record with ``am`` only (its
``exact``, ``legal_exact`` and ``token`` are 0; the loss would skip it).

Difficulty is the pipeline's grade (the search depth at which Stockfish settles on the answer,
`loopkit.chess.pipeline`); training takes low grades and the ladder climbs to high ones. Lichess
puzzle files (`task.eval_files`) become eval sets per rating bucket (`task.rating_buckets`), EPD
files (``.epd``) one eval set per section (`file_sets`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..cache import cache_dir
from ..chess import encoding, epd, lichess, pipeline
from ..errors import ConfigError
from ..layout import Axis, Layout
from .base import EvalSet, Task, need_eval_set
from .buckets import bucket_indices


def parse_grades(text: str, max_depth: int, key: str) -> tuple[int, int]:
    """'3-6' -> (3, 6), '4' -> (4, 4); within 1..max_depth."""
    lo, sep, hi = str(text).partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a grade range like '3-6' or '4'") from None
    if not 1 <= lo_i <= hi_i <= max_depth:
        raise ConfigError(f"{key}: grades {text!r} must lie within 1-{max_depth} (task.max_depth)")
    return lo_i, hi_i


@dataclass
class ChessOptions:
    train_grades: str = "1-2"  # grade range of the training puzzles
    train_size: int = 2000  # generated training puzzles (cached on disk)
    eval_levels: list[str] = field(default_factory=lambda: ["1-2", "3-6", "7-8", "9-10"])  # grade ranges
    eval_samples: int = 100
    eval_files: list[str] = field(default_factory=list)  # Lichess CSVs (a set per rating bucket), .epd (per section)
    rating_buckets: list[float] = field(default_factory=list)  # bucket edges for those files
    augment: bool = False  # mirror files a<->h of positions without castling rights
    seed: int = 0  # of the training games
    eval_seed: int = 1234  # of the eval games (other games than training's)
    # the pipeline (loopkit.chess.pipeline.PipelineSettings; every one of these keys the cache)
    max_depth: int = 10
    margin_cp: int = 150
    mate_margin: int = 2
    cp_cap: int = 800
    play_nodes: int = 2000
    mistake_rate: float = 0.15
    opening_plies: list[int] = field(default_factory=lambda: [2, 8])
    max_ply: int = 100
    games_per_shard: int = 4
    workers: int = 0  # engine processes (0: every core)
    cache_dir: str = ""  # "" -> ~/.cache/loopkit/chess
    engine: str = ""  # Stockfish binary ("" -> $LOOPKIT_STOCKFISH, PATH, /usr/games/stockfish)


# a square's rank, file, diagonal and anti-diagonal (rank-major squares, seen from the side to move):
# the lines rooks, bishops and queens move along (model.position: axes)
LAYOUT = Layout(grid=True, side=8, axes=(
    Axis("rank", 8, lambda rank, file: rank),
    Axis("file", 8, lambda rank, file: file),
    Axis("diagonal", 15, lambda rank, file: rank - file + 7),
    Axis("anti-diagonal", 15, lambda rank, file: rank + file),
))


class Chess(Task):
    Options = ChessOptions
    layout = LAYOUT
    vocab_size = encoding.VOCAB_SIZE
    num_classes = encoding.PLANES  # per square; 64 x 73 move classes in all

    @classmethod
    def check_options(cls, o) -> None:
        need_eval_set(o)
        if o.opening_plies[1] >= o.max_ply:
            raise ConfigError(f"task.opening_plies={o.opening_plies!r} is out of range: allowed a max below "
                              f"task.max_ply={o.max_ply}")

    def __init__(self, options: ChessOptions):
        super().__init__(options)
        o = options
        if len(o.opening_plies) != 2:
            raise ConfigError(f"task.opening_plies: expected [min, max], got {o.opening_plies}")
        self.settings = pipeline.PipelineSettings(
            max_depth=o.max_depth, margin_cp=o.margin_cp, mate_margin=o.mate_margin, cp_cap=o.cp_cap,
            play_nodes=o.play_nodes, mistake_rate=o.mistake_rate, opening_plies=tuple(o.opening_plies),
            max_ply=o.max_ply, games_per_shard=o.games_per_shard)
        self.train_grades = parse_grades(o.train_grades, o.max_depth, "task.train_grades")
        self.eval_grades = [parse_grades(t, o.max_depth, f"task.eval_levels[{i}]") for i, t in enumerate(o.eval_levels)]
        for path in o.eval_files:
            if not Path(path).is_file():
                raise ConfigError(f"task.eval_files: {path} is not a file")
        self._train: encoding.Encoded | None = None
        self._from = torch.as_tensor(encoding.FROM_SQUARE.astype(np.int64))
        self._to = torch.as_tensor(encoding.TO_SQUARE.astype(np.int64))

    # -- data ----------------------------------------------------------------------------------
    def _generate(self, requests: list[tuple[int, int, int]], seed: int) -> list[encoding.Encoded]:
        o = self.options
        sets = pipeline.generate(requests, seed, self.settings, workers=o.workers or os.cpu_count() or 1,
                                 cache_dir=cache_dir(o.cache_dir, "chess"), engine=o.engine or None,
                                 read_only=self.cache_read_only)
        return [encoding.encode_fens(list(p.fen), list(p.move)) for p in sets]

    def train_data(self) -> encoding.Encoded:
        if self._train is None:
            lo, hi = self.train_grades
            (self._train,) = self._generate([(lo, hi, self.options.train_size)], self.options.seed)
        return self._train

    def train_batch(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        enc = self.train_data()
        idx = torch.randint(0, len(enc), (batch_size,), generator=g).numpy()
        x, y = enc.tokens[idx].astype(np.int64), encoding.targets(enc, idx)
        if self.options.augment:
            flip = (torch.rand(batch_size, generator=g) < 0.5).numpy()
            flip &= ~((x == encoding.CASTLE_ROOK) | (x == encoding.OPP_CASTLE_ROOK)).any(1)
            x[flip], y[flip] = encoding.flip_files(x[flip], y[flip])
        return torch.as_tensor(x), torch.as_tensor(y)

    def make_eval_sets(self) -> list[EvalSet]:
        o = self.options
        # the user's files first: a bad file fails at once, not after minutes of engine generation
        from_files = [s for path in o.eval_files for s in file_sets(Path(path), o.rating_buckets)]
        sets = []
        made = self._generate([(lo, hi, o.eval_samples) for lo, hi in self.eval_grades], o.eval_seed)
        for (lo, hi), data in zip(self.eval_grades, made):
            sets.append(as_eval_set(f"grade{lo}" if lo == hi else f"grade{lo}-{hi}", data))
        return sets + from_files

    # -- loss and metrics ------------------------------------------------------------------------
    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        flat = logits.flatten(-2).float()  # (..., B, 4672)
        label = y[:, 0].expand(flat.shape[:-1])
        return F.cross_entropy(flat.reshape(-1, flat.shape[-1]), label.reshape(-1))

    def output_logits(self, logits: Tensor) -> Tensor:
        """One answer per board, the argmax over all 4,672 move classes: (B, 1, 4672)."""
        return logits.flatten(-2).unsqueeze(-2)

    def scores(self, logits: Tensor, y: Tensor, x: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sample scores (table in the module docstring); logits (..., B, 64, 73)."""
        flat = logits.flatten(-2)
        label, moves = y[:, 0], y[:, 1:]
        n = encoding.NUM_MOVES

        def marked(lo: int) -> Tensor:  # (B, n): the classes c the tail holds as lo + c
            out = torch.zeros(y.shape[0], n + 1, dtype=torch.bool, device=y.device)
            inside = (moves >= lo) & (moves < lo + n)
            out.scatter_(1, torch.where(inside, moves - lo, n), True)  # the rest lands in the spare column
            return out[:, :n]

        legal = marked(0)
        pred = flat.argmax(-1)  # (..., B)
        rows = torch.arange(y.shape[0], device=y.device)
        legal_pred = flat.masked_fill(~legal, float("-inf")).argmax(-1)
        answered = label >= 0  # NO_ANSWER: an EPD record with am only
        answer = label.clamp(min=0)
        src, dst = self._from.to(y.device), self._to.to(y.device)
        token = ((src[pred] == src[answer]).float() + (dst[pred] == dst[answer]).float()) / 2 * answered
        best, avoid = marked(BEST), marked(AVOID)
        best[rows, answer] |= answered
        solved = torch.where(best.any(1), best[rows, pred], legal[rows, pred]) & ~avoid[rows, pred]
        return {"exact": (pred == label).float(), "token": token, "illegal": (~legal[rows, pred]).float(),
                "legal_exact": (legal_pred == label).float(), "solved": solved.float()}


def as_eval_set(name: str, enc: encoding.Encoded) -> EvalSet:
    return EvalSet(name, torch.as_tensor(enc.tokens.astype(np.int64)), torch.as_tensor(encoding.targets(enc)))


# EPD targets (module docstring): offsets of a further best move and of a move to avoid in the
# tail, and column 0 of a record without a best move
BEST, AVOID, NO_ANSWER = encoding.NUM_MOVES, 2 * encoding.NUM_MOVES, -100


def epd_sets(path: Path) -> list[EvalSet]:
    """An EPD test suite as eval sets ``{stem}:{section}``, one per section (`loopkit.chess.epd`)."""
    suite = epd.load_suite(path)
    best, avoid = suite.classes()
    first = [(b or a)[0] for b, a in zip(suite.best, suite.avoid)]  # a legal move of every record
    enc = encoding.encode_fens(suite.fens, first)
    extra = [[BEST + c for c in b[1:]] + [AVOID + c for c in a] for b, a in zip(best, avoid)]
    tail = np.full((len(suite), max(len(e) for e in extra)), -1, dtype=np.int64)
    for i, e in enumerate(extra):
        tail[i, : len(e)] = e
    y = np.concatenate([encoding.targets(enc), tail], axis=1)
    y[np.array([not b for b in best], dtype=bool), 0] = NO_ANSWER
    x = enc.tokens.astype(np.int64)
    return [EvalSet(f"{path.stem}:{section}", torch.as_tensor(x[rows]), torch.as_tensor(y[rows]))
            for section, rows in suite.section_rows().items()]


def file_sets(path: Path, buckets: list[float]) -> list[EvalSet]:
    """A puzzle file as eval sets: an EPD suite (``.epd``) one per section (`epd_sets`); else a
    Lichess puzzle CSV, one per rating bucket when buckets are given, else one."""
    if path.suffix.lower() == ".epd":
        return epd_sets(path)
    loaded = lichess.load_puzzles(path)
    enc = encoding.encode_fens(loaded.fens, loaded.moves)
    if not buckets:
        return [as_eval_set(path.stem, enc)]
    return [as_eval_set(f"{path.stem}:{suffix}", enc.subset(rows))
            for suffix, rows in bucket_indices(loaded.ratings, buckets)]
