"""Board -> 64 square tokens, and move <-> class index, both seen from the side to move.

Why the mover's frame: a position with black to move is mirrored (ranks flipped, colours swapped,
python-chess ``Board.mirror``), so the model only ever plays "white" moving up the board. One
colour to learn halves what the weights must represent, and a black puzzle is exactly the white
puzzle it mirrors to.

Tokens (one per square a1, b1, ..., h8 of the mirrored board; ``VOCAB_SIZE`` = 16):

==========  ===========================================================================
0           empty square
1 .. 6      the mover's pawn, knight, bishop, rook, queen, king
7 .. 12     the opponent's pawn .. king
13, 14      the mover's / the opponent's rook that still has its castling right
15          the empty square a pawn can be captured on en passant (only when legal)
==========  ===========================================================================

Castling rights and en passant live on squares rather than in extra tokens, so the input stays
exactly 64 tokens (``position: board`` needs that) and the information sits where it acts.

Moves: 73 "planes" per from-square (AlphaZero's layout), so a per-square head of 73 classes
scores every move: planes 0..55 are queen-like moves (8 directions x distance 1..7), 56..63 the
8 knight jumps, 64..72 under-promotions (3 directions x knight/bishop/rook). A queen promotion is
the plain pawn push/capture onto the last rank; castling is the king's two-square move. Class
index = from_square * 73 + plane, matching ``logits.flatten(-2)`` of (..., 64, 73) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import chess
import numpy as np

VOCAB_SIZE = 16
PLANES = 73
NUM_MOVES = 64 * PLANES  # 4672
CASTLE_ROOK, OPP_CASTLE_ROOK, EN_PASSANT = 13, 14, 15

# (rank step, file step): N, NE, E, SE, S, SW, W, NW
_DIRECTIONS = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
_KNIGHT = [(2, 1), (1, 2), (-1, 2), (-2, 1), (-2, -1), (-1, -2), (1, -2), (2, -1)]
_UNDER = [chess.KNIGHT, chess.BISHOP, chess.ROOK]


def _plane_deltas() -> list[tuple[int, int, int | None]]:
    """(rank delta, file delta, under-promotion piece or None) of every plane."""
    planes = [(dr * d, df * d, None) for dr, df in _DIRECTIONS for d in range(1, 8)]
    planes += [(dr, df, None) for dr, df in _KNIGHT]
    planes += [(1, df, piece) for df in (-1, 0, 1) for piece in _UNDER]
    return planes


PLANE_DELTAS = _plane_deltas()
_PLANE_OF = {(dr, df, p): i for i, (dr, df, p) in enumerate(PLANE_DELTAS)}


def _to_squares() -> np.ndarray:
    """(4672,) destination square of every class in the mover's frame, -1 where off the board."""
    out = np.full(NUM_MOVES, -1, dtype=np.int16)
    for sq in range(64):
        r, f = divmod(sq, 8)
        for plane, (dr, df, _) in enumerate(PLANE_DELTAS):
            if 0 <= r + dr < 8 and 0 <= f + df < 8:
                out[sq * PLANES + plane] = (r + dr) * 8 + f + df
    return out


TO_SQUARE = _to_squares()
FROM_SQUARE = (np.arange(NUM_MOVES) // PLANES).astype(np.int16)


def mover_frame(board: chess.Board) -> chess.Board:
    """The board as the side to move sees it: unchanged for white, mirrored for black."""
    return board if board.turn == chess.WHITE else board.mirror()


def board_tokens(board: chess.Board) -> np.ndarray:
    """(64,) int8 square tokens of ``board`` in the mover's frame (table in the module docstring)."""
    b = mover_frame(board)
    tokens = np.zeros(64, dtype=np.int8)
    for sq, piece in b.piece_map().items():
        tokens[sq] = piece.piece_type + (0 if piece.color == chess.WHITE else 6)
    for sq in chess.scan_forward(b.clean_castling_rights()):
        tokens[sq] = CASTLE_ROOK if sq < 8 else OPP_CASTLE_ROOK
    if b.has_legal_en_passant():
        tokens[b.ep_square] = EN_PASSANT
    return tokens


def move_index(move: chess.Move, board: chess.Board) -> int:
    """Class index of ``move`` played in ``board`` (its side to move decides the frame)."""
    src, dst = move.from_square, move.to_square
    if board.turn == chess.BLACK:
        src, dst = chess.square_mirror(src), chess.square_mirror(dst)
    dr, df = chess.square_rank(dst) - chess.square_rank(src), chess.square_file(dst) - chess.square_file(src)
    if move.promotion in _UNDER:
        key = (dr, df, move.promotion)
    elif (dr, df) in _KNIGHT:
        key = (dr, df, None)
    else:
        dist = max(abs(dr), abs(df))
        if dist == 0 or (dr and df and abs(dr) != abs(df)):
            raise ValueError(f"{move.uci()} is neither a queen-like nor a knight move")
        key = (dr, df, None)
    plane = _PLANE_OF.get(key)
    if plane is None:
        raise ValueError(f"{move.uci()} has no move class")
    return src * PLANES + plane


def index_move(index: int, board: chess.Board) -> chess.Move | None:
    """The move a class index names in ``board`` (None when it leaves the board). A queen-like
    move of a pawn onto the last rank is the queen promotion. Not checked for legality."""
    src = index // PLANES
    dst = int(TO_SQUARE[index])
    if dst < 0:
        return None
    promotion = PLANE_DELTAS[index % PLANES][2]
    if board.turn == chess.BLACK:
        src, dst = chess.square_mirror(src), chess.square_mirror(dst)
    last_rank = 7 if board.turn == chess.WHITE else 0
    if promotion is None and board.piece_type_at(src) == chess.PAWN and chess.square_rank(dst) == last_rank:
        promotion = chess.QUEEN
    return chess.Move(src, dst, promotion)


def legal_indices(board: chess.Board) -> np.ndarray:
    """Sorted (n_legal,) int16 class indices of every legal move."""
    return np.sort(np.array([move_index(m, board) for m in board.legal_moves], dtype=np.int16))


@dataclass
class Encoded:
    """Positions ready for the model: ``tokens`` (n, 64) int8, ``labels`` (n,) int16 class of the
    target move, and every legal move in CSR form: the legal classes of position i are
    ``legal[offsets[i]:offsets[i + 1]]``. About 100 bytes a position instead of 4672."""

    tokens: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    legal: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def legal_of(self, i: int) -> np.ndarray:
        return self.legal[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, rows) -> Encoded:
        parts = [self.legal_of(int(i)) for i in rows]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]).astype(np.int64)
        return Encoded(self.tokens[rows], self.labels[rows], offsets,
                       np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16))


def encode_positions(boards: list[chess.Board], moves: list[chess.Move]) -> Encoded:
    """Encode (board, target move) pairs; the move must be legal in its board."""
    tokens = np.zeros((len(boards), 64), dtype=np.int8)
    labels = np.zeros(len(boards), dtype=np.int16)
    legal, offsets = [], [0]
    for i, (board, move) in enumerate(zip(boards, moves)):
        if not board.is_legal(move):
            raise ValueError(f"{move.uci()} is not legal in {board.fen()}")
        tokens[i] = board_tokens(board)
        labels[i] = move_index(move, board)
        legal.append(legal_indices(board))
        offsets.append(offsets[-1] + len(legal[-1]))
    return Encoded(tokens, labels, np.array(offsets, dtype=np.int64),
                   np.concatenate(legal) if legal else np.zeros(0, dtype=np.int16))


def encode_fens(fens: list[str], moves: list[str]) -> Encoded:
    """Encode FEN strings with UCI target moves."""
    boards = [chess.Board(f) for f in fens]
    return encode_positions(boards, [chess.Move.from_uci(m) for m in moves])


def targets(enc: Encoded, rows: np.ndarray | None = None) -> np.ndarray:
    """(B, 1 + M) int64 targets of positions ``rows`` (default all): column 0 the label's class,
    then that position's legal classes, padded with -1 to the batch's largest legal count M.
    Compact, sliceable along the batch like any target, and enough for every metric."""
    rows = np.arange(len(enc)) if rows is None else np.asarray(rows)
    counts = enc.offsets[rows + 1] - enc.offsets[rows]
    out = np.full((len(rows), 1 + int(counts.max(initial=0))), -1, dtype=np.int64)
    out[:, 0] = enc.labels[rows]
    for j, i in enumerate(rows):
        out[j, 1 : 1 + counts[j]] = enc.legal_of(int(i))
    return out


def _file_flip() -> np.ndarray:
    """(4672,) class of every move after mirroring the board left-right (file a <-> h)."""
    out = np.zeros(NUM_MOVES, dtype=np.int64)
    for sq in range(64):
        flipped = sq ^ 7
        for plane, (dr, df, piece) in enumerate(PLANE_DELTAS):
            out[sq * PLANES + plane] = flipped * PLANES + _PLANE_OF[(dr, -df, piece)]
    return out


FILE_FLIP = _file_flip()


def flip_files(tokens: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror positions left-right: (..., 64) tokens and targets of :func:`targets` (-1 stays).
    The rules are symmetric under this mirror except castling, so only use it on positions
    without castling rights (tokens 13 and 14 absent); it then maps legal moves to legal moves."""
    flipped = tokens.reshape(*tokens.shape[:-1], 8, 8)[..., ::-1].reshape(tokens.shape)
    return flipped, np.where(y >= 0, FILE_FLIP[np.maximum(y, 0)], -1)


def check_legal(board: chess.Board, what: str) -> None:
    """ValueError naming every fault (e.g. "too many kings, opposite check") of an illegal
    position; `what` says how the message names the position (the FEN text as the file has it)."""
    status = board.status()
    if status != chess.STATUS_VALID:
        faults = ", ".join(f.name.lower().replace("_", " ") for f in chess.Status if f and f in status)
        raise ValueError(f"{what}: {faults}")
