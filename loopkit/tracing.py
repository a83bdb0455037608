"""One pass of the loop over an eval set, recording per sample and iteration what every curve,
halting rule and residual plot needs (scores, the fixed-point residual, whether the answer moved).

Its own module so that evaluation and early exit both read it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .model import LoopedTransformer
from .progress import advance
from .tasks import EvalSet, Task


@dataclass
class SetTrace:
    """Per-sample record of one pass to the largest T: what every curve and early-exit rule needs.

    Everything is O(N * T) per quantity: the halting rules need per iteration only whether the
    decoded output moved and by how much, not the logits themselves (O(N * T * L * C))."""

    scores: dict[str, Tensor]  # metric -> (N, T): score after t = 1 .. T iterations
    residual: Tensor  # (N, T): r_t = ||h_t - h_{t-1}|| / ||h_{t-1}||, t = 1 .. T
    # (N, T) bool: the argmax output after t iterations differs from the one after t - 1 (at any
    # position); t = 1 counts as changed, since there is no earlier output to compare with
    changed: Tensor | None = None
    # (N, T): max over positions and classes of |softmax_t - softmax_{t-1}| of the output; inf at t = 1
    prob_change: Tensor | None = None

    def curve(self, metric: str) -> list[float]:
        return self.scores[metric].double().mean(0).tolist()


@torch.no_grad()
def trace_set(model: LoopedTransformer, task: Task, s: EvalSet, max_iters: int, batch_size: int,
              device: torch.device) -> SetTrace:
    """One pass per batch to `max_iters`, recording per sample and iteration the scores, the
    residual and the output's change.

    Memory is flat in T apart from those (N, T) scalars: each is written in place into a table
    allocated once per set. Keeping a few small tensors per iteration instead (lists stacked at
    the end) made the process grow by about one state per iteration (benchmarks/README.md,
    "Design notes"): the small survivors fragment the heap between the iterations' large
    transient activations, so glibc's malloc could not reuse that space."""
    model.eval()
    n = len(s.x)
    scores: dict[str, Tensor] = {}
    residual = torch.empty(n, max_iters, device=device)
    changed = torch.empty(n, max_iters, dtype=torch.bool, device=device)
    prob_change = torch.empty(n, max_iters, device=device)
    for lo in range(0, n, batch_size):
        x, y = s.x[lo : lo + batch_size].to(device), s.y[lo : lo + batch_size].to(device)
        hi = lo + len(x)
        loop = model.start(x)
        prev, prev_out = loop.h0, None
        for t, h in enumerate(model.trajectory(loop, max_iters)):
            residual[lo:hi, t] = relative_residual(h, prev)
            prev = h
            logits = model.readout(h)
            out = output_state(task.output_logits(logits))
            changed[lo:hi, t], prob_change[lo:hi, t] = output_change(out, prev_out)
            prev_out = out
            for metric, score in task.scores(logits, y, x).items():
                if metric not in scores:
                    scores[metric] = torch.empty(n, max_iters, dtype=score.dtype, device=device)
                scores[metric][lo:hi, t] = score
            advance()  # the open progress bar, if any (evaluate_run: one per set)
        del prev, prev_out, logits, out
    return SetTrace({m: v.cpu() for m, v in scores.items()}, residual.cpu(), changed.cpu(), prob_change.cpu())


def relative_residual(h: Tensor, prev: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample ||h - prev|| / ||prev||: the fixed-point residual r_t (docs/design.md, "Test-time compute")."""
    return (h - prev).flatten(1).norm(dim=1) / prev.flatten(1).norm(dim=1).clamp_min(eps)


def output_state(out: Tensor, probs: bool = True) -> tuple[Tensor, Tensor | None]:
    """What the halting rules compare between iterations, from output logits (B, positions,
    classes): the argmax answer and, when asked for, the softmax probabilities (fp32). Kept from
    one iteration to the next, so each is computed once per iteration."""
    return out.argmax(-1), out.float().softmax(-1) if probs else None


def output_change(now: tuple[Tensor, Tensor | None],
                  prev: tuple[Tensor, Tensor | None] | None) -> tuple[Tensor, Tensor | None]:
    """Per sample, between two `output_state`s of successive iterations: did the argmax answer
    change at any position, and the largest change of any softmax probability (None without them).

    Probabilities rather than logits: a confident output whose logits still swing (a state on a
    2-cycle) has probabilities pinned near 0 and 1, which is what a stopping rule should see.
    `prev` None (the first iteration) counts as changed by an infinite amount."""
    answer, probs = now
    n = answer.shape[0]
    if prev is None:
        moved = torch.ones(n, dtype=torch.bool, device=answer.device)
        return moved, None if probs is None else torch.full((n,), float("inf"), device=answer.device)
    moved = (answer != prev[0]).reshape(n, -1).any(1)
    return moved, None if probs is None else (probs - prev[1]).abs().reshape(n, -1).amax(1)
