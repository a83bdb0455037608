"""What every task provides to training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..layout import SEQUENCE, Layout


@dataclass
class EvalSet:
    """One rung of the difficulty ladder: inputs, targets and a name for tables and plots."""

    name: str
    x: Tensor
    y: Tensor


class Task:
    """Per-position classification by default: logits (B, L, C) against targets (B, L), where a
    target of -100 marks a position that is not scored. Tasks with other outputs override
    `loss` and `scores`."""

    Options: ClassVar[type]
    vocab_size: int
    num_classes: int
    # where the positions sit (loopkit.layout): a sequence unless the task says it is a grid
    layout: ClassVar[Layout] = SEQUENCE
    # True when the cache folder came from a run folder's stored config and lies outside the run:
    # data found there is used, data made is not written there (loopkit.runfolder)
    cache_read_only: bool = False

    def __init__(self, options):
        self.options = options

    @classmethod
    def check_options(cls, options) -> None:
        """Checks that involve several options (each option's own range is given where the task
        is registered, `register_task`); a fault is a ConfigError naming the keys. None by default."""

    def save_examples(self, model, s: EvalSet, max_iters: int, folder: Path) -> list[Path]:
        """Pictures of a few of the set's inputs with the model's answers after `max_iters` iterations,
        written into `folder` by evaluation (mazes draw the predicted path); none by default."""
        return []

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def eval_sets(self) -> list[EvalSet]:
        """The difficulty ladder, made once (from a fixed seed) and reused."""
        if not hasattr(self, "_eval_sets"):
            sets = self.make_eval_sets()
            names = [s.name for s in sets]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:  # results are keyed by name: one set would silently replace the other
                raise ConfigError(f"eval set name(s) {', '.join(twice)} occur twice (two eval files of one name, or "
                                  "one level written twice?); rename a file or drop the repeat")
            self._eval_sets = sets
        return self._eval_sets

    def make_eval_sets(self) -> list[EvalSet]:
        raise NotImplementedError

    def parse_input(self, text: str) -> Tensor:
        """One input written as text (a task's own notation) -> (L,) token ids; bad text is a
        ConfigError saying what is wrong. Used by `loopkit.load(...)` for notebook inputs."""
        raise ConfigError(f"task {type(self).__name__} reads no text inputs; give token ids as a tensor")

    def format_output(self, x: Tensor, answer: Tensor) -> str:
        """One input (L,) and its decoded answer (the argmax per output position) as text."""
        return f"input {x.tolist()}\nanswer {answer.tolist()}"

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, -2).float(), y.flatten(), ignore_index=-100)

    def output_logits(self, logits: Tensor) -> Tensor:
        """The logits of the decoded output as (B, positions, classes), the answer being the argmax
        over classes at every position: what halting on prediction stability watches
        (`early_exit`). Per-position classification is that already; a task whose answer is one
        choice among all positions' classes (chess: one move) flattens them."""
        return logits

    def scores(self, logits: Tensor, y: Tensor, x: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sample scores in [0, 1]: `exact` (whole output right) and `token` (share of scored
        positions right). Works on logits with any leading dims before (B, L, C). `x`, the inputs,
        lets a task add scores that need them (sudoku: a valid grid keeps the givens)."""
        scored = y != -100
        hit = (logits.argmax(-1) == y) & scored
        exact = (hit | ~scored).all(-1).float()
        token = hit.sum(-1).float() / scored.sum(-1).clamp(min=1).float()
        return {"exact": exact, "token": token}


def need_eval_set(o) -> None:
    """Tasks with generated levels and optional files: at least one of the two must give a set."""
    if not (o.eval_levels or o.eval_files):
        raise ConfigError("task.eval_levels=[] and task.eval_files=[]: the task would have no eval set; "
                          "give a level or a file")
