"""`loopkit claims RUN...`: a grid of evaluated (and analysed) runs turned into a table per
configuration and one verdict per claim of the paper (C1–C4), each with the statistic and the rule
behind it, so that a reader can disagree with the rule and not only with the result.

A configuration is a set of runs whose switches agree except for `train.seed`; its row gives the
mean ± sd over seeds. "In distribution" (ID) is the task's first eval set, "out of distribution"
(OOD) the mean over the others; the extrapolation gain is OOD exact at the best T minus at the
training T. Diagnostics come from `loopkit analyze` (medians over samples, averaged over the
analysed sets). Intervals are 95 % percentile bootstraps (2,000 resamples, fixed seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic
from .compare import MISSING, expect, load_results, read_json, run_config, run_switches, run_task
from .config import ConfigError
from .progress import advance, job

DIAGNOSTICS = {  # name -> (analysis section, key, statistic); what C4 correlates with the gain
    "converged": ("reachability", "converged_fraction", None),
    "cycles": ("reachability", "cycle_fraction", None),
    "rho": ("geometry", "spectral_radius", "median"),
    "J_norm": ("geometry", "spectral_norm", "median"),
    "sigma_min": ("geometry", "sigma_min_I_minus_J", "median"),
    "sensitivity": ("sensitivity", "relative", "median"),
    "init_dependence": ("init_dependence", "spread", "median"),
    "spread": ("spread", "relative_spread", None),
    "attracting_fp": ("attractors", "fixed_point_fraction", None),
    "attracting_cycle": ("attractors", "attracting_cycle_fraction", None),
    "sensitivity_norm": ("sensitivity_norm", "relative", "median"),
    "retained_bits": ("end_state_clusters", "retained_bits", None),
}
# how far the estimates are from their stated tolerance: shown beside them, not correlated with the gain
QUALITY = {"rho_residual": ("geometry", "spectral_radius_residual", "max")}
# The IFT figures solve (I - J) x = b. Where that solve did not reach this relative residual on every
# sample (I - J near-singular: rho(J) = 1.00 on pre- and peri-norm runs leaves residuals of ~0.99),
# the number is GMRES's unfinished iterate, not dh*/de: the set's figure is dropped, not averaged in.
SOLVED = 1e-3
IFT_SECTIONS = ("sensitivity", "sensitivity_norm")


def ift_solved(section: dict[str, Any]) -> bool:
    """Whether an IFT figure's linear solves all reached SOLVED (figures without the record pass)."""
    return section.get("linear_residual_max", 0.0) <= SOLVED
ACCURACY = ("id_T", "id_best", "ood_T", "ood_best", "gain")
SEED_KEY = "train.seed"
LEARNT = 90.0  # ID exact (best T, %) below which a configuration has not learnt what it is judged on
COMPETITIVE = 5.0  # C3: internal recall is "competitive" when it is at most this many points behind
MIN_SEEDS = 3  # a verdict other than "inconclusive" needs learnt runs from this many seeds per group compared
SEEDS_RULE = f"; a verdict other than inconclusive needs learnt runs from >= {MIN_SEEDS} seeds in every group compared"
# C4: a rank correlation over fewer runs decides nothing. On 5 pairs a percentile bootstrap can exclude 0
# for a Spearman of -0.9 whose exact permutation p-value is 0.08; from 8 pairs on, the permutation test
# itself can reject at 0.05 (|rho| >= 0.72).
MIN_RUNS_C4 = 8


@dataclass
class Run:
    path: Path
    switches: dict[str, Any]
    values: dict[str, float]  # ACCURACY in % and DIAGNOSTICS (NaN when not analysed)
    ood_best_by_set: dict[str, float] = field(default_factory=dict)  # exact at the best T in %, per OOD set
    task: str = ""
    results: dict[str, Any] = field(default_factory=dict)  # eval/results.json, checked
    by_set: dict[str, dict[str, float]] = field(default_factory=dict)  # eval set -> the diagnostics it has


@dataclass
class Group:
    label: str
    switches: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> np.ndarray:
        return np.array([r.values[key] for r in self.runs], dtype=float)


def read_run(path: Path) -> Run:
    res = load_results(path, summary=True)
    cfg = run_config(path)
    summary = res["summary"]
    names = list(summary)
    first, rest = summary[names[0]], [summary[n] for n in names[1:]]
    # exact_at_train_T is None (null) when the run was evaluated short of its training T: nan here
    at_t = [math.nan if s.get("exact_at_train_T") is None else s["exact_at_train_T"] for s in (first, *rest)]
    values = {"id_T": 100 * at_t[0], "id_best": 100 * first["best_exact"]}
    values["ood_T"] = 100 * float(np.mean(at_t[1:])) if rest else math.nan
    values["ood_best"] = 100 * float(np.mean([s["best_exact"] for s in rest])) if rest else math.nan
    values["gain"] = values["ood_best"] - values["ood_T"]
    by_set = read_analysis(path)
    for name in (*DIAGNOSTICS, *QUALITY):
        per_set = [d[name] for d in by_set.values() if name in d]
        values[name] = float(np.mean(per_set)) if per_set else math.nan
    return Run(path, run_switches(path, cfg), values, {n: 100 * summary[n]["best_exact"] for n in names[1:]},
               run_task(cfg), res, by_set)


def read_analysis(path: Path) -> dict[str, dict[str, float]]:
    """Eval set -> the DIAGNOSTICS and QUALITY figures `loopkit analyze` found for it; {} for a run not
    analysed (optional), but a damaged analysis is an error naming the file rather than a traceback."""
    file = path / "analysis" / "results.json"
    if not file.is_file():
        return {}
    again = f"run `loopkit analyze {path} --force` again"
    res = read_json(file, again)
    if "sets" not in res:
        raise ConfigError(f"{file}: no sets (the file is not what `loopkit analyze` writes); {again}")
    by_set: dict[str, dict[str, float]] = {}
    for set_name, sections in expect(res["sets"], "a mapping", file, "sets", again).items():
        expect(sections, "a mapping", file, f"sets.{set_name}", again)
        by_set[set_name] = {}
        for name, (section, key, stat) in {**DIAGNOSTICS, **QUALITY}.items():
            if section not in sections:
                continue
            at = f"sets.{set_name}.{section}"
            found = expect(sections[section], "a mapping", file, at, again)
            value = found.get(key)
            if value is not None and stat is not None:
                value = expect(value, "a mapping", file, f"{at}.{key}", again).get(stat, MISSING)
            if value is None:
                continue
            expect(value, "a number", file, f"{at}.{key}" + (f".{stat}" if stat else ""), again)
            if section in IFT_SECTIONS:
                expect(found.get("linear_residual_max", 0.0), "a number", file, f"{at}.linear_residual_max", again)
                if not ift_solved(found):
                    continue
            by_set[set_name][name] = value
    return by_set


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs that differ only in their seed form one configuration, labelled by the switches that
    differ between configurations."""
    keys = sorted({k for r in runs for k in r.switches} - {SEED_KEY})
    differing = [k for k in keys if len({json.dumps(r.switches.get(k)) for r in runs}) > 1]
    groups: dict[str, Group] = {}
    for run in runs:
        label = " ".join(f"{k}={run.switches.get(k)}" for k in differing) or "all runs"
        groups.setdefault(label, Group(label, {k: run.switches.get(k) for k in differing})).runs.append(run)
    return list(groups.values())


# -- statistics ------------------------------------------------------------------------------------
def bootstrap_ci(statistic, *samples: np.ndarray, paired: bool = False, n: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of `statistic` over resamples with replacement: of each sample on
    its own (independent groups), or of the same indices in all (`paired`: (x_i, y_i) pairs)."""
    rng = np.random.default_rng(seed)

    def resample() -> list[np.ndarray]:
        if paired:
            idx = rng.integers(0, len(samples[0]), len(samples[0]))
            return [s[idx] for s in samples]
        return [s[rng.integers(0, len(s), len(s))] for s in samples]

    draws = []
    for _ in range(n):
        draws.append(statistic(*resample()))
        advance()  # the open progress bar, if any (claims: all the draws of every verdict)
    draws = [d for d in draws if np.isfinite(d)]
    if not draws:
        return math.nan, math.nan
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (what Spearman's coefficient needs)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def mean_sd(v: np.ndarray) -> str:
    """Mean ± sd over the seeds that have the figure; "(k of n)" when some seeds lack it (a run not
    analysed, or analysed before that diagnostic existed), so a partial mean never passes for a full one."""
    n, v = len(v), v[np.isfinite(v)]
    if not len(v):
        return "–"
    text = f"{v[0]:.3g}" if len(v) == 1 else f"{v.mean():.3g} ± {v.std(ddof=1):.2g}"
    return text if len(v) == n else f"{text} ({len(v)} of {n})"


# -- the verdicts ------------------------------------------------------------------------------------
def _where(groups: list[Group], **want: Any) -> list[Run]:
    return [r for g in groups for r in g.runs if all(r.switches.get(k) == v for k, v in want.items())]


def _runs(groups: list[Group], keep) -> list[Run]:
    return [r for g in groups for r in g.runs if keep(r.switches)]


def learnt(run: Run) -> bool:
    """Whether the run learnt its training distribution (ID exact at the best T >= LEARNT): only
    such runs enter a verdict, so that a comparison measures extrapolation, not a failed recipe."""
    return bool(run.values["id_best"] >= LEARNT)


NOT_LEARNT = "no {what} run learnt its training distribution (ID exact at the best T >= {learnt:g} %)"


def _seed_floor(result: dict[str, Any], **groups: list[Run]) -> dict[str, Any]:
    """One seed has no spread, so a bootstrap over it is degenerate: a verdict reached on fewer than
    MIN_SEEDS seeds in any compared group becomes inconclusive (the statistic is kept, and says
    what the verdict would have been)."""
    seeds = {name: len({r.switches.get(SEED_KEY) for r in runs}) for name, runs in groups.items()}
    short = {name: n for name, n in seeds.items() if n < MIN_SEEDS}
    if short and result["verdict"] != "inconclusive":
        have = ", ".join(f"{name}: {n}" for name, n in short.items())
        result["why"] = (f"{result['verdict']} by the statistic, but on fewer than {MIN_SEEDS} seeds "
                         f"(learnt runs' seeds {have})")
        result["verdict"] = "inconclusive"
    return result


def _ood_best(runs: list[Run]) -> np.ndarray:
    return np.array([r.values["ood_best"] for r in runs])


def _diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its bootstrap interval (independent samples)."""
    return float(a.mean() - b.mean()), *bootstrap_ci(lambda x, y: x.mean() - y.mean(), a, b)


def verdict_c1(groups: list[Group]) -> dict[str, Any]:
    none, recall = _where(groups, recall="none"), _runs(groups, lambda sw: sw.get("recall") != "none")
    rule = ("among runs that learnt their training distribution: supported when every no-recall run has input "
            "sensitivity below 1e-6 at its end state and its OOD exact (best T) is below the recall runs' (bootstrap "
            "interval of the difference below 0); contradicted when a no-recall run is input-sensitive or the OOD "
            "interval lies above 0; otherwise inconclusive" + SEEDS_RULE
            + " (one input-sensitive no-recall run contradicts on any number of seeds). Retained bits of the end "
            "states are reported, not decided on: a run that learnt a task whose answer is one-to-one in the input "
            "must end in a distinct state per input, recall or not")
    if not none or not recall:
        return {"verdict": "inconclusive", "why": "needs runs with recall=none and with recall", "rule": rule}
    sens = np.array([r.values["sensitivity"] for r in none])  # structural: every no-recall run, learnt or not
    if np.isfinite(sens).any() and np.nanmax(sens) >= 1e-6:
        return {"verdict": "contradicted", "statistic": {"max_sensitivity_no_recall": float(np.nanmax(sens))},
                "rule": rule}
    none, recall = [r for r in none if learnt(r)], [r for r in recall if learnt(r)]
    for runs, what in ((none, "no-recall"), (recall, "recall")):
        if not runs:
            return {"verdict": "inconclusive", "why": NOT_LEARNT.format(what=what, learnt=LEARNT), "rule": rule}
    diff, lo, hi = _diff_ci(_ood_best(none), _ood_best(recall))
    stat = {"max_sensitivity_no_recall": float(np.nanmax(sens)) if np.isfinite(sens).any() else None,
            "learnt_runs": {"none": len(none), "recall": len(recall)},
            "ood_best_none_minus_recall": diff, "ci": [lo, hi]}
    bits_none, bits_recall = (np.array([r.values["retained_bits"] for r in rs]) for rs in (none, recall))
    if np.isfinite(bits_none).all() and np.isfinite(bits_recall).all():  # for the reader: see the rule
        d, blo, bhi = _diff_ci(bits_none, bits_recall)
        stat.update({"retained_bits_none_minus_recall": d, "retained_bits_ci": [blo, bhi]})
    if lo > 0:
        v = "contradicted"
    elif np.isfinite(sens).all() and hi < 0:
        v = "supported"
    else:
        v = "inconclusive"
    return _seed_floor({"verdict": v, "statistic": stat, "rule": rule}, none=none, recall=recall)


def verdict_c2(groups: list[Group]) -> dict[str, Any]:
    outer = [r for r in _runs(groups, lambda sw: sw.get("norm") == "outer" and sw.get("recall") != "none") if learnt(r)]
    other = [r for r in _runs(groups, lambda sw: sw.get("norm") != "outer" and sw.get("recall") != "none") if learnt(r)]
    rule = ("among runs that learnt their training distribution: supported when the recall + outer-norm runs converge "
            "(mean converged share >= 0.9) with median rho(J) < 1 "
            "and their OOD exact (best T) beats the recall runs of the other norm placements with a bootstrap interval "
            "of the difference above 0; contradicted when the interval lies below 0 or rho(J) >= 1; "
            "otherwise inconclusive" + SEEDS_RULE)
    if not outer or not other:
        return {"verdict": "inconclusive", "rule": rule,
                "why": "needs learnt recall runs with norm=outer and with another norm (ID exact at the best T "
                       f">= {LEARNT:g} %)"}
    conv = np.nanmean([r.values["converged"] for r in outer])
    rho = np.nanmedian([r.values["rho"] for r in outer])
    diff, lo, hi = _diff_ci(_ood_best(outer), _ood_best(other))
    stat = {"converged_share": float(conv), "median_rho": float(rho), "ood_best_outer_minus_other": diff,
            "ci": [lo, hi]}
    for key in ("attracting_fp", "attracting_cycle"):  # where the samples end: which kind of attractor
        values = [r.values[key] for r in outer if np.isfinite(r.values[key])]
        if values:
            stat[f"{key}_share"] = float(np.mean(values))
    if hi < 0 or rho >= 1:
        v = "contradicted"
    elif conv >= 0.9 and rho < 1 and lo > 0:
        v = "supported"
    else:
        v = "inconclusive"
    return _seed_floor({"verdict": v, "statistic": stat, "rule": rule}, outer=outer, other=other)


def verdict_c3(groups: list[Group]) -> dict[str, Any]:
    rule = (f"paired by seed, internal - standard recall (norm=outer, default h_0), seeds where both learnt their "
            f"training distribution, in OOD exact at the best T: supported (competitive) when the bootstrap interval "
            f"of the mean paired difference lies above -{COMPETITIVE:g} points, contradicted when it lies below "
            f"-{COMPETITIVE:g}; otherwise inconclusive; needs >= {MIN_SEEDS} such seeds; the same difference per OOD "
            f"set (difficulty) is reported beside it, not decided on")

    def placement(recall: str) -> dict[Any, Run]:
        """seed -> run of this recall placement with outer norm; controls (init_state=input) are not it."""
        def keep(sw: dict[str, Any]) -> bool:
            return sw.get("recall") == recall and sw.get("norm") == "outer" and sw.get("init_state") in (None, "auto")

        return {r.switches.get(SEED_KEY): r for r in _runs(groups, keep)}

    internal, standard = placement("internal"), placement("standard")
    seeds = sorted((s for s in set(internal) & set(standard) if learnt(internal[s]) and learnt(standard[s])), key=str)
    if len(seeds) < MIN_SEEDS:
        return {"verdict": "inconclusive", "rule": rule,
                "why": "needs internal and standard recall (norm=outer) that both learnt their training distribution "
                       f"on >= {MIN_SEEDS} common seeds (have {len(seeds)})"}
    pooled = _paired([internal[s].values["ood_best"] - standard[s].values["ood_best"] for s in seeds])
    lo, hi = pooled["ci"]
    v = "supported" if lo > -COMPETITIVE else "contradicted" if hi < -COMPETITIVE else "inconclusive"
    # per OOD set (difficulty), reported not decided on: where the placements part ways can hide in the mean
    sets = [n for n in internal[seeds[0]].ood_best_by_set
            if all(n in internal[s].ood_best_by_set and n in standard[s].ood_best_by_set for s in seeds)]
    by_set = {n: _paired([internal[s].ood_best_by_set[n] - standard[s].ood_best_by_set[n] for s in seeds])
              for n in sets}
    return {"verdict": v, "statistic": {"seeds": seeds, **pooled, "per_difficulty": by_set}, "rule": rule}


def _paired(differences: list[float]) -> dict[str, Any]:
    """Paired differences with their mean and its bootstrap interval over the pairs."""
    d = np.array(differences)
    lo, hi = bootstrap_ci(lambda x: x.mean(), d)
    return {"paired_differences": d.tolist(), "mean": float(d.mean()), "ci": [lo, hi]}


def verdict_c4(runs: list[Run]) -> dict[str, Any]:
    rule = ("Spearman's rank correlation across the runs that learnt their training distribution between each "
            "diagnostic and the extrapolation gain, with a "
            "bootstrap interval over runs; supported when the interval excludes 0 for rho(J) or init-dependence in the "
            "expected direction (negative: unstable or start-dependent maps extrapolate less) and for neither in the "
            "opposite one; contradicted when one of them excludes 0 in the opposite direction; otherwise inconclusive; "
            f"a correlation over fewer than {MIN_RUNS_C4} runs decides nothing" + SEEDS_RULE)
    runs = [r for r in runs if learnt(r)]  # a run that never learnt has no extrapolation to explain
    gain = np.array([r.values["gain"] for r in runs])
    table = {}
    for name in DIAGNOSTICS:
        x = np.array([r.values[name] for r in runs])
        ok = np.isfinite(x) & np.isfinite(gain)
        if ok.sum() < 3:
            continue
        lo, hi = bootstrap_ci(spearman, x[ok], gain[ok], paired=True) if ok.sum() >= 4 else (math.nan, math.nan)
        table[name] = {"spearman": spearman(x[ok], gain[ok]), "ci": [lo, hi], "runs": int(ok.sum())}
    if not table:
        return {"verdict": "inconclusive",
                "why": f"needs >= 3 analysed runs that learnt their training distribution (have {len(runs)})",
                "rule": rule}
    key = [table[k] for k in ("rho", "init_dependence") if k in table and table[k]["runs"] >= MIN_RUNS_C4]
    if not key:
        return {"verdict": "inconclusive", "statistic": table, "rule": rule,
                "why": f"rho(J) and init-dependence are known on fewer than {MIN_RUNS_C4} learnt runs "
                       f"(have {max((table[k]['runs'] for k in ('rho', 'init_dependence') if k in table), default=0)})"}
    if any(t["ci"][0] > 0 for t in key):
        v = "contradicted"
    elif any(t["ci"][1] < 0 for t in key):
        v = "supported"
    else:
        v = "inconclusive"
    return _seed_floor({"verdict": v, "statistic": table, "rule": rule}, runs=runs)


# -- the report ------------------------------------------------------------------------------------
def read_runs(run_dirs: list[str | Path]) -> list[Run]:
    """The runs of one claims table, refused where the table would be wrong without a word: a run
    given twice (any spelling, or a copy: same configuration and seed) would count as two seeds, and
    runs of different tasks have nothing in common to tabulate."""
    if not run_dirs:
        raise ConfigError("loopkit claims needs at least one evaluated run")
    given: dict[Path, list[str]] = {}
    for p in run_dirs:
        given.setdefault(Path(p).resolve(), []).append(str(p))
    for where, names in given.items():
        if len(names) > 1:
            raise ConfigError(f"the run {where} is given {len(names)} times ({', '.join(names)}); it would count as "
                              f"{len(names)} seeds: give each run once")
    runs = [read_run(Path(p)) for p in run_dirs]
    tasks: dict[str, list[str]] = {}
    for r in runs:
        tasks.setdefault(r.task, []).append(str(r.path))
    if len(tasks) > 1:
        found = "; ".join(f"{task}: {', '.join(paths)}" for task, paths in tasks.items())
        raise ConfigError(f"the runs are of {len(tasks)} tasks ({found}); give the runs of one task per call")
    seen: dict[str, Run] = {}
    for r in runs:
        twin = seen.setdefault(json.dumps(r.switches, sort_keys=True, default=str), r)
        if twin is not r:
            raise ConfigError(f"{twin.path} and {r.path} are one configuration with the same {SEED_KEY} "
                              f"({r.switches.get(SEED_KEY)}): copies of one run, not two seeds; give one of them")
    return runs


def claims(run_dirs: list[str | Path], progress: bool | None = None) -> dict[str, Any]:
    """Per configuration the mean +- sd over seeds, and a verdict per claim. `progress`: a bar of
    the bootstrap draws on stderr (None: when stderr is a terminal)."""
    return claims_of(read_runs(run_dirs), progress)


def claims_of(runs: list[Run], progress: bool | None = None) -> dict[str, Any]:
    """`claims` of runs already read (by `read_runs`, which checks them)."""
    groups = group_runs(runs)
    rows = [{"configuration": g.label, "seeds": [r.switches.get(SEED_KEY) for r in g.runs],
             **{k: {"mean": float(np.nanmean(g.values(k))) if np.isfinite(g.values(k)).any() else None,
                    "sd": float(np.nanstd(g.values(k), ddof=1)) if np.isfinite(g.values(k)).sum() > 1 else None,
                    "per_seed": [None if not np.isfinite(v) else v for v in g.values(k).tolist()]}
                for k in (*ACCURACY, *DIAGNOSTICS, *QUALITY)}} for g in groups]
    with job("claims: bootstrap", "draw", progress=progress):
        verdicts = {"C1": verdict_c1(groups), "C2": verdict_c2(groups), "C3": verdict_c3(groups),
                    "C4": verdict_c4(runs)}
    return {"runs": [str(r.path) for r in runs], "rows": rows, "verdicts": verdicts}


def to_markdown(result: dict[str, Any]) -> str:
    cols = (*ACCURACY, *DIAGNOSTICS, *QUALITY)
    lines = ["# Claims", "", f"{len(result['runs'])} runs; mean ± sd over seeds (exact match in %).", "",
             "| configuration | seeds | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 2)]
    for row in result["rows"]:
        cells = [mean_sd(np.array([v if v is not None else np.nan for v in row[k]["per_seed"]], dtype=float))
                 for k in cols]
        lines.append(f"| {row['configuration']} | {','.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |")
    unlearnt = [row["configuration"] for row in result["rows"]
                if row["id_best"]["mean"] is not None and row["id_best"]["mean"] < LEARNT]
    if unlearnt:
        lines += ["", f"Not learnt (ID exact at the best T below {LEARNT:g} %, mean over seeds): "
                  + "; ".join(unlearnt) + ". Their out-of-distribution figures say little about extrapolation."]
    lines += ["", "## Verdicts", ""]
    for claim, v in result["verdicts"].items():
        lines.append(f"- **{claim}: {v['verdict']}**" + (f" ({v['why']})" if "why" in v else ""))
        if "statistic" in v:
            lines.append(f"  - statistic: `{json.dumps(finite_or_none(v['statistic']))}`")
        lines.append(f"  - rule: {v['rule']}")
    return "\n".join(lines) + "\n"


def finite_or_none(x: Any) -> Any:
    """NaN and infinities become null: claims.json stays standard JSON."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def write_claims(run_dirs: list[str | Path], out: str | Path, progress: bool | None = None) -> dict[str, Any]:
    result = claims(run_dirs, progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_texts({out / "claims.json": json.dumps(finite_or_none(result), indent=1, allow_nan=False),
                        out / "claims.md": to_markdown(result)})
    return result
