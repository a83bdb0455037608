"""Training-step time and throughput of loopkit against a naive fp32 looped baseline, same process,
interleaved, on a CPU or a GPU.

The baseline is what one would write by hand: a loop over ``torch.nn.TransformerEncoderLayer``
(same width, heads, MLP width, T, batch; pre-norm, plus a LayerNorm after every iteration like
loopkit's ``outer`` placement; recall by adding the embedding every iteration; the task's attention
mask), trained in fp32 with full backprop through all T iterations. Not identical in detail: it
has ReLU where loopkit has GELU, biases on the attention projections, and no position bias.

"naive/this" on a bf16 row mixes two gains, the number format and the implementation; the fp32
row is the implementation alone. Tokens/s compare variants of one row group only (T differs
between tasks).

For each task config (prefix sums: length 32, local causal attention; sudoku: length 81, global
attention; random inputs of the task's shape) and each width, the variants are timed round-robin,
one step each in turn, so that machine drift hits all of them alike. The table gives the median
step time, naive / variant, tokens per second (batch x length / step time), and the model's
FLOP/s against this machine's measured matmul peak in the variant's precision (model FLOP
utilisation: the block's matmuls and attention only, forward x 3 for a full-backprop step).

Variants (`--variants`, default per device):
  naive                the hand-written fp32 loop
  fp32, bf16           loopkit, full backprop, eager, in that precision
  bf16-sdpa            bf16 with SDPA's fused attention forced (the CPU path before explicit-matmul attention)
  auto                 precision=auto (what a user gets by default)
  <p>+compile          torch.compile of the block (train.compile=default)
  <p>+cudagraphs       torch.compile mode reduce-overhead (CUDA graphs; GPU only)
  auto-recipe          the task's shipped recipe (progressive loss) in precision=auto: not like for like

    python benchmarks/step_time.py [--device cpu] [--threads 1] [--tasks prefix_sums,sudoku] [--widths 128,256]
                                   [--steps 10] [--batch 0] [--variants naive,fp32,auto,auto+compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from contextlib import nullcontext
from unittest import mock

import synthetic
import torch
import torch.nn.functional as F
from torch import nn

from loopkit import model as model_module
from loopkit import precision
from loopkit.config import ModelConfig
from loopkit.train import LoopObjective, plan_step, step_generator

DEFAULT_VARIANTS = {
    "cpu": "naive,fp32,bf16-sdpa,auto,auto+compile,auto-recipe",
    "cuda": "naive,fp32,bf16,bf16+compile,bf16+cudagraphs,auto-recipe",
}


class NaiveLoop(nn.Module):
    def __init__(self, vocab: int, classes: int, width: int, heads: int, mlp_ratio: float, window: int, causal: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layer = nn.TransformerEncoderLayer(width, heads, int(mlp_ratio * width), dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)
        self.window, self.causal = window, causal

    def forward(self, x: torch.Tensor, iters: int) -> torch.Tensor:
        L = x.shape[1]
        i = torch.arange(L, device=x.device)
        offset = i[None, :] - i[:, None]  # key - query
        blocked = torch.zeros(L, L, dtype=torch.bool, device=x.device)
        if self.window:
            blocked |= offset.abs() > self.window
        if self.causal:
            blocked |= offset > 0
        mask = blocked if blocked.any() else None
        e = self.embed(x)
        h = torch.zeros_like(e)
        for _ in range(iters):
            h = self.norm(self.layer(h + e, src_mask=mask))
        return self.head(h)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """GFLOP/s of a square matmul on this device and thread count: the roof to compare against."""
    n, reps = (1024, 20) if device.type == "cpu" else (8192, 50)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 * reps / min(times) / 1e9


def step_flops(m: ModelConfig, batch: int, length: int, iters: int) -> float:
    """Model FLOPs of one full-backprop step (forward x 3): the block's matmuls and attention."""
    d, hidden = m.width, int(m.mlp_ratio * m.width)
    linear = 3 * d * d + d * d + 2 * d * hidden
    span = length if not m.window else min(length, (1 if m.causal else 2) * m.window + 1)
    keys = (span + 1) / 2 if m.causal and not m.window else span  # keys each query may see, on average
    recall = 2 * d * d if m.recall_op == "concat" and m.recall != "none" else 0  # once per block
    per_token = 2 * (m.layers * (linear + 2 * keys * d) + recall)
    return 3 * per_token * batch * length * iters


def sdpa_attention(q, k, v, bias):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def make_variant(name: str, cfg, task: synthetic.RandomTask, device: torch.device):
    """(precision, step function, like-for-like?) for a variant name."""
    tc = cfg.train
    base, _, mode = name.partition("+")
    if base == "naive":
        m = cfg.model
        net = NaiveLoop(task.vocab_size, task.num_classes, m.width, m.heads, m.mlp_ratio, m.window, m.causal).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

        def loss_of(x, y, plan):
            return F.cross_entropy(net(x, tc.max_iters).flatten(0, 1), y.flatten())
        prec, kernel, alpha = "fp32", None, 0.0
    else:
        prec = precision.resolve("auto", device)[0] if base in ("auto", "auto-recipe") else base.removesuffix("-sdpa")
        kernel = sdpa_attention if base.endswith("-sdpa") else None
        alpha = tc.alpha if base == "auto-recipe" else 0.0
        net = synthetic.build(cfg, task).to(device)
        if mode:
            net.blocks[0].compile(mode={"compile": "default", "cudagraphs": "reduce-overhead"}[mode])
        objective = LoopObjective(net, task, dataclasses.replace(tc, alpha=alpha))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        loss_of = objective

    def step(s: int) -> None:
        g = step_generator(0, s)
        plan = plan_step(tc, g)
        x, y = (t.to(device) for t in task.batch(tc.batch_size, g))
        with mock.patch.object(model_module, "attention", kernel) if kernel else nullcontext():
            with precision.autocast(device, prec):
                loss = loss_of(x, y, plan)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            opt.step()
    return prec, step, base != "auto-recipe"


def bench(task_name: str, width: int, steps: int, names: list[str], device: torch.device,
          peaks: dict[str, float], batch: int = 0) -> list[str]:
    cfg, task = synthetic.load(task_name, [f"model.width={width}"] + ([f"train.batch_size={batch}"] if batch else []))
    torch.manual_seed(0)
    variants = {}
    for name in names:
        if name.endswith("+cudagraphs") and device.type != "cuda":
            continue
        variants[name] = make_variant(name, cfg, task, device)
    for _, fn, _ in variants.values():  # warm-up (and compilation)
        for s in range(3):
            fn(s)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for s in range(steps):
        for name, (_, fn, _) in variants.items():
            sync(device)
            start = time.perf_counter()
            fn(100 + s)
            sync(device)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["naive"]) if "naive" in times else None
    flops = step_flops(cfg.model, cfg.train.batch_size, task.length, cfg.train.max_iters)
    tokens = cfg.train.batch_size * task.length
    rows = []
    for name, (prec, _, full) in variants.items():
        med = statistics.median(times[name])
        ratio = f"{base / med:5.2f}x" if base else "-"
        util = f"{flops / med / 1e9:8.1f} | {100 * flops / med / 1e9 / peaks[prec]:4.0f}%" if full else "- | -"
        rows.append(f"| {task_name} | {width} | {task.length} | {name} ({prec}) | {1000 * med:8.1f} | {ratio} | "
                    f"{tokens / med:9.0f} | {util} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--tasks", default="prefix_sums,sudoku")
    ap.add_argument("--widths", default="128,256")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--variants", help="comma-separated (see above); default depends on the device")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0: the config's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = (args.variants or DEFAULT_VARIANTS[device.type]).split(",")
    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, median of {args.steps} interleaved steps; matmul peak: "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print("| task | width | length | variant (precision) | ms/step | naive/this | tokens/s | GFLOP/s | % of peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for task_name in args.tasks.split(","):
        for width in map(int, args.widths.split(",")):
            for row in bench(task_name, width, args.steps, names, device, peaks, args.batch):
                print(row, flush=True)


if __name__ == "__main__":
    main()
