"""`loopkit analyze RUN_DIR`: the fixed-point diagnostics of `loopkit.fixedpoint` applied to a
trained model on every difficulty of its task, with figures and one summary table.

The map analysed is the model's own step, f(h, e) = Φ(h; e), with the attention pattern of the
input's length fixed, so `loopkit.fixedpoint` never needs to know what a transformer is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import atomic, fixedpoint
from .claims import SOLVED, ift_solved
from .config import Config, ConfigError
from .model import LoopedTransformer
from .progress import advance, job
from .runfolder import output_folder
from .runs import load_run
from .tasks import EvalSet, Task, build_task


def analyze_model(model: LoopedTransformer, x: Tensor, *, max_iters: int, tol: float, n_inits: int = 3,
                  method: str = "iter", seed: int = 0, krylov_dim: int = 20, min_sv_matvecs: int = 400,
                  sensitivity_norm: bool = False, rho_tol: float = 1e-3) -> dict[str, Any]:
    """Every diagnostic on one batch. Initial-state dependence compares the model's own h_0 with
    `n_inits - 1` random unit-variance states (the scale of a normalized state)."""
    if not model.cfg.tied:
        raise ConfigError("an untied stack applies a different block at every depth: it has no fixed-point map")
    step, e, h0 = model.fixed_point_map(x)

    def f(h: Tensor, e: Tensor) -> Tensor:  # every application of the map is a step of the progress bar
        advance()
        return step(h, e)

    def starts(k: int) -> Tensor:
        if k == 0:
            return h0
        g = torch.Generator().manual_seed(seed + k)
        return torch.randn(h0.shape, generator=g).to(h0)

    return fixedpoint.analyze(f, e, h0, method=method, max_iters=max_iters, tol=tol, h0s=starts, n_inits=n_inits,
                              krylov_dim=krylov_dim, seed=seed, with_min_sv=min_sv_matvecs > 0,
                              min_sv_matvecs=min_sv_matvecs, with_sensitivity_norm=sensitivity_norm,
                              norm_give_up_above=SOLVED, rho_tol=rho_tol, readout=model.readout)


def cluster_inputs(cfg: Config, task: Task, sets: list[EvalSet], n: int) -> dict[str, Tensor]:
    """The first `n` inputs of each set, by name; where the run evaluated fewer, the sets are made
    once more with `n` samples (same generator, seed and split as evaluation, so no training input
    enters). A set read from a file, or a task that cannot make more, gives what it has."""
    have = {s.name: s.x[:n] for s in sets}
    if all(len(x) >= n for x in have.values()) or "eval_samples" not in cfg.task:
        return have
    more = build_task({**cfg.task, "eval_samples": n})
    more.cache_read_only = task.cache_read_only
    bigger = {b.name: b.x[:n] for b in more.eval_sets() if b.name in have and len(b.x) > len(have[b.name])}
    return {**have, **bigger}


def analyze_run(run_dir: str | Path, *, samples: int = 32, max_iters: int | None = None, tol: float | None = None,
                sets: list[str] | None = None, n_inits: int = 3, method: str = "iter", min_sv_matvecs: int = 400,
                device: str = "cpu", sensitivity_norm: bool = False, cluster_samples: int = 200,
                rho_tol: float = 1e-3, ckpt_name: str | None = None, progress: bool | None = None) -> dict:
    """Analyse the first `samples` inputs of each eval set (all, or those named in `sets`);
    write analysis/results.json and figures into the run directory; return the results.
    `progress`: a bar per set on stderr counting applications of the map (None: when stderr is a terminal)."""
    run_dir = Path(run_dir)
    cfg, task, model, step = load_run(run_dir, device, ckpt_name=ckpt_name)
    model.requires_grad_(False)
    max_iters = max_iters or cfg.eval_max_iters()
    tol = tol or cfg.eval.tol
    chosen = task.eval_sets()
    if sets:
        unknown = set(sets) - {s.name for s in chosen}
        if unknown:
            raise ConfigError(f"unknown eval set(s) {sorted(unknown)}; this task has {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in sets]
    results: dict[str, Any] = {"run_dir": str(run_dir), "step": step, "max_iters": max_iters, "tol": tol,
                               "method": method, "samples": samples, "sets": {}}
    many = cluster_inputs(cfg, task, chosen, cluster_samples)
    for i, s in enumerate(chosen, 1):
        started = time.perf_counter()
        with job(f"analyze {s.name} ({i}/{len(chosen)} sets)", "step", progress=progress):
            report = analyze_model(model, s.x[:samples].to(device), max_iters=max_iters, tol=tol, n_inits=n_inits,
                                   method=method, min_sv_matvecs=min_sv_matvecs, sensitivity_norm=sensitivity_norm,
                                   rho_tol=rho_tol)
        with torch.no_grad():  # C1: how many distinct end states do many inputs reach?
            x = many[s.name].to(device)
            report["end_state_clusters"] = fixedpoint.distinct_states(model(x, max_iters).state)
        report["seconds"] = time.perf_counter() - started
        results["sets"][s.name] = report
    out = output_folder(run_dir, "analysis")
    atomic.write_text(out / "results.json", json.dumps(results, indent=1))
    plot_analysis(results, out)
    return results


def summary_rows(results: dict) -> list[dict[str, Any]]:
    """One row of headline numbers per difficulty (medians over samples)."""
    rows = []
    for name, r in results["sets"].items():
        reach, geo = r["reachability"], r.get("geometry", {})
        rows.append({
            "set": name,
            "converged": reach["converged_fraction"],
            "iters": reach["iters_to_converge"]["median"],
            "final_residual": reach["final_residual"]["median"],
            "cycles": reach["cycle_fraction"],
            "diverged": reach["diverged_fraction"],
            "spread": r["spread"]["relative_spread"],
            "sensitivity": r["sensitivity"]["relative"]["median"]
            if "sensitivity" in r and ift_solved(r["sensitivity"]) else None,
            "init_dependence": r["init_dependence"]["spread"]["median"] if "init_dependence" in r else None,
            "rho": geo.get("spectral_radius", {}).get("median"),
            "rho_residual": geo.get("spectral_radius_residual", {}).get("max"),
            "norm": geo.get("spectral_norm", {}).get("median"),
            "sigma_min": geo.get("sigma_min_I_minus_J", {}).get("median"),
            "attracting_fp": r.get("attractors", {}).get("fixed_point_fraction"),
            "attracting_cycle": r.get("attractors", {}).get("attracting_cycle_fraction"),
            "sensitivity_norm": r["sensitivity_norm"]["relative"]["median"]
            if "sensitivity_norm" in r and ift_solved(r["sensitivity_norm"]) else None,
            "clusters": r["end_state_clusters"]["clusters"] if "end_state_clusters" in r else None,
        })
    return rows


COLUMNS = [  # (summary_rows key, header, width, format spec)
    ("set", "set", 8, ""), ("converged", "conv", 6, ".0%"), ("cycles", "cycle", 6, ".0%"), ("iters", "iters", 6, ".0f"),
    ("final_residual", "resid", 8, ".1e"), ("spread", "spread", 7, ".3f"), ("sensitivity", "sens", 8, ".3f"),
    ("init_dependence", "init-dep", 8, ".3f"), ("rho", "rho(J)", 7, ".3f"),
    ("rho_residual", "rho-res", 7, ".0e"), ("norm", "|J|2", 7, ".2f"),
    ("sigma_min", "smin(I-J)", 9, ".3f"), ("attracting_fp", "att.fp", 6, ".0%"),
    ("attracting_cycle", "att.cyc", 7, ".0%"), ("sensitivity_norm", "|dh/de|", 8, ".3f"),
    ("clusters", "states", 6, "d"),
]


def format_summary(results: dict) -> str:
    lines = [" ".join(head.rjust(width) for _, head, width, _ in COLUMNS)]
    for row in summary_rows(results):
        lines.append(" ".join(("-" if row[key] is None else format(row[key], spec)).rjust(width)
                              for key, _, width, spec in COLUMNS))
    lines.append(f"medians over {results['samples']} samples per set. conv: r_t < {results['tol']:g} within "
                 f"{results['max_iters']} iterations of the model's own dynamics; sens: relative IFT sensitivity "
                 "||dh*/de v|| ||e|| / ||h*||; init-dep: spread of end states from different h_0; "
                 "rho-res: largest Ritz residual of rho(J) (restarted to --rho-tol); att.fp / att.cyc: share of "
                 "samples at an attracting fixed point (rho(J) < 1) / on an attracting cycle (Floquet "
                 "multipliers inside the unit circle); |dh/de|: relative operator norm (--sensitivity-norm); "
                 "sens and |dh/de| read '-' where a solve of "
                 "(I - J) x = b stopped above a relative residual of 1e-3 (results.json keeps sens's unfinished "
                 "number; |dh/de| is abandoned at the first such solve and says so); states: "
                 "distinct end states (1 % of the state norm apart) of up to 200 inputs")
    return "\n".join(lines)


def plot_analysis(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = results["sets"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in sets.items():
        # r_t is undefined while h_t = 0 (h_0 = zeros): the solver's eps floor makes it ~1e14; not drawn
        trace = [v if v is not None and v < 1e6 else float("nan") for v in r["reachability"]["median_residual_vs_t"]]
        ax.semilogy(range(1, len(trace) + 1), trace, label=name)
    ax.axhline(results["tol"], color="grey", ls=":", lw=1)
    ax.set(xlabel="iteration t", ylabel="median relative residual r_t", title="reachability")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic.save_figure(fig, out / "residuals.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax, label in (("spectral_radius", axes[0], "spectral radius rho(J)"),
                           ("spectral_norm", axes[1], "spectral norm ||J||_2")):
        for name, r in sets.items():
            vals = [v for v in r.get("geometry", {}).get("per_sample", {}).get(key, []) if v is not None]
            if vals:
                ax.hist(vals, bins=20, alpha=0.5, label=name)
        if key == "spectral_radius":
            ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set(xlabel=label, ylabel="samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic.save_figure(fig, out / "geometry.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [n for n, r in sets.items() if "sensitivity" in r]
    data = [[v for v in sets[n]["sensitivity"]["per_sample"]["relative"] if v is not None] for n in names]
    if names:
        ax.boxplot(data)
        ax.set_xticks(range(1, len(names) + 1), names)
    ax.set(ylabel="relative sensitivity ||dh*/de v|| ||e|| / ||h*||", title="input-dependence per difficulty")
    fig.tight_layout()
    atomic.save_figure(fig, out / "sensitivity.png", dpi=120)
    plt.close(fig)
