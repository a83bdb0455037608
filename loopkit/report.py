"""`loopkit report DIR`: one self-contained HTML page for a grid of runs — the claims table and
verdicts, accuracy against T per difficulty for every configuration (seeds as a band), residual
traces, rho(J) and init-dependence per difficulty, and the diagnostic-against-gain scatter behind
C4. Figures are PNGs embedded as data URIs and the page has no script, so it opens anywhere,
offline, and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from . import atomic
from .claims import ACCURACY, DIAGNOSTICS, claims_of, finite_or_none, group_runs, mean_sd, read_runs
from .config import ConfigError

# how every report begins: `loopkit report --out` replaces a file only when it begins so (or --force)
REPORT_HEAD = '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>loopkit report</title>'


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _accuracy_figure(groups, sets: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for i, g in enumerate(groups):
            curves = [r.results.get("curves", {}).get(name, {}).get("exact") for r in g.runs]
            curves = [c for c in curves if c]
            if not curves:
                continue
            n = min(map(len, curves))
            c = 100 * np.array([c[:n] for c in curves])
            t = np.arange(1, n + 1)
            ax.plot(t, c.mean(0), color=f"C{i}", label=g.label)
            if len(c) > 1:
                ax.fill_between(t, c.min(0), c.max(0), color=f"C{i}", alpha=0.2)
        ax.set(title=name, xlabel="test-time iterations T", ylabel="exact (%)", ylim=(-2, 102))
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return _figure_uri(fig)


def _residual_figure(groups, sets: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for i, g in enumerate(groups):
            for j, r in enumerate(g.runs):
                trace = r.results.get("median_residual", {}).get(name)
                if trace and len(trace) > 1:  # from t = 2: r_1 is relative to h_0, which may be zero
                    ax.semilogy(range(2, len(trace) + 1), np.maximum(trace[1:], 1e-12), color=f"C{i}", lw=0.8,
                                label=g.label if j == 0 else None)
        ax.set(title=f"{name}: median r_t (t >= 2)", xlabel="iteration t")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return _figure_uri(fig)


def _diagnostics_figure(groups) -> str | None:
    import matplotlib.pyplot as plt

    per = {}  # (group, set) -> (rho, init-dependence) means over seeds
    for g in groups:
        for r in g.runs:
            for name, d in r.by_set.items():  # read and checked by read_runs; a set may lack either figure
                if "rho" in d and "init_dependence" in d:
                    per.setdefault((g.label, name), []).append((d["rho"], d["init_dependence"]))
    if not per:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = sorted(per)
    for k, (ax, title) in enumerate(zip(axes, ("rho(J) (median)", "init-dependence (median)"))):
        ax.bar(range(len(keys)), [np.mean([v[k] for v in per[key]]) for key in keys],
               yerr=[np.std([v[k] for v in per[key]]) for key in keys], color=[f"C{k}"] * len(keys))
        ax.set_xticks(range(len(keys)), [f"{g}\n{s}" for g, s in keys], rotation=90, fontsize=6)
        ax.set_title(title)
    axes[0].axhline(1.0, color="gray", ls=":")
    fig.tight_layout()
    return _figure_uri(fig)


def _scatter_figure(runs) -> str | None:
    import matplotlib.pyplot as plt

    names = [n for n in ("rho", "init_dependence", "sensitivity", "converged") if
             any(np.isfinite(r.values[n]) for r in runs)]
    if not names:  # no run analysed
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.scatter([r.values[name] for r in runs], [r.values["gain"] for r in runs], s=12)
        ax.set(xlabel=name, ylabel="extrapolation gain (points)")
    fig.tight_layout()
    return _figure_uri(fig)


def build_report(run_dirs: list[Path], progress: bool | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    runs = read_runs(run_dirs)  # the checks of `loopkit claims`: one task, each run once, intact files
    result = claims_of(runs, progress)
    groups = group_runs(runs)
    sets = list(runs[0].results["summary"])
    cols = (*ACCURACY, *DIAGNOSTICS)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("configuration", "seeds", *cols))
    body = ""
    for g, row in zip(groups, result["rows"]):
        cells = "".join(f"<td>{html.escape(mean_sd(g.values(c)))}</td>" for c in cols)
        body += (f"<tr><td>{html.escape(g.label)}</td><td>{html.escape(','.join(map(str, row['seeds'])))}</td>"
                 f"{cells}</tr>")
    verdicts = "".join(
        f"<li><b>{claim}: {html.escape(v['verdict'])}</b>{html.escape(' (' + v['why'] + ')') if 'why' in v else ''}"
        f"<br><small>rule: {html.escape(v['rule'])}</small>"
        + (f"<br><code>{html.escape(json.dumps(finite_or_none(v['statistic'])))}</code>" if "statistic" in v else "")
        + "</li>" for claim, v in result["verdicts"].items())
    figures = [("Exact match against test-time T (line: mean over seeds, band: min–max)",
                _accuracy_figure(groups, sets)),
               ("Fixed-point residual r_t (median over samples), one line per run", _residual_figure(groups, sets)),
               ("Geometry and initial-state dependence per difficulty (mean ± sd over seeds)",
                _diagnostics_figure(groups)),
               ("C4: each diagnostic against the extrapolation gain, one point per run", _scatter_figure(runs))]
    imgs = "".join(f"<h3>{html.escape(t)}</h3><img alt='{html.escape(t)}' src='{uri}'>" for t, uri in figures if uri)
    return f"""{REPORT_HEAD}
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}img{{max-width:100%}}code{{font-size:11px}}</style></head>
<body><h1>loopkit report</h1><p>{len(runs)} runs, {len(groups)} configurations; mean ± sd over seeds;
exact match in %; ID = {html.escape(sets[0])}, OOD = mean of {html.escape(', '.join(sets[1:]) or '–')}.</p>
<h2>Claims</h2><table><tr>{head}</tr>{body}</table><ul>{verdicts}</ul><h2>Figures</h2>{imgs}</body></html>
"""


def write_report(run_dirs: list[str | Path], out: str | Path, progress: bool | None = None) -> Path:
    runs = [Path(r) for r in run_dirs if (Path(r) / "eval" / "results.json").is_file()]
    if not runs:
        raise ConfigError(f"none of {' '.join(map(str, run_dirs))} is an evaluated run (no eval/results.json)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, build_report(runs, progress))
    return out
