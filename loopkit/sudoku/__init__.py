"""Sudoku data: exact solver, graded generator, text-file loaders and augmentation.

Grids are (81,) or (n, 81) integer arrays in row-major order, 0 for a blank.
"""

from .augment import augment
from .generator import GENERATOR_VERSION, LEVELS, Grade, generate, make_puzzle, random_full_grid
from .io import Puzzles, SudokuFormatError, load_puzzles, save_puzzles
from .solver import SolveResult, is_valid_solution, solve, valid_solutions

__all__ = [
    "GENERATOR_VERSION",
    "LEVELS",
    "Grade",
    "Puzzles",
    "SolveResult",
    "SudokuFormatError",
    "augment",
    "generate",
    "is_valid_solution",
    "load_puzzles",
    "make_puzzle",
    "random_full_grid",
    "save_puzzles",
    "solve",
    "valid_solutions",
]
