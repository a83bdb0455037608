"""Prefix sums: a string of bits -> its running parity. Difficulty = length (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import EvalSet, Task


def prefix_parity(bits: Tensor) -> Tensor:
    return bits.cumsum(-1) % 2


@dataclass
class PrefixSumsOptions:
    train_length: int = 32
    # > 0: each training batch has its own length ~ U[train_length_min, train_length] (one draw per
    # batch from the step's generator, so resume stays exact). Short batches give the carry rule a
    # clean gradient early, before the long chains can; the model still meets train_length often.
    train_length_min: int = 0
    eval_lengths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    eval_samples: int = 1000
    eval_seed: int = 1234  # fixed so every run is scored on the same strings


class PrefixSums(Task):
    Options = PrefixSumsOptions
    vocab_size = 2
    num_classes = 2

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        o = self.options
        length = o.train_length
        if o.train_length_min:
            length = int(torch.randint(o.train_length_min, o.train_length + 1, (), generator=generator))
        return self.sample(batch_size, length, generator)

    @staticmethod
    def sample(n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        bits = torch.randint(0, 2, (n, length), generator=generator)
        return bits, prefix_parity(bits)

    def make_eval_sets(self) -> list[EvalSet]:
        sets = []
        for length in self.options.eval_lengths:
            g = torch.Generator().manual_seed(self.options.eval_seed + length)
            x, y = self.sample(self.options.eval_samples, int(length), g)
            sets.append(EvalSet(f"len{length}", x, y))
        return sets
