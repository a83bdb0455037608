"""Sudoku: 81 cells (0 = blank) -> the solved grid, one of 9 digits per cell.

Difficulty is the generator's graded level (clues and solver effort, `loopkit.sudoku.generator`),
or, for a puzzle file the user gives, its rating split into buckets. A predicted grid counts as
*valid* when it is a correct sudoku that keeps every given: puzzles have unique solutions, so
this is the same as exact match on well-formed puzzles, and it needs no stored solution.

A user's file may hold puzzles with several solutions, whose target is then only one of them; a
valid grid solves such a puzzle too, so ``exact`` counts a valid grid as solved (on a puzzle with
one solution, valid already implies exact, so this changes nothing there), and loading a file
warns, once, how many of its puzzles have several solutions where the file gives none.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..cache import cache_dir
from ..errors import ConfigError
from ..layout import Axis, Layout
from ..sudoku import generator, io
from ..sudoku.augment import augment
from .base import EvalSet, Task, need_eval_set
from .buckets import bucket_indices


def _units() -> Tensor:
    """(27, 9) cell indices of every row, column and box."""
    rows = [[r * 9 + c for c in range(9)] for r in range(9)]
    cols = [[r * 9 + c for r in range(9)] for c in range(9)]
    boxes = [[(br + r) * 9 + bc + c for r in range(3) for c in range(3)] for br in (0, 3, 6) for bc in (0, 3, 6)]
    return torch.tensor(rows + cols + boxes)


UNITS = _units()

# a cell's row, column and box: the units the rules are written in (model.position: axes)
LAYOUT = Layout(grid=True, side=9, axes=(
    Axis("row", 9, lambda row, col: row),
    Axis("column", 9, lambda row, col: col),
    Axis("box", 9, lambda row, col: row // 3 * 3 + col // 3),
))


def valid_grids(digits: Tensor, puzzles: Tensor) -> Tensor:
    """Per grid: every row, column and box holds 1..9 once, and every given is kept.
    `digits` (..., 81) in 1..9, `puzzles` (B, 81) broadcastable against it."""
    onehot = torch.nn.functional.one_hot(digits - 1, 9)  # (..., 81, 9)
    per_unit = onehot[..., UNITS.to(digits.device), :].sum(-2)  # (..., 27, 9)
    rules = (per_unit == 1).flatten(-2).all(-1)
    givens = ((puzzles == 0) | (digits == puzzles)).all(-1)
    return rules & givens


@dataclass
class SudokuOptions:
    train_level: str = "easy"
    train_size: int = 20000  # generated training puzzles (cached on disk)
    eval_levels: list[str] = field(default_factory=lambda: ["easy", "medium", "hard", "expert"])
    eval_samples: int = 200
    eval_files: list[str] = field(default_factory=list)  # puzzle files, one eval set per rating bucket
    rating_buckets: list[float] = field(default_factory=list)  # bucket edges for rated files
    augment: bool = False  # digit relabelling, band/stack/row/column shuffles, transpose
    seed: int = 0  # of the training puzzles
    eval_seed: int = 1234  # of the generated eval sets (disjoint from training by construction)
    workers: int = 0  # generation processes (0: every core)
    cache_dir: str = ""  # "" -> ~/.cache/loopkit/sudoku


class Sudoku(Task):
    Options = SudokuOptions
    layout = LAYOUT
    vocab_size = 10  # 0 = blank, 1..9
    num_classes = 9  # digit - 1

    @classmethod
    def check_options(cls, o) -> None:
        need_eval_set(o)

    def __init__(self, options: SudokuOptions):
        super().__init__(options)
        levels = set(generator.LEVELS)
        for key, names in (("train_level", [options.train_level]), ("eval_levels", options.eval_levels)):
            bad = [n for n in names if n not in levels]
            if bad:
                raise ConfigError(f"task.{key}: unknown level(s) {bad}; choose from {', '.join(generator.LEVELS)}")
        for path in options.eval_files:
            if not Path(path).is_file():
                raise ConfigError(f"task.eval_files: {path} is not a file")
        self._train: tuple[Tensor, Tensor] | None = None

    def _generate(self, level: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
        o = self.options
        puzzles, solutions, _ = generator.generate(level, n, seed, workers=o.workers or os.cpu_count() or 1,
                                                   cache_dir=cache_dir(o.cache_dir, "sudoku"),
                                                   read_only=self.cache_read_only)
        return torch.as_tensor(puzzles, dtype=torch.long), torch.as_tensor(solutions, dtype=torch.long)

    def train_batch(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        if self._train is None:
            self._train = self.without_eval_puzzles(
                *self._generate(self.options.train_level, self.options.train_size, self.options.seed))
        puzzles, solutions = self._train
        idx = torch.randint(0, len(puzzles), (batch_size,), generator=g)
        x, sol = puzzles[idx], solutions[idx]
        if self.options.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=g)))
            x, sol = (torch.as_tensor(a, dtype=torch.long) for a in augment(x.numpy(), sol.numpy(), rng))
        return x, sol - 1

    def without_eval_puzzles(self, puzzles: Tensor, solutions: Tensor) -> tuple[Tensor, Tensor]:
        """The training pool minus every puzzle (same givens) of the generated eval sets, so train
        and test are disjoint by construction, not merely by their different seeds. (Puzzles equal
        up to a symmetry are not matched; augmentation could map a training puzzle onto one.)"""
        held = {tuple(p) for s in self.eval_sets()[:len(self.options.eval_levels)] for p in s.x.tolist()}
        keep = torch.tensor([tuple(p) not in held for p in puzzles.tolist()], dtype=torch.bool)
        if not keep.all():
            print(f"loopkit: {int((~keep).sum())} training puzzle(s) equal an eval puzzle and are left out",
                  file=sys.stderr)
        return puzzles[keep], solutions[keep]

    def make_eval_sets(self) -> list[EvalSet]:
        o = self.options
        # the user's files first: a bad one fails before any generation, which can take minutes
        files = [s for path in o.eval_files for s in file_sets(Path(path), o.rating_buckets)]
        sets = []
        for i, level in enumerate(o.eval_levels):
            x, sol = self._generate(level, o.eval_samples, o.eval_seed + i)
            sets.append(EvalSet(level, x, sol - 1))
        return sets + files

    def parse_input(self, text: str) -> Tensor:
        return torch.tensor(io.parse_grid(text))

    def format_output(self, x: Tensor, answer: Tensor) -> str:
        """The puzzle and the model's grid side by side in text (answer: digit - 1 per cell)."""
        solved = (answer + 1).tolist()
        valid = bool(valid_grids(answer.reshape(1, 81) + 1, x.reshape(1, 81))[0])
        left, right = io.format_grid(x.tolist()).splitlines(), io.format_grid(solved).splitlines()
        return "\n".join(f"{a}    {b}" for a, b in zip(left, right)) + f"\n{'valid' if valid else 'not valid'} solution"

    def scores(self, logits: Tensor, y: Tensor, x: Tensor | None = None) -> dict[str, Tensor]:
        scores = super().scores(logits, y)
        if x is not None:
            scores["valid"] = valid_grids(logits.argmax(-1) + 1, x).float()
            # another solution of a puzzle with several is solved too (module docstring)
            scores["exact"] = torch.maximum(scores["exact"], scores["valid"])
        return scores


def file_sets(path: Path, buckets: list[float]) -> list[EvalSet]:
    """A user's puzzle file as eval sets: one per rating bucket when it is rated and buckets are
    given, else one. Targets come from the file's solutions, or from the loader's search, which
    also counts the puzzles with several solutions (a warning on stderr; see the module docstring)."""
    loaded = io.load_puzzles(path)
    solutions = loaded.solutions if loaded.solutions is not None else loaded.solved
    several = int(loaded.multiple.sum()) if loaded.multiple is not None else 0
    if several:
        print(f"loopkit: warning: {path}: {several} of {len(loaded)} puzzles have more than one solution and "
              "the file gives none; any valid grid counts as solved for them (exact)", file=sys.stderr)
    x = torch.as_tensor(loaded.puzzles, dtype=torch.long)
    y = torch.as_tensor(solutions, dtype=torch.long) - 1
    if loaded.ratings is None or not buckets:
        return [EvalSet(path.stem, x, y)]
    return [EvalSet(f"{path.stem}:{suffix}", x[rows], y[rows])
            for suffix, rows in bucket_indices(loaded.ratings, buckets)]
