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
    eval_lengths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    eval_samples: int = 1000
    eval_seed: int = 1234  # fixed so every run is scored on the same strings


class PrefixSums(Task):
    Options = PrefixSumsOptions
    vocab_size = 2
    num_classes = 2

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.sample(batch_size, self.options.train_length, generator)

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
