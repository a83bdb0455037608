"""What the speed and memory benchmarks share: a shipped task config with random inputs of the
task's shape, so that timing needs no dataset generation (sudoku, chess) and measures the model only."""

from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F

from loopkit import config
from loopkit.model import LoopedTransformer
from loopkit.tasks import TASKS

# (sequence length, vocabulary, output classes) of each task's training inputs
SHAPES = {"prefix_sums": (32, 2, 2), "sudoku": (81, 10, 9)}


class RandomTask:
    """Random tokens and targets of a task's shape; the loss every task uses (cross-entropy in fp32)."""

    def __init__(self, name: str):
        self.length, self.vocab_size, self.num_classes = SHAPES[name]
        self.layout = TASKS[name].layout  # where the real task's positions sit (its axes, if any)

    def batch(self, batch_size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, self.vocab_size, (batch_size, self.length), generator=g)
        return x, torch.randint(0, self.num_classes, (batch_size, self.length), generator=g)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, -2).float(), y.flatten())


def load(name: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[config.Config, RandomTask]:
    path = resources.files("loopkit") / "configs" / f"{name}.yaml"
    return config.load(str(path), list(overrides)), RandomTask(name)


def build(cfg: config.Config, task: RandomTask) -> LoopedTransformer:
    return LoopedTransformer(cfg.model, task.vocab_size, task.num_classes, layout=task.layout)
