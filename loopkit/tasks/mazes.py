"""Mazes: a maze (walls, open cells, start, goal) -> the characters of its start-to-goal path.

Difficulty is size, as in the deep-thinking networks' maze experiments: train on small mazes
(size 9: 4 x 4 cells, walls included; size convention in `loopkit.mazes.generator`), test on a
ladder of larger ones out to 59 x 59 and beyond, with more iterations. The input is the n x n
character grid (row-major, `layout` a grid of any square size, so the model's 2-D relative
positions and 2-D window apply), the target is 1 on every character of the unique shortest path.

Scores per maze: ``exact`` (every character right: the path and nothing else) and ``token`` (the
share of characters right). Train and test are disjoint: the training pool leaves out every maze
of an eval set of the training size (mazes of other sizes cannot coincide with training mazes).
A user's mazes (text, `#` wall, `.` open, `S`, `G`; `task.eval_files`) become one eval set per size.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import atomic
from ..cache import cache_dir
from ..errors import ConfigError
from ..layout import Layout
from ..mazes import format_maze, generate, load_mazes, parse_mazes
from .base import EvalSet, Task


@dataclass
class MazeOptions:
    train_sizes: list[int] = field(default_factory=lambda: [9])  # one size per batch, drawn uniformly
    train_size: int = 20000  # generated training mazes per training size (cached on disk)
    eval_sizes: list[int] = field(default_factory=lambda: [9, 13, 19, 29, 39, 59])
    eval_samples: int = 100
    eval_files: list[str] = field(default_factory=list)  # mazes as text, one eval set per size
    loops: float = 0.0  # share of interior walls knocked down (0: perfect mazes; > 0: the shortest path)
    seed: int = 0  # of the training mazes
    eval_seed: int = 1234  # of the eval mazes (another stream than training's)
    workers: int = 0  # processes for generation (0: every core)
    cache_dir: str = ""  # "" -> ~/.cache/loopkit/mazes


class Mazes(Task):
    Options = MazeOptions
    layout = Layout(grid=True)  # any square size: the point of the task
    vocab_size = 4  # wall, open, start, goal
    num_classes = 2  # off / on the path

    def __init__(self, options: MazeOptions):
        super().__init__(options)
        for path in options.eval_files:
            if not Path(path).is_file():
                raise ConfigError(f"task.eval_files: {path} is not a file")
        self._train: dict[int, tuple[Tensor, Tensor]] = {}

    def _generate(self, size: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
        o = self.options
        x, y = generate(size, n, seed, loops=o.loops, workers=o.workers or os.cpu_count() or 1,
                        cache_dir=cache_dir(o.cache_dir, "mazes"), read_only=self.cache_read_only)
        return torch.as_tensor(x, dtype=torch.long).flatten(1), torch.as_tensor(y, dtype=torch.long).flatten(1)

    def train_pool(self, size: int) -> tuple[Tensor, Tensor]:
        """The training mazes of one size, minus every maze of a generated eval set (same input)."""
        if size not in self._train:
            x, y = self._generate(size, self.options.train_size, self.options.seed)
            held = {tuple(m) for s in self.eval_sets()[:len(self.options.eval_sizes)] if s.x.shape[1] == size * size
                    for m in s.x.tolist()}
            keep = torch.tensor([tuple(m) not in held for m in x.tolist()], dtype=torch.bool)
            if not keep.all():
                print(f"loopkit: {int((~keep).sum())} training maze(s) of size {size} equal an eval maze and are "
                      "left out", file=sys.stderr)
            self._train[size] = x[keep], y[keep]
        return self._train[size]

    def train_batch(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        sizes = self.options.train_sizes
        size = sizes[int(torch.randint(0, len(sizes), (), generator=g))]
        x, y = self.train_pool(size)
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        return x[idx], y[idx]

    def make_eval_sets(self) -> list[EvalSet]:
        o = self.options
        files = []  # the user's files first: a bad one fails before any generation
        for path in o.eval_files:
            for size, (x, y) in load_mazes(path).by_size().items():
                x, y = (torch.as_tensor(a, dtype=torch.long).flatten(1) for a in (x, y))
                files.append(EvalSet(f"{Path(path).stem}:{size}x{size}", x, y))
        sets = [EvalSet(f"{size}x{size}", *self._generate(size, o.eval_samples, o.eval_seed))
                for size in o.eval_sizes]
        return sets + files

    def parse_input(self, text: str) -> Tensor:
        mazes = parse_mazes(text)
        if len(mazes) != 1:
            raise ConfigError(f"expected one maze, got {len(mazes)}")
        return torch.as_tensor(mazes.x[0], dtype=torch.long).flatten()

    def format_output(self, x: Tensor, answer: Tensor) -> str:
        """The maze with the predicted path marked `o` (and a count of walls marked as path)."""
        side = int(len(x) ** 0.5)
        maze, path = (t.reshape(side, side).cpu().numpy().astype(np.uint8) for t in (x, answer))
        on_walls = int(((path == 1) & (maze == 0)).sum())
        return format_maze(maze, path) + (f"\n({on_walls} wall characters marked as path)" if on_walls else "")

    def save_examples(self, model, s: EvalSet, max_iters: int, folder: Path) -> list[Path]:
        """A PNG of the first maze of the set: walls black, the model's path after `max_iters`
        iterations blue, path characters it missed orange, characters it marked wrongly red."""
        x, y = s.x[:1], s.y[:1]
        with torch.no_grad():
            pred = model(x.to(model.embed.weight.device), max_iters).logits.argmax(-1).cpu()
        side = int(x.shape[1] ** 0.5)
        path = folder / f"maze_{s.name.replace(':', '_')}.png"
        maze_figure(x.view(side, side).numpy(), y.view(side, side).numpy(), pred.view(side, side).numpy(), path,
                    title=f"{s.name}, T = {max_iters}: {'solved' if bool((pred == y).all()) else 'not solved'}")
        return [path]


def maze_figure(x: np.ndarray, y: np.ndarray, pred: np.ndarray, path: Path, title: str = "") -> None:
    """One maze with the predicted path and its errors (colours in `Mazes.save_examples`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = np.ones((*x.shape, 3))
    rgb[x == 0] = 0.0  # walls
    rgb[(pred == 1) & (y == 1)] = (0.2, 0.4, 0.9)  # predicted and right
    rgb[(pred == 0) & (y == 1)] = (1.0, 0.6, 0.0)  # missed
    rgb[(pred == 1) & (y == 0)] = (0.9, 0.1, 0.1)  # marked wrongly
    fig, ax = plt.subplots(figsize=(min(8, 2 + 0.08 * len(x)),) * 2)
    ax.imshow(rgb, interpolation="nearest")
    for token, mark in ((2, "S"), (3, "G")):
        r, c = np.argwhere(x == token)[0]
        ax.text(c, r, mark, ha="center", va="center", fontsize=8, color="white" if pred[r, c] else "black")
    ax.set(xticks=[], yticks=[], title=title)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=100)
    plt.close(fig)
