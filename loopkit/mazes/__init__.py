"""Maze data: a seeded generator of perfect mazes and mazes with loops, and a text loader.

A maze of size n is an (n, n) uint8 array of tokens WALL, OPEN, START, GOAL, walls included (the
size convention is in :mod:`loopkit.mazes.generator`); its target is 1 on every character of the
unique shortest start -> goal path.
"""

from .generator import (
    GENERATOR_VERSION,
    GOAL,
    OPEN,
    START,
    WALL,
    Solution,
    cache_path,
    generate,
    make_maze,
    maze_at,
    maze_seed,
    shortest_path,
)
from .io import MazeFormatError, Mazes, format_maze, format_mazes, load_mazes, parse_mazes, save_mazes

__all__ = [
    "GENERATOR_VERSION",
    "GOAL",
    "OPEN",
    "START",
    "WALL",
    "MazeFormatError",
    "Mazes",
    "Solution",
    "cache_path",
    "format_maze",
    "format_mazes",
    "generate",
    "load_mazes",
    "make_maze",
    "maze_at",
    "maze_seed",
    "parse_mazes",
    "save_mazes",
    "shortest_path",
]
