"""Adaptive test-time compute: iterate each sample until its own residual r_t falls below `tol`.

Two views of the same rule. `run_until_converged` is the deployable one: finished samples leave
the batch, so they cost nothing more. `from_trace` replays the rule on a pass that already ran
to the largest T (`evaluate.trace_set`), which gives the accuracy-versus-compute curve for many
tolerances at the price of one pass; a test checks that both agree.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .evaluate import SetTrace, relative_residual
from .model import LoopedTransformer

TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


@torch.no_grad()
def run_until_converged(model: LoopedTransformer, x: Tensor, tol: float, max_iters: int) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, iterations used, converged) per sample. A sample stops at the first t with
    r_t = ||h_t - h_{t-1}|| / ||h_{t-1}|| < tol, or at max_iters."""
    model.eval()
    e, pattern = model.encode(x), model.attention_pattern(x.shape[1])
    h = model.initial_state(e)
    final = torch.empty_like(h)
    used = torch.full((x.shape[0],), max_iters, dtype=torch.long, device=x.device)
    converged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    for t in range(1, max_iters + 1):
        h_next = model.step(h, e, pattern, t - 1)
        below = relative_residual(h_next, h) < tol
        done = below | (t == max_iters)
        if done.any():
            idx = active[done]
            final[idx], used[idx], converged[idx] = h_next[done], t, below[done]
            h, e, active = h_next[~done], e[~done], active[~done]
            if not active.numel():
                break
        else:
            h = h_next
    return model.readout(final), used, converged


def evaluate_until_converged(run_dir: str | Path, tol: float | None = None, max_iters: int | None = None,
                             device: str = "cpu", batch_size: int | None = None,
                             overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """`loopkit eval --until-converged`: every eval set with per-sample early exit; writes
    eval/until_converged.json. Wall time is measured, since here finished samples really stop."""
    from .evaluate import load_run

    run_dir = Path(run_dir)
    cfg, task, model, step = load_run(run_dir, device, overrides)
    tol = tol or cfg.eval.tol
    max_iters = max_iters or cfg.eval_iters()
    batch_size = batch_size or cfg.eval.batch_size
    sets = {}
    for s in task.eval_sets():
        started = time.perf_counter()
        scores: dict[str, list[Tensor]] = {}
        for lo in range(0, len(s.x), batch_size):
            x, y = s.x[lo : lo + batch_size].to(device), s.y[lo : lo + batch_size].to(device)
            logits, used, converged = run_until_converged(model, x, tol, max_iters)
            for m, v in {**task.correct(logits, y, x), "iters": used.double(), "converged": converged.double()}.items():
                scores.setdefault(m, []).append(v.cpu())
        cat = {m: torch.cat(v) for m, v in scores.items()}
        sets[s.name] = {"exact": cat["exact"].mean().item(), "token": cat["token"].mean().item(),
                        "mean_iters": cat["iters"].mean().item(), "max_iters_used": int(cat["iters"].max()),
                        "converged": cat["converged"].mean().item(), "seconds": time.perf_counter() - started}
    result = {"run_dir": str(run_dir), "step": step, "tol": tol, "max_iters": max_iters, "sets": sets}
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "until_converged.json").write_text(json.dumps(result, indent=1))
    return result


def format_until_converged(result: dict[str, Any]) -> str:
    lines = [f"early exit at r_t < {result['tol']:g}, at most {result['max_iters']} iterations",
             f"{'set':>8} {'exact':>7} {'token':>7} {'mean T':>7} {'max T':>6} {'conv':>6} {'sec':>6}"]
    for name, r in result["sets"].items():
        lines.append(f"{name:>8} {100 * r['exact']:6.1f}% {100 * r['token']:6.1f}% {r['mean_iters']:7.1f} "
                     f"{r['max_iters_used']:6d} {100 * r['converged']:5.0f}% {r['seconds']:6.1f}")
    return "\n".join(lines)


def from_trace(trace: SetTrace, tol: float) -> dict[str, Tensor]:
    """Per-sample iterations used and scores at the stop, replaying the rule on a full pass."""
    below = trace.residual < tol
    T = below.shape[1]
    stop = torch.where(below.any(1), below.float().argmax(1), torch.full((below.shape[0],), T - 1))
    out = {m: s.gather(1, stop[:, None]).squeeze(1) for m, s in trace.scores.items()}
    out["iters"] = stop + 1
    out["converged"] = below.any(1)
    return out


def compute_curve(traces: dict[str, SetTrace], tolerances: tuple[float, ...] = TOLERANCES) -> dict[str, Any]:
    """For each tolerance and each set (and all sets pooled): exact match and mean iterations with
    early exit, and the smallest fixed T that reaches the same pooled exact match (compute saved)."""
    pooled_fixed = torch.cat([t.scores["exact"] for t in traces.values()]).double().mean(0)
    rows = []
    for tol in tolerances:
        per_set = {name: from_trace(tr, tol) for name, tr in traces.items()}
        exact = torch.cat([r["exact"] for r in per_set.values()]).double()
        iters = torch.cat([r["iters"] for r in per_set.values()]).double()
        reached = (pooled_fixed >= exact.mean() - 1e-12).nonzero()
        fixed_T = int(reached[0]) + 1 if len(reached) else None
        rows.append({
            "tol": tol,
            "sets": {name: {"exact": r["exact"].mean().item(), "token": r["token"].mean().item(),
                            "mean_iters": r["iters"].double().mean().item(), "max_iters": int(r["iters"].max()),
                            "converged": r["converged"].double().mean().item()} for name, r in per_set.items()},
            "pooled": {"exact": exact.mean().item(), "mean_iters": iters.mean().item(),
                       "fixed_T_for_same_exact": fixed_T,
                       "compute_saved": None if fixed_T is None else 1 - iters.mean().item() / fixed_T},
        })
    return {"tolerances": rows, "pooled_fixed_T_exact": pooled_fixed.tolist()}


def plot_compute(traces: dict[str, SetTrace], curve: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, tr) in enumerate(traces.items()):
        color = f"C{i}"
        fixed = tr.curve("exact")
        ax.plot(range(1, len(fixed) + 1), [100 * v for v in fixed], color=color, lw=1, alpha=0.6)
        pts = [(r["sets"][name]["mean_iters"], 100 * r["sets"][name]["exact"]) for r in curve["tolerances"]]
        ax.plot(*zip(*pts), "o", color=color, ms=4, label=f"{name} early exit")
    pooled = curve["pooled_fixed_T_exact"]
    ax.plot(range(1, len(pooled) + 1), [100 * v for v in pooled], color="k", lw=1.5, label="all sets, fixed T")
    pts = [(r["pooled"]["mean_iters"], 100 * r["pooled"]["exact"]) for r in curve["tolerances"]]
    ax.plot(*zip(*pts), "s", color="k", ms=5, label="all sets, early exit")
    ax.set(xlabel="iterations per sample (mean)", ylabel="exact match (%)", ylim=(-2, 102),
           title="accuracy vs compute: fixed T (lines) and early exit at tol " + f"{TOLERANCES[0]:g}..{TOLERANCES[-1]:g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
