"""Chess puzzles from engine games, the way puzzle databases are made: play games, keep the
positions where one move is clearly best, label them with that move, grade how hard it is.

**Games.** Each game opens with a few uniformly random legal plies (``opening_plies``), which
gives openings far more varied than any book and plenty of loose pieces, then Stockfish plays
both sides at a small node budget (``play_nodes``): quick, and weak enough to make the mistakes
that puzzles punish. A game ends when it is over (draws by repetition included) or at
``max_ply``.

**Selection.** Every position after the random opening with at least two legal moves is searched
by iterative deepening to ``max_depth`` with two principal variations (multipv 2). Scores are
taken from the mover's side and clipped to +-``cp_cap`` centipawns (beyond that the game is
decided; winning a queen rather than a rook in a won game is not a puzzle); a mate counts as more
than the cap, sooner mates more. The position is kept when the best move beats the second best
by ``margin_cp``, or when both mate and the best mates ``mate_margin`` moves sooner. The label is
the best move of the last depth.

**Grade.** The first search depth from which the engine's best move stays the final one: a move
the engine sees at depth 1 (a hanging piece) is easy, one it only settles on at depth 9 needs a
long calculation, which is how a human finds it hard too. A mate in n needs 2n - 1 plies of
calculation, so a mating puzzle's grade is at least ``min(2n - 1, max_depth)``. Grades lie in
``1 .. max_depth``. The node count at the settling depth is kept too (``settle_nodes``), a finer
grade for whoever wants one.

**Reproducibility and caching.** Work is cut into shards of ``games_per_shard`` games. Game ``g``
of shard ``i`` draws its opening from ``SeedSequence(seed, spawn_key=(i, g))``, the engine runs
one thread with a fixed hash and starts every analysis from a cleared hash (``ucinewgame``), so a
shard is a function of (settings, seed, index, engine version) alone, whichever process makes
it. Shards are written atomically to ``cache_dir/chess-<settings hash>-seed<seed>/``; an
interrupted run resumes from the shards on disk, and a larger request reuses the smaller one's.
A request ("n puzzles with grade in lo..hi") takes the first matching puzzles in shard order.
Bump ``PIPELINE_VERSION`` whenever the output for given settings changes (it keys the cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import random
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.engine
import numpy as np

from .. import atomic
from ..cache import read_arrays
from ..errors import ConfigError
from .engine import engine_name, open_engine

PIPELINE_VERSION = 1


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that changes which puzzles a seed gives (all of it keys the cache)."""

    max_depth: int = 10  # analysis depth; grades lie in 1..max_depth
    margin_cp: int = 150  # best move must beat the second best by this much (clipped centipawns)
    mate_margin: int = 2  # ... or both mate and the best one mates this many moves sooner (0: off)
    cp_cap: int = 800  # scores are clipped to +-cp_cap before the margin is taken
    play_nodes: int = 2000  # the engine's node budget per move of the games
    opening_plies: tuple[int, int] = (2, 8)  # random plies before the engine plays (drawn uniformly)
    mistake_rate: float = 0.15  # chance that a game move is a random legal move instead of the engine's
    max_ply: int = 100  # games stop here
    games_per_shard: int = 4  # unit of caching, parallelism and resumption
    hash_mb: int = 16

    def __post_init__(self):
        lo, hi = self.opening_plies
        if self.max_depth < 1 or self.margin_cp < 1 or self.cp_cap < 1 or self.play_nodes < 1:
            raise ConfigError("chess: max_depth, margin_cp, cp_cap and play_nodes must be >= 1")
        if not 0 <= lo <= hi or self.max_ply <= hi or self.games_per_shard < 1 or self.mate_margin < 0:
            raise ConfigError("chess: need 0 <= opening plies min <= max < max_ply, games_per_shard >= 1, "
                              "mate_margin >= 0")
        if not 0 <= self.mistake_rate <= 1:
            raise ConfigError(f"chess: mistake_rate must lie in [0, 1], got {self.mistake_rate}")

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": PIPELINE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- one position ----------------------------------------------------------------------------
@dataclass
class Analysis:
    move: chess.Move  # best move at the last depth
    best: int  # clipped values of the best and second-best moves (mover's view)
    second: int
    mate: int  # n > 0 when the best move mates in n, else 0
    settle_depth: int
    settle_nodes: int


def value(score: chess.engine.Score, cap: int) -> int:
    """A score as one comparable integer: centipawns clipped to +-cap; mates beyond the cap,
    sooner ones further out."""
    mate = score.mate()
    if mate is None:
        return max(-cap, min(cap, score.score()))
    return (cap + 1000 - mate) if mate > 0 else -(cap + 1000 + mate)


def analyse(engine: chess.engine.SimpleEngine, board: chess.Board, s: PipelineSettings) -> Analysis | None:
    """Iterative deepening 1..max_depth with multipv 2 from a cleared hash; None if the engine
    gave fewer than two lines (fewer than two legal moves)."""
    best_at: dict[int, tuple[chess.Move, int]] = {}  # depth -> (best move, nodes)
    last: dict[int, dict] = {}  # multipv -> latest exact line
    # game=object(): a new "game" every call, so python-chess sends ucinewgame and Stockfish clears
    # its hash: the answer then depends on this position and the settings only
    with engine.analysis(board, chess.engine.Limit(depth=s.max_depth), multipv=2, game=object()) as lines:
        for info in lines:
            if "pv" not in info or "depth" not in info or "score" not in info or not info["pv"]:
                continue
            if info.get("lowerbound") or info.get("upperbound"):
                continue  # aspiration-window fail: not a settled line
            rank = info.get("multipv", 1)
            last[rank] = info
            if rank == 1:
                best_at[info["depth"]] = (info["pv"][0], info.get("nodes", 0))
    if 1 not in last or 2 not in last:
        return None
    move = last[1]["pv"][0]
    settle = max(best_at)
    for depth in sorted(best_at, reverse=True):
        if best_at[depth][0] != move:
            break
        settle = depth
    first, second = (last[k]["score"].pov(board.turn) for k in (1, 2))
    mate = first.mate() or 0
    return Analysis(move, value(first, s.cp_cap), value(second, s.cp_cap), max(mate, 0), settle,
                    best_at[settle][1])


def is_puzzle(a: Analysis, s: PipelineSettings) -> bool:
    if a.best - a.second >= s.margin_cp:
        return True
    return bool(s.mate_margin and a.mate and a.second > s.cp_cap
                and (s.cp_cap + 1000 - a.second) - a.mate >= s.mate_margin)


def grade(a: Analysis, s: PipelineSettings) -> int:
    return max(a.settle_depth, min(2 * a.mate - 1, s.max_depth)) if a.mate else a.settle_depth


# -- one shard -------------------------------------------------------------------------------
FIELDS = {  # name -> dtype of a shard's per-puzzle arrays
    "fen": "<U100", "move": "<U5", "grade": np.int16, "settle_depth": np.int16, "settle_nodes": np.int64,
    "best": np.int32, "second": np.int32, "mate": np.int16, "game": np.int32, "ply": np.int16,
}


def _game_rng(seed: int, shard: int, game: int) -> random.Random:
    state = np.random.SeedSequence(seed, spawn_key=(shard, game)).generate_state(2, dtype=np.uint32)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def play_game(engine: chess.engine.SimpleEngine, rng: random.Random, s: PipelineSettings) -> list[chess.Board]:
    """The positions of one game from the end of its random opening on."""
    board = chess.Board()
    for _ in range(rng.randint(*s.opening_plies)):
        moves = list(board.legal_moves)
        if not moves:
            break
        board.push(rng.choice(moves))
    positions = []
    token = object()  # one hash for the whole game; analyses later clear it
    while not board.is_game_over(claim_draw=True) and board.ply() < s.max_ply:
        positions.append(board.copy(stack=False))
        if rng.random() < s.mistake_rate:
            board.push(rng.choice(list(board.legal_moves)))
        else:
            board.push(engine.play(board, chess.engine.Limit(nodes=s.play_nodes), game=token).move)
    return positions


def make_shard(settings: PipelineSettings, seed: int, index: int, engine_path: str | None = None) -> dict:
    """The puzzles of shard ``index``: a dict of arrays (see FIELDS) plus counts and seconds."""
    started = time.perf_counter()
    rows: list[tuple] = []
    seen: set[str] = set()
    analysed = 0
    engine = open_engine(engine_path, settings.hash_mb)
    try:
        for g in range(settings.games_per_shard):
            for board in play_game(engine, _game_rng(seed, index, g), settings):
                key = board.epd()  # the position without move counters: a repeat is no new puzzle
                if key in seen or board.legal_moves.count() < 2:
                    continue
                seen.add(key)
                analysed += 1
                a = analyse(engine, board, settings)
                if a is None or not is_puzzle(a, settings):
                    continue
                rows.append((board.fen(), a.move.uci(), grade(a, settings), a.settle_depth, a.settle_nodes,
                             a.best, a.second, a.mate, g, board.ply()))
    finally:
        engine.quit()
    shard = {name: np.array([r[k] for r in rows], dtype=dtype) for k, (name, dtype) in enumerate(FIELDS.items())}
    shard["stats"] = np.array([settings.games_per_shard, analysed, time.perf_counter() - started])
    return shard


# -- many shards -------------------------------------------------------------------------------
@dataclass
class PuzzleSet:
    """Generated puzzles: per-puzzle arrays named as in FIELDS (``fen``, ``move`` (UCI), ``grade``, ...)."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["grade"])

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    @staticmethod
    def concat(parts: list[dict]) -> PuzzleSet:
        return PuzzleSet({k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, dtype=dtype)
                          for k, dtype in FIELDS.items()})


def _save(path: Path, shard: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as tmp:
        np.savez(tmp, **shard)


def _load(path: Path) -> dict:
    return read_arrays(path)


class _Cache:
    """Shard files of one (settings, seed) under cache_dir, or nothing when cache_dir is None.
    A manifest records the engine that made them: another engine version would label and grade
    differently, so mixing them in one folder is refused."""

    def __init__(self, cache_dir, settings: PipelineSettings, seed: int, read_only: bool = False):
        self.dir = None if cache_dir is None else Path(cache_dir) / f"chess-{settings.key()}-seed{seed}"
        self.settings, self.seed, self.read_only = settings, seed, read_only

    def save(self, index: int, shard: dict) -> None:
        if self.dir is not None and not self.read_only and not self.has(index):
            _save(self.path(index), shard)

    def path(self, index: int) -> Path | None:
        return None if self.dir is None else self.dir / f"shard-{index:06d}.npz"

    def has(self, index: int) -> bool:
        return self.dir is not None and self.path(index).exists()

    def check_engine(self, name: str) -> None:
        if self.dir is None:
            return
        manifest = self.dir / "manifest.json"
        if manifest.exists():
            try:
                made_by = json.loads(manifest.read_text()).get("engine")
            except (OSError, ValueError, AttributeError):
                raise ConfigError(f"{manifest} is damaged (not a JSON record of the engine); delete {self.dir} and "
                                  "its puzzles are made again") from None
            if made_by != name:
                raise ConfigError(f"{self.dir} holds puzzles made by {made_by}, but the engine now is {name}; "
                                  "use another task.cache_dir or delete that folder")
            return
        if self.read_only:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"engine": name, "seed": self.seed, "version": PIPELINE_VERSION,
                                        "settings": dataclasses.asdict(self.settings)}, indent=1))


def generate(
    requests: list[tuple[int, int, int]],
    seed: int = 0,
    settings: PipelineSettings | None = None,
    workers: int = 1,
    cache_dir=None,
    engine: str | None = None,
    progress: bool = True,
    max_shards: int = 5000,
    read_only: bool = False,
) -> list[PuzzleSet]:
    """For each request ``(lo, hi, n)``: the first ``n`` puzzles (in shard order) of grade
    ``lo..hi``, all from one stream of games for ``seed``. Shards are made ``workers`` at a time
    and cached under ``cache_dir`` (None: not cached; ``read_only``: read there, never written, as
    for a folder named by a run folder's stored config); see the module docstring."""
    s = settings or PipelineSettings()
    for lo, hi, n in requests:
        if not 1 <= lo <= hi <= s.max_depth or n < 0:
            raise ConfigError(f"chess: grade range {lo}-{hi} must lie within 1-{s.max_depth} (max_depth) "
                              f"and the count {n} must be >= 0")
    cache = _Cache(cache_dir, s, seed, read_only)
    chosen: list[list[dict]] = [[] for _ in requests]
    have = [0] * len(requests)
    total = sum(n for *_, n in requests)

    engine_checked = False
    if total and not cache.has(0):  # an engine is needed: find it before any output
        cache.check_engine(engine_name(engine))
        engine_checked = True

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"chess puzzles (seed {seed})", unit="puzzle", disable=not progress)
    made = {"shards": 0, "puzzles": 0, "positions": 0, "games": 0}
    started = time.perf_counter()
    pool = None
    pending: deque[tuple[int, Future | None]] = deque()  # in shard order; None: read from cache or make here
    next_index = 0
    try:
        while any(h < n for h, (*_, n) in zip(have, requests)):
            if next_index >= max_shards and not pending:
                short = [f"{lo}-{hi}: {h} of {n}" for h, (lo, hi, n) in zip(have, requests) if h < n]
                raise ConfigError(f"chess: {max_shards} shards did not give enough puzzles ({', '.join(short)}); "
                                  "ask for fewer or widen the grade range")
            while len(pending) < max(1, 2 * workers) and next_index < max_shards:
                fut = None
                if not cache.has(next_index):
                    if not engine_checked:
                        if pending:  # only look-ahead so far: the cache may still be enough without an engine
                            break
                        cache.check_engine(engine_name(engine))
                        engine_checked = True
                    if workers > 1:
                        if pool is None:
                            # spawn: safe when the caller runs threads (PyTorch); one engine per process
                            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
                        fut = pool.submit(make_shard, s, seed, next_index, engine)
                pending.append((next_index, fut))
                next_index += 1
            index, fut = pending.popleft()
            if cache.has(index):
                shard = _load(cache.path(index))
            else:
                shard = fut.result() if fut is not None else make_shard(s, seed, index, engine)
                cache.save(index, shard)
                made["shards"] += 1
                made["puzzles"] += len(shard["grade"])
                made["games"] += int(shard["stats"][0])
                made["positions"] += int(shard["stats"][1])
            for r, (lo, hi, n) in enumerate(requests):
                if have[r] >= n:
                    continue
                keep = np.flatnonzero((shard["grade"] >= lo) & (shard["grade"] <= hi))[: n - have[r]]
                chosen[r].append({k: shard[k][keep] for k in FIELDS})
                have[r] += len(keep)
                bar.update(len(keep))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            for index, fut in pending:  # finished look-ahead work is kept for the next request
                if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
                    cache.save(index, fut.result())
    if made["shards"] and progress:
        minutes = (time.perf_counter() - started) / 60
        print(f"chess puzzles: made {made['puzzles']} in {made['shards']} new shards ({made['games']} games, "
              f"{made['positions']} positions analysed) in {minutes * 60:.0f} s: "
              f"{made['puzzles'] / max(minutes, 1e-9):.1f} puzzles/min with {max(workers, 1)} worker(s)"
              + (f"; not cached: {cache.dir} comes from a run's stored config (name it as task.cache_dir to fill it)"
                 if cache.read_only and cache.dir is not None else ""), file=sys.stderr)
    return [PuzzleSet.concat(parts) for parts in chosen]
