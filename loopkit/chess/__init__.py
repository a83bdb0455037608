"""Chess puzzles: Stockfish-made puzzles with a difficulty grade (`pipeline`), the Lichess puzzle
CSV (`lichess`), and the board/move encoding the model sees (`encoding`)."""

from .encoding import NUM_MOVES, PLANES, VOCAB_SIZE, Encoded, board_tokens, encode_fens, index_move, move_index
from .engine import EngineNotFound, find_engine, open_engine
from .lichess import LichessFormatError, LichessPuzzles, load_puzzles
from .pipeline import PipelineSettings, PuzzleSet, generate

__all__ = [
    "NUM_MOVES", "PLANES", "VOCAB_SIZE", "Encoded", "board_tokens", "encode_fens", "index_move", "move_index",
    "EngineNotFound", "find_engine", "open_engine", "LichessFormatError", "LichessPuzzles", "load_puzzles",
    "PipelineSettings", "PuzzleSet", "generate",
]
