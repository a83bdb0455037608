"""`loopkit claims`: the statistics and verdict rules on small synthetic result sets whose answer
is known."""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from loopkit.claims import bootstrap_ci, claims, mean_sd, ranks, spearman, to_markdown
from loopkit.cli import main
from loopkit.errors import ConfigError


def fake_run(root: Path, recall: str, norm: str, seed: int, *, id_best: float, ood_T: float, ood_best: float,
             rho: float = 0.8, init_dep: float = 0.01, sensitivity: float = 1.0, converged: float = 1.0,
             retained_bits: float | None = None, solve_residual: float = 1e-6, task: str | None = None) -> Path:
    """A run folder with config.yaml, eval/results.json and analysis/results.json holding these figures
    (`task`: the config names it; None: no task section, which loopkit reads as its default task)."""
    run = root / f"{recall}_{norm}_s{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "analysis").mkdir()
    cfg = {"model": {"recall": recall, "norm": norm, "width": 64}, "train": {"seed": seed, "lr": 0.001}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg if task is None else {"task": {"name": task}, **cfg}))
    summary = {"easy": {"exact_at_train_T": id_best, "best_exact": id_best},
               "hard": {"exact_at_train_T": ood_T, "best_exact": ood_best}}
    (run / "eval" / "results.json").write_text(json.dumps({"summary": summary, "train_iters": 8, "curves": {}}))
    sets = {name: {"reachability": {"converged_fraction": converged, "cycle_fraction": 0.0},
                   "geometry": {"spectral_radius": {"median": rho}, "spectral_norm": {"median": 2 * rho}},
                   "sensitivity": {"relative": {"median": sensitivity}, "linear_residual_max": solve_residual},
                   "init_dependence": {"spread": {"median": init_dep}},
                   "spread": {"relative_spread": 0.5}} for name in ("easy", "hard")}
    if retained_bits is not None:
        for v in sets.values():
            v["end_state_clusters"] = {"retained_bits": retained_bits}
    (run / "analysis" / "results.json").write_text(json.dumps({"sets": sets}))
    return run


def test_spearman_and_ranks_against_known_answers():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0)  # monotone: 1 whatever the shape
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert ranks(np.array([10.0, 20.0, 20.0, 30.0])).tolist() == [1.0, 2.5, 2.5, 4.0]  # ties share their mean rank
    assert math.isnan(spearman(x, np.ones(5)))  # a constant has no ranking
    lo, hi = bootstrap_ci(lambda v: v.mean(), np.full(10, 3.0))
    assert lo == hi == 3.0
    lo, hi = bootstrap_ci(spearman, x, 2 * x, paired=True)  # pairs resampled together keep their order
    assert (lo, hi) == (pytest.approx(1.0), pytest.approx(1.0))
    lo, hi = bootstrap_ci(spearman, x, 2 * x)  # resampled independently, the pairing is lost
    assert lo < 0 < hi


def paper_like_grid(root: Path, seeds) -> list[Path]:
    """A grid whose figures follow the paper: no recall fails OOD, recall + outer norm converges and
    extrapolates, internal recall is level with standard, the pre-norm runs extrapolate less."""
    runs = []
    for seed in seeds:
        runs.append(fake_run(root, "none", "outer", seed, id_best=0.95, ood_T=0.0, ood_best=0.02 + 0.01 * seed,
                             rho=1.02, init_dep=0.7, sensitivity=0.0, converged=0.0))
        runs.append(fake_run(root, "standard", "outer", seed, id_best=1.0, ood_T=0.1, ood_best=0.9 + 0.01 * seed,
                             rho=0.7 + 0.01 * seed, init_dep=0.001))
        runs.append(fake_run(root, "internal", "outer", seed, id_best=1.0, ood_T=0.1, ood_best=0.92 + 0.01 * seed,
                             rho=0.72, init_dep=0.002))
        runs.append(fake_run(root, "standard", "pre", seed, id_best=0.97, ood_T=0.1, ood_best=0.3 + 0.02 * seed,
                             rho=0.98, init_dep=0.3, converged=0.4))
    return runs


def test_a_grid_that_follows_the_paper_gets_every_claim_supported(tmp_path):
    result = claims(paper_like_grid(tmp_path, range(3)))
    assert {k: v["verdict"] for k, v in result["verdicts"].items()} == \
        {"C1": "supported", "C2": "supported", "C3": "supported", "C4": "supported"}
    c3 = result["verdicts"]["C3"]["statistic"]
    assert c3["paired_differences"] == pytest.approx([2.0, 2.0, 2.0])  # internal - standard, per seed, in points
    row = next(r for r in result["rows"] if r["configuration"] == "norm=outer recall=standard")
    assert row["seeds"] == [0, 1, 2] and row["ood_best"]["mean"] == pytest.approx(91.0)
    assert row["ood_best"]["sd"] == pytest.approx(1.0)
    assert "rule:" in to_markdown(result)


def test_c3_reports_the_paired_difference_per_difficulty_where_the_mean_hides_it(tmp_path):
    """internal recall 10 points ahead on medium and 10 behind on expert, every seed: the pooled
    difference is 0, the per-difficulty ones are +10 and -10 with intervals that say so."""
    runs = []
    for seed in range(3):
        for recall, (medium, expert) in {"internal": (0.5, 0.1), "standard": (0.4, 0.2)}.items():
            run = fake_run(tmp_path, recall, "outer", seed, id_best=1.0, ood_T=0.0, ood_best=0.0)
            summary = {"easy": {"exact_at_train_T": 1.0, "best_exact": 1.0},
                       "medium": {"exact_at_train_T": 0.0, "best_exact": medium + 0.01 * seed},
                       "expert": {"exact_at_train_T": 0.0, "best_exact": expert + 0.01 * seed}}
            (run / "eval" / "results.json").write_text(json.dumps({"summary": summary, "train_iters": 8, "curves": {}}))
            runs.append(run)
    c3 = claims(runs)["verdicts"]["C3"]["statistic"]
    assert c3["paired_differences"] == pytest.approx([0.0, 0.0, 0.0])
    by_set = c3["per_difficulty"]
    assert list(by_set) == ["medium", "expert"]
    assert by_set["medium"]["paired_differences"] == pytest.approx([10.0] * 3)
    assert by_set["medium"]["ci"] == pytest.approx([10.0, 10.0])
    assert by_set["expert"]["mean"] == pytest.approx(-10.0)


def test_the_same_figures_on_two_seeds_decide_nothing(tmp_path):
    """Fewer than three seeds per group: every verdict is inconclusive, and says what the statistic
    alone would have given and how many seeds there were."""
    verdicts = claims(paper_like_grid(tmp_path, range(2)))["verdicts"]
    assert {v["verdict"] for v in verdicts.values()} == {"inconclusive"}
    for claim in ("C1", "C2"):
        assert verdicts[claim]["why"].startswith("supported by the statistic, but on fewer than 3 seeds")
    assert "none: 2" in verdicts["C1"]["why"] and "(have 2)" in verdicts["C3"]["why"]


def test_contradicting_and_thin_evidence_give_the_matching_verdicts(tmp_path):
    runs = []
    for seed in range(3):  # internal recall far behind standard; no-recall runs input-sensitive (impossible for C1)
        runs.append(fake_run(tmp_path, "none", "outer", seed, id_best=0.9, ood_T=0.0, ood_best=0.5, sensitivity=0.3))
        runs.append(fake_run(tmp_path, "standard", "outer", seed, id_best=1.0, ood_T=0.1, ood_best=0.9))
        runs.append(fake_run(tmp_path, "internal", "outer", seed, id_best=0.95, ood_T=0.0, ood_best=0.2 + 0.01 * seed))
        runs.append(fake_run(tmp_path, "standard", "pre", seed, id_best=0.5, ood_T=0.0, ood_best=0.0))
    result = claims(runs)
    verdicts = {k: v["verdict"] for k, v in result["verdicts"].items()}
    assert verdicts["C1"] == "contradicted" and verdicts["C3"] == "contradicted"
    # the only other norm did not learn: no comparison, whatever its OOD figure
    assert verdicts["C2"] == "inconclusive" and "another norm" in result["verdicts"]["C2"]["why"]
    assert "Not learnt" in to_markdown(result) and "norm=pre recall=standard" in to_markdown(result)


def test_runs_that_did_not_learn_their_training_set_decide_nothing(tmp_path):
    """No-recall fails OOD, but it never learnt ID either: C1 cannot tell extrapolation from a failed
    recipe. Internal recall learnt in one seed only: C3 has no pairs. C4 sees only learnt runs."""
    runs = []
    for seed in range(3):
        runs.append(fake_run(tmp_path, "none", "outer", seed, id_best=0.1, ood_T=0.0, ood_best=0.0, sensitivity=0.0))
        runs.append(fake_run(tmp_path, "standard", "outer", seed, id_best=1.0, ood_T=0.1, ood_best=0.9))
        runs.append(fake_run(tmp_path, "internal", "outer", seed, id_best=1.0 if seed == 0 else 0.3, ood_T=0.0,
                             ood_best=0.5))
    result = claims(runs)
    c1, c3, c4 = (result["verdicts"][k] for k in ("C1", "C3", "C4"))
    assert c1["verdict"] == "inconclusive" and "no no-recall run learnt" in c1["why"]
    assert c3["verdict"] == "inconclusive" and "(have 1)" in c3["why"]
    assert all(t["runs"] == 4 for t in c4["statistic"].values())


def test_cli_writes_claims_next_to_the_runs(tmp_path, capsys):
    runs = [fake_run(tmp_path / "grid", "standard", "outer", s, id_best=1.0, ood_T=0.2, ood_best=0.8) for s in range(2)]
    assert main(["claims", *map(str, runs)]) == 0
    assert (tmp_path / "grid" / "claims.md").is_file()
    json.loads((tmp_path / "grid" / "claims.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert main(["claims", str(tmp_path / "nothing")]) == 2
    assert "is an evaluated run" in capsys.readouterr().err
    (tmp_path / "grid" / "still_training").mkdir()
    assert main(["claims", *map(str, runs), str(tmp_path / "grid" / "still_training")]) == 0
    assert "left out 1 folder(s) without eval/results.json" in capsys.readouterr().err


@pytest.mark.parametrize("none_bits", [0.1, 1.0])
def test_c1_reports_retained_bits_without_deciding_on_them(tmp_path, none_bits):
    """A no-recall run that learnt a one-to-one task must end in one state per input, as a recall
    run does: the retained bits are reported beside C1's verdict but do not move it."""
    runs = []
    for seed in range(3):
        runs.append(fake_run(tmp_path, "none", "outer", seed, id_best=0.96, ood_T=0.0, ood_best=0.01 * seed,
                             sensitivity=0.0, retained_bits=none_bits + 0.01 * seed))
        runs.append(fake_run(tmp_path, "standard", "outer", seed, id_best=1.0, ood_T=0.1, ood_best=0.9,
                             retained_bits=1.0))
    c1 = claims(runs)["verdicts"]["C1"]
    assert c1["verdict"] == "supported"
    assert c1["statistic"]["retained_bits_none_minus_recall"] == pytest.approx(none_bits + 0.01 - 1.0)
    assert "reported, not decided on" in c1["rule"]


def test_a_figure_some_seeds_lack_says_how_many_it_is_over():
    assert mean_sd(np.array([1.0, 3.0])) == "2 ± 1.4"
    assert mean_sd(np.array([1.0, np.nan, 3.0])) == "2 ± 1.4 (2 of 3)"
    assert mean_sd(np.array([5.0, np.nan])) == "5 (1 of 2)"
    assert mean_sd(np.array([np.nan, np.nan])) == "–"


def test_an_ift_figure_whose_linear_solve_failed_is_dropped_not_averaged(tmp_path):
    from loopkit.claims import read_run

    solved = read_run(fake_run(tmp_path, "standard", "outer", 0, id_best=1.0, ood_T=0.0, ood_best=0.9,
                               sensitivity=0.5))
    assert solved.values["sensitivity"] == pytest.approx(0.5)
    failed = read_run(fake_run(tmp_path, "standard", "pre", 0, id_best=1.0, ood_T=0.0, ood_best=0.1,
                               sensitivity=0.3, solve_residual=0.99))  # rho(J) = 1: GMRES made no progress
    assert math.isnan(failed.values["sensitivity"])
    assert failed.values["rho"] == pytest.approx(0.8)  # the other diagnostics of that run stand


def test_a_correlation_over_too_few_runs_decides_nothing(tmp_path):
    """Six learnt runs (six seeds) whose rho(J) ranks the gain perfectly in reverse: the statistic and
    its interval are reported, but six pairs are too few for a verdict on C4; two more decide it."""
    def grid(n):
        return [fake_run(tmp_path / str(n), "standard", "outer", seed, id_best=1.0, ood_T=0.1,
                         ood_best=0.9 - 0.05 * seed, rho=0.5 + 0.05 * seed) for seed in range(n)]
    c4 = claims(grid(6))["verdicts"]["C4"]
    rho = c4["statistic"]["rho"]
    assert rho["runs"] == 6 and rho["spearman"] == pytest.approx(-1.0) and rho["ci"][1] < 0
    assert c4["verdict"] == "inconclusive" and "fewer than 8 learnt runs (have 6)" in c4["why"]
    assert claims(grid(8))["verdicts"]["C4"]["verdict"] == "supported"


def one_error_line(capsys) -> str:
    """What the command line said on stderr: exactly one line, `loopkit: error: ...`, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("loopkit: error: "), err
    return err


def test_runs_of_different_tasks_are_refused_naming_each_task(tmp_path, capsys):
    """A table of prefix-sums and sudoku runs together compares nothing: one task per call, and the
    message says which runs are of which task."""
    a, b = (fake_run(tmp_path / "p", "standard", "outer", s, id_best=1.0, ood_T=0.1, ood_best=0.9, task="prefix_sums")
            for s in range(2))
    c = fake_run(tmp_path / "s", "standard", "outer", 0, id_best=1.0, ood_T=0.1, ood_best=0.9, task="sudoku")
    with pytest.raises(ConfigError, match=re.escape(f"the runs are of 2 tasks (prefix_sums: {a}, {b}; sudoku: {c}); "
                                                    "give the runs of one task per call")):
        claims([a, b, c])
    d = fake_run(tmp_path / "d", "standard", "outer", 2, id_best=1.0, ood_T=0.1, ood_best=0.9)  # no task: the default
    claims([a, b, d])
    assert main(["claims", str(a), str(c), "--out", str(tmp_path / "out")]) == 2
    assert "2 tasks" in one_error_line(capsys) and not (tmp_path / "out").exists()


def test_one_run_given_twice_or_copied_is_not_two_seeds(tmp_path, monkeypatch):
    """The same folder under four spellings (a trailing slash, ./, a symlink) is one run, and a copy
    of a run (same configuration, same seed) is not a second seed: both are refused, named."""
    monkeypatch.chdir(tmp_path)
    run = fake_run(tmp_path / "runs", "standard", "outer", 0, id_best=1.0, ood_T=0.1, ood_best=0.9)
    (tmp_path / "link").symlink_to(run)
    spellings = ["runs/standard_outer_s0", "runs/standard_outer_s0/", "./runs/standard_outer_s0", "link"]
    with pytest.raises(ConfigError, match=re.escape(f"the run {run} is given 4 times ({', '.join(spellings)})")):
        claims(spellings)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with pytest.raises(ConfigError, match=re.escape(f"{run} and {copy} are one configuration with the same "
                                                    "train.seed (0): copies of one run, not two seeds")):
        claims([run, copy])


@pytest.mark.parametrize("text, message", [
    (None, r"config.yaml does not exist, so the run's task and switches are unknown"),
    ("", r"config.yaml is damaged: empty"),
    ("[1, 2]\n", r"config.yaml is damaged: not a mapping of sections"),
    ("model: [1, 2]\ntrain: {seed: 0}\n", r"config.yaml is damaged: its model section is not a mapping"),
])
def test_a_run_without_a_readable_config_is_refused(tmp_path, text, message):
    """Without its config a run's switches are empty: such runs would merge into one configuration."""
    runs = [fake_run(tmp_path, "standard", "outer", s, id_best=1.0, ood_T=0.1, ood_best=0.9) for s in range(2)]
    for run in runs:
        (run / "config.yaml").unlink()
        if text is not None:
            (run / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{runs[0]}/") + message):
        claims(runs)


DAMAGED = [  # (file, content, what the message says after the file's name)
    ("eval", {}, r": no summary of the eval sets"),
    ("eval", {"summary": {}, "curves": {}}, r": no summary of the eval sets"),
    ("eval", {"summary": {"easy": [1.0]}}, r" is damaged: summary.easy is a list, not a mapping"),
    ("eval", {"summary": {"easy": {"best_T": 3}}}, r" is damaged: summary.easy.best_exact is missing, not a number"),
    ("analysis", {}, r": no sets"),
    ("analysis", [], r" is damaged: not a mapping of results but a list"),
    ("analysis", '{"sets": {"easy": {"geometry": {"spectral_r', r" is damaged: not JSON \("),
    ("analysis", {"sets": ["easy"]}, r" is damaged: sets is a list, not a mapping"),
    ("analysis", {"sets": {"easy": "done"}}, r" is damaged: sets.easy is a string, not a mapping"),
    ("analysis", {"sets": {"easy": {"geometry": [0.5]}}}, r" is damaged: sets.easy.geometry is a list, not a mapping"),
    ("analysis", {"sets": {"easy": {"reachability": "x"}}}, r" is damaged: sets.easy.reachability is a string"),
    ("analysis", {"sets": {"easy": {"geometry": {"spectral_radius": 0.5}}}},
     r" is damaged: sets.easy.geometry.spectral_radius is a number, not a mapping"),
    ("analysis", {"sets": {"easy": {"geometry": {"spectral_radius": {"median": "0.5"}}}}},
     r" is damaged: sets.easy.geometry.spectral_radius.median is a string, not a number"),
]


@pytest.mark.parametrize("part, content, message", DAMAGED)
def test_a_damaged_results_file_is_named_in_one_line(tmp_path, capsys, part, content, message):
    """An empty, half-written or wrongly shaped eval or analysis file: one line naming the file, what
    is wrong and the command that writes it again, never a traceback or a table built from it."""
    runs = [fake_run(tmp_path, "standard", "outer", s, id_best=1.0, ood_T=0.1, ood_best=0.9) for s in range(2)]
    path = runs[1] / part / "results.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    again = f"; run `loopkit {part.replace('analysis', 'analyze')} {runs[1]} --force` again"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}{message}.*{re.escape(again)}$"):
        claims(runs)
    assert main(["claims", *map(str, runs)]) == 2
    assert str(path) in one_error_line(capsys)


def test_a_run_not_analysed_stays_optional(tmp_path):
    """No analysis/results.json is a run not analysed (its diagnostics unknown), not a damaged one."""
    runs = [fake_run(tmp_path, "standard", "outer", s, id_best=1.0, ood_T=0.1, ood_best=0.9, rho=0.5 + s)
            for s in range(2)]
    shutil.rmtree(runs[1] / "analysis")
    row = claims(runs)["rows"][0]
    assert row["rho"]["per_seed"] == [0.5, None] and row["id_best"]["mean"] == pytest.approx(100.0)
