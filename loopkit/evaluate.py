"""Accuracy versus test-time T on every rung of a task's difficulty ladder.

One pass per batch: the loop runs once to the largest T and every intermediate state is read
out on the way (`LoopedTransformer.trajectory`), so the whole curve costs what its last point costs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .multiples import at_multiples, percent
from .progress import job
from .runfolder import output_folder
from .runs import load_run
from .tracing import trace_set


def summarize(curves: dict[str, dict[str, list[float]]], train_iters: int) -> dict[str, dict[str, float]]:
    """Exact match at the training T and at the largest T, plus the best T (an oracle choice,
    labelled as such). `exact_at_train_T` is None when the curve stops short of the training T
    (`--max-iters` below it): never the value at another T."""
    table = {}
    for name, c in curves.items():
        exact = c["exact"]
        best = max(range(len(exact)), key=lambda i: exact[i])
        at = at_multiples(exact, train_iters)
        table[name] = {
            "exact_at_train_T": at[1],
            **{f"exact_at_{k}x_T": v for k, v in at.items() if k > 1 and v is not None},
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
    atomic.save_figure(fig, path, dpi=120)
    plt.close(fig)


def evaluate_run(run_dir: str | Path, max_iters: int | None = None, device: str = "cpu",
                 batch_size: int | None = None, overrides: list[str] | tuple[str, ...] = (),
                 out_name: str = "eval", ckpt_name: str | None = None,
                 progress: bool | None = None) -> dict[str, Any]:
    """Accuracy vs T on every eval set; writes RUN_DIR/<out_name>/results.json and plots.
    `progress`: a bar per set on stderr (None: when stderr is a terminal; `loopkit.progress`)."""
    run_dir = Path(run_dir)
    cfg, task, model, step = load_run(run_dir, device, overrides, ckpt_name)
    max_iters = max_iters or cfg.eval_max_iters()
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
        "train_iters": cfg.train.max_iters,
        "max_iters": max_iters,
        "summary": summarize(curves, cfg.train.max_iters),
        "curves": curves,
        "median_residual": {name: tr.residual.median(0).values.tolist() for name, tr in traces.items()},
        "early_exit": compute,
    }
    out = output_folder(run_dir, out_name)
    atomic.write_text(out / "results.json", json.dumps(result, indent=1))
    plot(curves, cfg.train.max_iters, out / "accuracy_vs_T.png", title=run_dir.name)
    plot_compute(traces, compute, out / "accuracy_vs_compute.png")
    for s in task.eval_sets():  # pictures of answers, for tasks that draw them (mazes), at each set's best T
        task.save_examples(model, s, result["summary"][s.name]["best_T"], out)
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
        cells = (percent(s[k], 9) for k, _ in cols)
        lines.append(f"{name:>{width}} " + " ".join(cells) + f" {s['best_T']:7d}")
    return "\n".join(lines)
