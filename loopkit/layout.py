"""Where a task's positions sit: declared by the task, read by the model, which knows no task.

A task is a 1-D sequence (prefix sums) or the cells of a square grid read row-major (sudoku's 9 x 9
board, chess's 8 x 8 board, a maze of any size). A grid task may also name *axes*: coordinates of
every cell (a sudoku cell's row, column and box; a chess square's rank, file and diagonals) that
`model.position: axes` embeds, one learned table per axis, so that attention can find the cells of a
unit by matching embeddings. A new grid task declares its `Layout` and needs no edit of the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Axis:
    """One coordinate of every cell: `size` values, `of(row, col)` the value (0 .. size-1) at each."""

    name: str
    size: int
    of: Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Layout:
    """`grid`: positions are the cells of a square grid, row-major; `side`: its fixed side (0: any
    square length); `axes`: the coordinates `position: axes` embeds (grid tasks only)."""

    grid: bool = False
    side: int = 0
    axes: tuple[Axis, ...] = ()

    def __post_init__(self):
        if self.axes and not self.grid:
            raise ValueError("axes are coordinates of grid cells: a layout with axes must be a grid")

    def rows_cols(self, length: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(row, col) of every position of a grid input of `length` cells; a length that is not
        this layout's square is a ValueError naming what was expected."""
        side = self.side or math.isqrt(length)
        if side * side != length:
            expected = f"{self.side * self.side} cells (a {self.side}x{self.side} grid)" if self.side \
                else "a square number of cells (an n x n grid)"
            raise ValueError(f"this task's inputs are {expected}, got length {length}")
        cell = torch.arange(length, device=device)
        return cell // side, cell % side

    def coordinates(self, length: int, device: torch.device | str = "cpu") -> Tensor:
        """(axes, length) value of every axis at every cell."""
        row, col = self.rows_cols(length, device)
        return torch.stack([axis.of(row, col) for axis in self.axes])

    @property
    def axis_sizes(self) -> tuple[int, ...]:
        return tuple(axis.size for axis in self.axes)


SEQUENCE = Layout()
