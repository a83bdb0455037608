"""Prefix sums: a string of bits -> its running parity. Difficulty = length (docs/design.md, "Prefix sums")."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import EvalSet, Task


def prefix_parity(bits: Tensor) -> Tensor:
    return bits.cumsum(-1) % 2


HELD_OUT = 16  # one bit string in 16, by a fixed hash, is kept for testing at the lengths training sees


def held_out(bits: Tensor) -> Tensor:
    """(n, L) bits -> (n,) bool: whether each string belongs to the test split.

    A fixed hash (random positional weights seeded by L, summed mod HELD_OUT) splits every length
    into a training and a test part, so train and test are disjoint by construction, for any
    eval seed or sample count chosen later, not merely unlikely to collide."""
    length = bits.shape[-1]
    weights = torch.randint(0, 1 << 20, (length,), generator=torch.Generator().manual_seed(length))
    return (bits.long() * weights).sum(-1) % HELD_OUT == 0


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

    @classmethod
    def check_options(cls, o) -> None:
        if o.train_length_min > o.train_length:
            raise ConfigError(f"task.train_length_min={o.train_length_min} is out of range: allowed at most "
                              f"task.train_length={o.train_length}")

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        o = self.options
        length = o.train_length
        if o.train_length_min:
            length = int(torch.randint(o.train_length_min, o.train_length + 1, (), generator=generator))
        return self.sample(batch_size, length, generator, split="train")

    def parse_input(self, text: str) -> Tensor:
        bits = text.strip()
        if not bits or set(bits) - {"0", "1"}:
            raise ConfigError(f"a prefix-sums input is a string of 0s and 1s, got {text!r}")
        return torch.tensor([int(c) for c in bits])

    def format_output(self, x: Tensor, answer: Tensor) -> str:
        return f"bits   {''.join(map(str, x.tolist()))}\nparity {''.join(map(str, answer.tolist()))}"

    def trained_lengths(self) -> range:
        o = self.options
        return range(o.train_length_min or o.train_length, o.train_length + 1)

    @staticmethod
    def sample(n: int, length: int, generator: torch.Generator, split: str | None = None) -> tuple[Tensor, Tensor]:
        """n random strings; with `split` ("train" / "test") only strings of that side of
        `held_out`, by redrawing the others from the same generator (so still deterministic)."""
        bits = torch.randint(0, 2, (n, length), generator=generator)
        if split is not None:
            while (wrong := held_out(bits) != (split == "test")).any():
                bits[wrong] = torch.randint(0, 2, (int(wrong.sum()), length), generator=generator)
        return bits, prefix_parity(bits)

    def make_eval_sets(self) -> list[EvalSet]:
        sets = []
        for length in self.options.eval_lengths:
            g = torch.Generator().manual_seed(self.options.eval_seed + length)
            split = "test" if int(length) in self.trained_lengths() else None  # longer: unseen by construction
            x, y = self.sample(self.options.eval_samples, int(length), g, split=split)
            sets.append(EvalSet(f"len{length}", x, y))
        return sets
