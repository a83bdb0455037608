"""Adaptive test-time compute: iterate each sample until a stopping rule says it is done.

Three rules (`rule`):

- `residual`: stop at the first t with r_t = ||h_t - h_{t-1}|| / ||h_{t-1}|| < tol. Exact for a
  model that settles on a fixed point, but a model whose state ends on a 2-cycle (or drifts
  slowly in directions the readout ignores) never gets there and runs to the cap.
- `stable`: stop once the decoded answer (the argmax at every output position) has stayed the
  same for `k` consecutive iterations, i.e. at the first t with answer_t = answer_{t-1} = ... =
  answer_{t-k}. It watches what is being scored, so a 2-cycle that leaves the answer alone does
  not keep a sample running. Optionally (`prob_tol` > 0) it also requires that no output
  probability moved by `prob_tol` or more in the last iteration: a guard against an answer that
  merely pauses while the probabilities are still on their way somewhere else.
- `either`: whichever of the two fires first.

Two views of the same rules. `run_until_converged` is the deployable one: finished samples leave
the batch, so they cost nothing more. `from_trace` replays a rule on a pass that already ran to
the largest T (`tracing.trace_set`), which gives the accuracy-versus-compute curve for every
rule and parameter at the price of one pass; a test checks that both agree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import atomic
from .model import LoopedTransformer
from .progress import advance, job, note
from .runfolder import output_folder
from .runs import load_run
from .tracing import SetTrace, output_change, output_state, relative_residual

RULES = ("residual", "stable", "either")
TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)  # residual tolerances replayed by `compute_curve`
STABLE_K = (1, 2, 3, 5, 8, 13, 21, 34)  # stability windows replayed (Fibonacci: fine where it matters)
PROB_TOLS = (1e-1, 1e-2, 1e-3)  # probability-change guards replayed with each k
# a rule "keeps the accuracy" when its pooled exact match is within this of the best fixed T's
ACCURACY_SLACK = 0.005


def check_rule(rule: str, k: int, prob_tol: float = 0.0) -> None:
    if rule not in RULES:
        raise ValueError(f"halting rule {rule!r} is unknown; choose one of {', '.join(RULES)}")
    if k < 1:
        raise ValueError(f"the stability window k must be >= 1, got {k}")
    if prob_tol < 0:
        raise ValueError(f"prob_tol must be >= 0 (0: off), got {prob_tol}")


@torch.no_grad()
def run_until_converged(model: LoopedTransformer, x: Tensor, tol: float, max_iters: int, rule: str = "residual",
                        k: int = 8, prob_tol: float = 0.0,
                        output: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, iterations used, rule fired) per sample: each sample stops at the first t where
    `rule` fires (see the module docstring), or at max_iters. `output` maps logits to the decoded
    output's logits (B, positions, classes), `Task.output_logits`; by default the logits themselves.
    The readout runs at every iteration only for the rules that watch the answer, and the softmax
    only when prob_tol > 0 (their share of a step: benchmarks/README.md, "Design notes")."""
    check_rule(rule, k, prob_tol)
    model.eval()
    output = output or (lambda z: z)
    watch = rule != "residual"
    s = model.start(x)
    e, h = s.e, s.h0
    final = torch.empty_like(h)
    used = torch.full((x.shape[0],), max_iters, dtype=torch.long, device=x.device)
    converged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    streak = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # iterations the answer has held
    prev_out = out = None
    for t in range(1, max_iters + 1):
        h_next = model.step(h, e, s.pattern, t - 1)  # one step at a time: finished samples leave the batch
        advance()  # the open progress bar, if any (evaluate_until_converged: one per set)
        fired = torch.zeros(h.shape[0], dtype=torch.bool, device=x.device)
        if rule != "stable":
            fired |= relative_residual(h_next, h) < tol
        if watch:
            out = output_state(output(model.readout(h_next)), probs=prob_tol > 0)
            moved, dp = output_change(out, prev_out)
            streak = torch.where(moved, 0, streak + 1)
            fired |= (streak >= k) & ((dp < prob_tol) if prob_tol > 0 else True)
        done = fired | (t == max_iters)
        if done.any():
            idx, keep = active[done], ~done
            final[idx], used[idx], converged[idx] = h_next[done], t, fired[done]
            h, e, active = h_next[keep], e[keep], active[keep]
            note(f"{x.shape[0] - active.numel()}/{x.shape[0]} of the batch stopped")
            if watch:
                streak, prev_out = streak[keep], tuple(None if v is None else v[keep] for v in out)
            if not active.numel():
                advance(max_iters - t)  # the iterations the batch no longer needs
                break
        else:
            h, prev_out = h_next, out
    return model.readout(final), used, converged


def evaluate_until_converged(run_dir: str | Path, tol: float | None = None, max_iters: int | None = None,
                             device: str = "cpu", batch_size: int | None = None,
                             overrides: list[str] | tuple[str, ...] = (), out_name: str = "eval",
                             ckpt_name: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """`loopkit eval --until-converged`: every eval set with per-sample early exit under the rule
    of `eval.halt` (`eval.stable_k`, `eval.prob_tol`); writes <out_name>/until_converged.json.
    Wall time is measured, since here finished samples really stop, and CPU time of this process
    too (on a machine shared with other jobs it varies less than wall time). `tol=0` never fires the
    residual rule, so `rule=residual, tol=0` runs a fixed T = max_iters on the same code path:
    the fair wall-time baseline. `progress`: a bar per set on stderr (None: when stderr is a
    terminal), in iterations (a batch that stops early skips the rest of its share)."""
    run_dir = Path(run_dir)
    cfg, task, model, step = load_run(run_dir, device, overrides, ckpt_name)
    tol = cfg.eval.tol if tol is None else tol
    rule, k, prob_tol = cfg.eval.halt, cfg.eval.stable_k, cfg.eval.prob_tol
    max_iters = max_iters or cfg.eval_max_iters()
    batch_size = batch_size or cfg.eval.batch_size
    sets = {}
    for s in task.eval_sets():
        started, cpu_started = time.perf_counter(), time.process_time()
        scores: dict[str, list[Tensor]] = {}
        with job(f"eval {s.name} (until converged)", "iter", total=-(-len(s.x) // batch_size) * max_iters,
                 progress=progress):
            for lo in range(0, len(s.x), batch_size):
                x, y = s.x[lo : lo + batch_size].to(device), s.y[lo : lo + batch_size].to(device)
                logits, used, converged = run_until_converged(model, x, tol, max_iters, rule, k, prob_tol,
                                                              task.output_logits)
                for m, v in {**task.scores(logits, y, x), "iters": used.double(),
                             "converged": converged.double()}.items():
                    scores.setdefault(m, []).append(v.cpu())
        cat = {m: torch.cat(v) for m, v in scores.items()}
        sets[s.name] = {"exact": cat["exact"].mean().item(), "token": cat["token"].mean().item(),
                        "mean_iters": cat["iters"].mean().item(), "max_iters_used": int(cat["iters"].max()),
                        "converged": cat["converged"].mean().item(), "seconds": time.perf_counter() - started,
                        "cpu_seconds": time.process_time() - cpu_started, "n": len(s.x)}
    n = sum(r["n"] for r in sets.values())
    pooled = {m: sum(r["n"] * r[m] for r in sets.values()) / n for m in ("exact", "token", "mean_iters", "converged")}
    for key in ("seconds", "cpu_seconds"):
        pooled[key] = sum(r[key] for r in sets.values())
    pooled["max_iters_used"] = max(r["max_iters_used"] for r in sets.values())
    result = {"run_dir": str(run_dir), "step": step, "halt": rule, "tol": tol, "stable_k": k, "prob_tol": prob_tol,
              "max_iters": max_iters, "sets": sets, "pooled": pooled}
    atomic.write_text(output_folder(run_dir, out_name) / "until_converged.json", json.dumps(result, indent=1))
    return result


def rule_label(rule: str, tol: float | None = None, k: int | None = None, prob_tol: float = 0.0) -> str:
    """A rule and its parameters in a few characters, for tables and legends."""
    stable = f"k={k}" + (f", dp<{prob_tol:g}" if prob_tol else "")
    residual = f"r<{tol:g}" if tol is not None else ""
    return {"residual": residual, "stable": stable, "either": f"{residual} | {stable}"}[rule]


def format_until_converged(result: dict[str, Any]) -> str:
    label = rule_label(result["halt"], result["tol"], result["stable_k"], result["prob_tol"])
    lines = [f"early exit ({result['halt']}: {label}), at most {result['max_iters']} iterations",
             f"{'set':>8} {'exact':>7} {'token':>7} {'mean T':>7} {'max T':>6} {'fired':>6} {'sec':>6} {'cpu s':>6}"]
    for name, r in [*result["sets"].items(), ("all", result["pooled"])]:
        lines.append(f"{name:>8} {100 * r['exact']:6.1f}% {100 * r['token']:6.1f}% {r['mean_iters']:7.1f} "
                     f"{r['max_iters_used']:6d} {100 * r['converged']:5.0f}% {r['seconds']:6.1f} "
                     f"{r['cpu_seconds']:6.1f}")
    return "\n".join(lines)


def stable_mask(changed: Tensor, prob_change: Tensor, k: int, prob_tol: float = 0.0) -> Tensor:
    """(N, T) bool: where the `stable` rule fires. The streak at t counts the iterations since the
    answer last changed (t itself included when it did not): t minus the index of the last change,
    found with a running maximum, so the whole table costs O(N * T)."""
    t = torch.arange(changed.shape[1])
    last_change = torch.where(changed, t, -1).cummax(1).values  # changed[:, 0] is always True
    fire = (t - last_change) >= k
    if prob_tol > 0:
        fire &= prob_change < prob_tol
    return fire


def from_trace(trace: SetTrace, tol: float | None = None, rule: str = "residual", k: int = 8,
               prob_tol: float = 0.0) -> dict[str, Tensor]:
    """Per-sample iterations used and scores at the stop, replaying `rule` on a full pass."""
    check_rule(rule, k, prob_tol)
    fire = torch.zeros_like(trace.residual, dtype=torch.bool)
    if rule != "stable":
        if tol is None:
            raise ValueError(f"the {rule} rule needs a residual tolerance tol")
        fire |= trace.residual < tol
    if rule != "residual":
        if trace.changed is None:
            raise ValueError("this trace has no record of the output's changes (SetTrace.changed): rerun trace_set")
        fire |= stable_mask(trace.changed, trace.prob_change, k, prob_tol)
    T = fire.shape[1]
    stop = torch.where(fire.any(1), fire.float().argmax(1), torch.full((fire.shape[0],), T - 1))
    out = {m: s.gather(1, stop[:, None]).squeeze(1) for m, s in trace.scores.items()}
    out["iters"] = stop + 1
    out["converged"] = fire.any(1)
    return out


def rule_grid(tolerances: tuple[float, ...] = TOLERANCES, stable_k: tuple[int, ...] = STABLE_K,
              prob_tols: tuple[float, ...] = PROB_TOLS) -> dict[str, list[dict[str, Any]]]:
    """The parameters `compute_curve` replays, per rule: every stability window alone and with each
    probability guard; `either` pairs every tolerance with every window (no guard)."""
    return {
        "residual": [{"tol": tol} for tol in tolerances],
        "stable": [{"k": k, "prob_tol": p} for p in (0.0, *prob_tols) for k in stable_k],
        "either": [{"tol": tol, "k": k, "prob_tol": 0.0} for tol in tolerances for k in stable_k],
    }


def first_T(fixed_curve: Tensor, exact: float) -> int | None:
    """The smallest fixed T whose exact match (a curve over T = 1 ..) reaches `exact`; None if none does."""
    reached = (fixed_curve >= exact - 1e-12).nonzero()
    return int(reached[0]) + 1 if len(reached) else None


def compute_curve(traces: dict[str, SetTrace], tolerances: tuple[float, ...] = TOLERANCES,
                  stable_k: tuple[int, ...] = STABLE_K, prob_tols: tuple[float, ...] = PROB_TOLS) -> dict[str, Any]:
    """For each rule, each of its parameters and each set (and all sets pooled): exact match and
    mean iterations with early exit, and the smallest fixed T that reaches the same pooled exact
    match (compute saved = 1 - mean iterations / that T).

    One T for all sets is what a deployment without a difficulty label has. Where the difficulty
    is known in advance (prefix sums: the length), a T per set is the honest rival, so rows also
    give, per set, the smallest T reaching that set's exact under the rule, and pooled, the mean
    of those per sample (`per_set_fixed_T`) and the compute saved against it.

    Keys: `tolerances` (the residual rule, as before the other rules existed), `stable`, `either`
    (rows of the same shape, with `rule`, `tol`, `k`, `prob_tol`, `label`), `best` (per rule, the
    row with the fewest mean iterations among those within ACCURACY_SLACK of the best fixed T's
    pooled exact match; else the most accurate row), `pooled_fixed_T_exact`, `best_fixed_T`."""
    has_output = all(tr.changed is not None for tr in traces.values())
    pooled_fixed = torch.cat([t.scores["exact"] for t in traces.values()]).double().mean(0)
    set_fixed = {name: tr.scores["exact"].double().mean(0) for name, tr in traces.items()}
    rows: dict[str, list[dict[str, Any]]] = {}
    for rule, params in rule_grid(tolerances, stable_k, prob_tols).items():
        if rule != "residual" and not has_output:
            continue
        rows[rule] = []
        for p in params:
            per_set = {name: from_trace(tr, rule=rule, **p) for name, tr in traces.items()}
            sets = {name: {"exact": r["exact"].mean().item(), "token": r["token"].mean().item(),
                           "mean_iters": r["iters"].double().mean().item(), "max_iters": int(r["iters"].max()),
                           "converged": r["converged"].double().mean().item(),
                           "fixed_T_for_same_exact": first_T(set_fixed[name], r["exact"].double().mean().item())}
                    for name, r in per_set.items()}
            exact = torch.cat([r["exact"] for r in per_set.values()]).double().mean().item()
            iters = torch.cat([r["iters"] for r in per_set.values()]).double().mean().item()
            fixed_T = first_T(pooled_fixed, exact)
            per_set_T = None
            if all(v["fixed_T_for_same_exact"] is not None for v in sets.values()):
                n = {name: len(r["iters"]) for name, r in per_set.items()}
                per_set_T = sum(n[name] * v["fixed_T_for_same_exact"] for name, v in sets.items()) / sum(n.values())
            rows[rule].append({
                "rule": rule, "tol": p.get("tol"), "k": p.get("k"), "prob_tol": p.get("prob_tol", 0.0),
                "label": rule_label(rule, **p), "sets": sets,
                "pooled": {"exact": exact, "mean_iters": iters, "fixed_T_for_same_exact": fixed_T,
                           "compute_saved": None if fixed_T is None else 1 - iters / fixed_T,
                           "per_set_fixed_T": per_set_T,
                           "compute_saved_vs_per_set_T": None if per_set_T is None else 1 - iters / per_set_T},
            })
    best_T = int(pooled_fixed.argmax()) + 1
    target = pooled_fixed.max().item() - ACCURACY_SLACK

    def best(candidates: list[dict[str, Any]]) -> dict[str, Any]:
        good = [r for r in candidates if r["pooled"]["exact"] >= target]
        if good:
            return min(good, key=lambda r: (r["pooled"]["mean_iters"], -r["pooled"]["exact"]))
        return max(candidates, key=lambda r: (r["pooled"]["exact"], -r["pooled"]["mean_iters"]))

    return {"tolerances": rows["residual"], **{rule: r for rule, r in rows.items() if rule != "residual"},
            "best": {rule: best(r) for rule, r in rows.items()},
            "pooled_fixed_T_exact": pooled_fixed.tolist(),
            "best_fixed_T": {"T": best_T, "exact": pooled_fixed[best_T - 1].item()}}


def format_compute(curve: dict[str, Any], all_rows: bool = False) -> str:
    """Pooled accuracy against compute: the best row of each rule, or every row. `fixed T`: one T
    for all sets reaching the same pooled exact; `per-set T`: the mean of a T chosen per set."""
    if all_rows:
        rows = [r for rule in RULES for r in curve.get("tolerances" if rule == "residual" else rule, [])]
    else:
        rows = list(curve["best"].values())
    fixed = curve["best_fixed_T"]
    lines = [f"early exit, all sets pooled (best fixed T = {fixed['T']}: {100 * fixed['exact']:.1f}% exact)",
             f"{'rule':>8} {'parameter':>18} {'exact':>7} {'mean T':>7} {'fixed T':>7} {'saved':>6} "
             f"{'per-set T':>9} {'saved':>6}"]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        p = r["pooled"]
        lines.append(f"{r['rule']:>8} {r['label']:>18} {100 * p['exact']:6.1f}% {p['mean_iters']:7.1f} "
                     f"{num(p['fixed_T_for_same_exact'], 'd'):>7} {num(p['compute_saved'], '.0%'):>6} "
                     f"{num(p.get('per_set_fixed_T'), '.1f'):>9} {num(p.get('compute_saved_vs_per_set_T'), '.0%'):>6}")
    return "\n".join(lines)


def plot_compute(traces: dict[str, SetTrace], curve: dict[str, Any], path: Path) -> None:
    """Exact match against mean iterations: fixed T as lines; per set, the residual rule (dots) and
    the stable rule without a probability guard (open triangles); all sets pooled, every row of
    every rule (black squares: residual, black triangles: stable, grey crosses: either)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stable = curve.get("stable", [])
    unguarded = [r for r in stable if not r["prob_tol"]]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, tr) in enumerate(traces.items()):
        color = f"C{i}"
        fixed = tr.curve("exact")
        ax.plot(range(1, len(fixed) + 1), [100 * v for v in fixed], color=color, lw=1, alpha=0.6)
        for rows, marker, fill, what in ((curve["tolerances"], "o", color, "residual"),
                                         (unguarded, "^", "none", "stable")):
            if rows:
                pts = [(r["sets"][name]["mean_iters"], 100 * r["sets"][name]["exact"]) for r in rows]
                ax.plot(*zip(*pts), marker, color=color, mfc=fill, ms=4, label=f"{name} {what}")
    pooled = curve["pooled_fixed_T_exact"]
    ax.plot(range(1, len(pooled) + 1), [100 * v for v in pooled], color="k", lw=1.5, label="all sets, fixed T")
    for rows, marker, color, size, what in ((curve.get("either", []), "x", "0.6", 4, "either"),
                                            (curve["tolerances"], "s", "k", 5, "residual r<tol"),
                                            (stable, "^", "k", 5, "stable k (, dp)")):
        if rows:
            pts = [(r["pooled"]["mean_iters"], 100 * r["pooled"]["exact"]) for r in rows]
            ax.plot(*zip(*pts), marker, color=color, ms=size, label=f"all sets, {what}")
    ax.set(xlabel="iterations per sample (mean)", ylabel="exact match (%)", ylim=(-2, 102),
           title="accuracy vs compute: fixed T (lines) and early exit "
                 f"(r<{TOLERANCES[0]:g}..{TOLERANCES[-1]:g}, k={STABLE_K[0]}..{STABLE_K[-1]})")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=120)
    plt.close(fig)
