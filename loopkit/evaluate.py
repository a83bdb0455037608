"""Accuracy versus test-time T on every rung of a task's difficulty ladder.

One pass per batch: the loop runs once to the largest T and every intermediate state is read
out on the way (`LoopedTransformer.trajectory`), so the whole curve costs what its last point costs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import checkpoint
from .config import Config
from .model import LoopedTransformer
from .progress import advance, job
from .tasks import EvalSet, Task, build_task


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
    the end) made the process grow by about one state per iteration (1.5 GB at 5 sudoku puzzles
    x T = 5000): the small survivors fragment the heap between the iterations' large transient
    activations, so glibc's malloc could not reuse that space."""
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
            for metric, score in task.correct(logits, y, x).items():
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


def summarize(curves: dict[str, dict[str, list[float]]], train_iters: int) -> dict[str, dict[str, float]]:
    """Exact match at the training T and at the largest T, plus the best T (an oracle choice,
    labelled as such). `exact_at_train_T` is None when the curve stops short of the training T
    (`--iters` below it): never the value at another T."""
    table = {}
    for name, c in curves.items():
        exact = c["exact"]
        best = max(range(len(exact)), key=lambda i: exact[i])
        table[name] = {
            "exact_at_train_T": exact[train_iters - 1] if 1 <= train_iters <= len(exact) else None,
            **{f"exact_at_{k}x_T": exact[k * train_iters - 1] for k in (2, 4) if k * train_iters <= len(exact)},
            "exact_at_max_T": exact[-1],
            "token_at_max_T": c["token"][-1],
            **({"solved_at_max_T": c["solved"][-1]} if "solved" in c else {}),  # chess: a best move, none to avoid
            "best_exact": exact[best],
            "best_T": best + 1,
        }
    return table


def plot(curves: dict[str, dict[str, list[float]]], train_iters: int, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(range(1, len(c["exact"]) + 1), [100 * v for v in c["exact"]], label=name)
    ax.axvline(train_iters, color="gray", linestyle=":", label=f"train T = {train_iters}")
    ax.set(xlabel="test-time iterations T", ylabel="exact match (%)", ylim=(-2, 102), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             overrides: list[str] | tuple[str, ...] = (),
             ckpt_name: str | None = None) -> tuple[Config, Task, LoopedTransformer, int]:
    """The latest checkpoint of a run (or the one `ckpt_name` names), rebuilt from the config stored
    inside it (with `task.*` / `eval.*` overrides for evaluation). The stored config is data: it
    runs no program and writes nowhere outside the run (`loopkit.runfolder`)."""
    from .runfolder import load_stored
    from .train import build_model

    if not Path(run_dir).is_dir():
        raise checkpoint.CheckpointError(f"{run_dir} is not a run folder (no such folder)")
    ckpt = checkpoint.find(Path(run_dir), ckpt_name)
    if ckpt is None:
        raise checkpoint.CheckpointError(f"{run_dir} has no checkpoint (checkpoints/latest is missing)")
    cfg, read_only = load_stored(checkpoint.config_from_checkpoint(ckpt), run_dir, overrides)
    task = build_task(cfg.task)
    task.cache_read_only = read_only
    model = build_model(cfg, task)
    checkpoint.load_weights(ckpt, model)
    return cfg, task, model.to(device), checkpoint.read_state(ckpt)["step"]


def evaluate_run(run_dir: str | Path, max_iters: int | None = None, device: str = "cpu",
                 batch_size: int | None = None, overrides: list[str] | tuple[str, ...] = (),
                 out_name: str = "eval", ckpt_name: str | None = None,
                 progress: bool | None = None) -> dict[str, Any]:
    """Accuracy vs T on every eval set; writes RUN_DIR/<out_name>/results.json and plots.
    `progress`: a bar per set on stderr (None: when stderr is a terminal; `loopkit.progress`)."""
    run_dir = Path(run_dir)
    cfg, task, model, step = load_run(run_dir, device, overrides, ckpt_name)
    max_iters = max_iters or cfg.eval_iters()
    if not cfg.model.tied:
        max_iters = len(model.blocks)
    from .early_exit import compute_curve, plot_compute

    batch_size = batch_size or cfg.eval.batch_size
    traces = {}
    for s in task.eval_sets():  # progress: iterations of every batch of the set
        with job(f"eval {s.name}", "iter", total=-(-len(s.x) // batch_size) * max_iters, progress=progress):
            traces[s.name] = trace_set(model, task, s, max_iters, batch_size, torch.device(device))
    curves = {name: {m: tr.curve(m) for m in tr.scores} for name, tr in traces.items()}
    compute = compute_curve(traces)
    result = {
        "run_dir": str(run_dir),
        "step": step,
        "task": cfg.task,
        "train_iters": cfg.train.iters,
        "max_iters": max_iters,
        "summary": summarize(curves, cfg.train.iters),
        "curves": curves,
        "median_residual": {name: tr.residual.median(0).values.tolist() for name, tr in traces.items()},
        "early_exit": compute,
    }
    out = run_dir / out_name
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    plot(curves, cfg.train.iters, out / "accuracy_vs_T.png", title=run_dir.name)
    plot_compute(traces, compute, out / "accuracy_vs_compute.png")
    return result


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """Exact match per set at the training T, 2x and 4x it (when evaluated), the largest T and the
    best T; n/a where a set's value is missing (None: the training T lies beyond the largest T).
    Tasks that score ``solved`` (chess: an EPD suite's bm and am) add its share at the largest T."""
    cols = [("exact_at_train_T", "@train T"), ("exact_at_2x_T", "@2x T"), ("exact_at_4x_T", "@4x T"),
            ("exact_at_max_T", "@max T"), ("solved_at_max_T", "solved"), ("best_exact", "best")]
    cols = [(k, h) for k, h in cols if all(k in s for s in summary.values())]
    width = max([10, *(len(n) for n in summary)])
    lines = [f"{'set':>{width}} " + " ".join(f"{h:>9}" for _, h in cols) + f" {'best T':>7}"]
    for name, s in summary.items():
        cells = ("      n/a" if s[k] is None else f"{100 * s[k]:8.1f}%" for k, _ in cols)
        lines.append(f"{name:>{width}} " + " ".join(cells) + f" {s['best_T']:7d}")
    return "\n".join(lines)
