"""Training-step time of loopkit's default config against a naive looped baseline, same process.

The baseline is what one would write by hand: a loop over ``torch.nn.TransformerEncoderLayer``
(same width, heads, MLP width, T; pre-norm, plus a LayerNorm after every iteration like our
``outer`` placement; recall by adding the embedding every iteration), with the same banded causal
attention expressed as a boolean mask, trained with full backprop through all T iterations.

Three timings, interleaved round-robin so that machine drift hits all of them alike:
  loopkit/default   the shipped training step (progressive loss: n iterations under no_grad, k with grad)
  loopkit/full      the same model, full backprop through T iterations (like for like with the baseline)
  naive/full        the hand-written loop

    python benchmarks/step_time.py [--threads 2] [--length 32] [--steps 20] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from torch import nn

from loopkit import config
from loopkit.demo import default_config_path
from loopkit.tasks import build_task
from loopkit.train import LoopObjective, StepPlan, build_model, plan_step, step_generator


class NaiveLoop(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, window: int):
        super().__init__()
        self.embed = nn.Embedding(2, width)
        self.layer = nn.TransformerEncoderLayer(width, heads, int(mlp_ratio * width), dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2)
        self.window = window

    def forward(self, x: torch.Tensor, iters: int) -> torch.Tensor:
        L = x.shape[1]
        i = torch.arange(L)
        offset = i[None, :] - i[:, None]  # key - query
        mask = (offset > 0) | (offset < -self.window) if self.window else offset > 0  # True = blocked
        e = self.embed(x)
        h = torch.zeros_like(e)
        for _ in range(iters):
            h = self.norm(self.layer(h + e, src_mask=mask))
        return self.head(h)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--length", type=int, default=0, help="sequence length (0: the task's train length)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(default_config_path(), args.overrides)
    if args.length:
        cfg.task["train_length"] = args.length
    task = build_task(cfg.task)
    m, tc = cfg.model, cfg.train
    torch.manual_seed(0)
    ours = build_model(cfg, task)
    naive = NaiveLoop(m.width, m.heads, m.mlp_ratio, m.window if m.causal else 0)
    objective = LoopObjective(ours, task, tc)
    full = LoopObjective(ours, task, dataclasses.replace(tc, alpha=0.0))
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=tc.lr)
    opt_naive = torch.optim.AdamW(naive.parameters(), lr=tc.lr)
    loss_fn = nn.CrossEntropyLoss()

    def batch(step):
        g = step_generator(tc.seed, step)
        return plan_step(tc, g), *task.train_batch(tc.batch_size, g)

    def step_ours(obj, step):
        plan, x, y = batch(step)
        loss = obj(x, y, plan)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(ours.parameters(), tc.grad_clip)
        opt_ours.step()

    def step_naive(step):
        _, x, y = batch(step)
        loss = loss_fn(naive(x, tc.iters).flatten(0, 1), y.flatten())
        opt_naive.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(naive.parameters(), tc.grad_clip)
        opt_naive.step()

    variants = {
        "loopkit/default": lambda s: step_ours(objective, s),
        "loopkit/full": lambda s: step_ours(full, s),
        "naive/full": step_naive,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for s in range(2):  # warm-up
        for fn in variants.values():
            fn(s)
    for s in range(args.steps):
        for name, fn in variants.items():
            times[name].append(timed(lambda: fn(100 + s)))
    base = statistics.median(times["naive/full"])
    print(f"width {m.width}, heads {m.heads}, mlp {m.mlp_ratio}, T={tc.iters}, batch {tc.batch_size} x length "
          f"{task.options.train_length}, window {m.window}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.steps} steps")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:16s} {1000 * med:8.1f} ms/step   naive / this = {base / med:5.2f}x")


if __name__ == "__main__":
    main()
