"""`loopkit analyze` and adaptive test-time compute on real (tiny) runs."""

import json

import pytest
import torch

from loopkit import cli, config
from loopkit.analysis import analyze_model, analyze_run, cluster_inputs, format_summary, summary_rows
from loopkit.early_exit import from_trace, run_until_converged
from loopkit.model import LoopedTransformer
from loopkit.runs import load_run
from loopkit.tasks.prefix_sums import held_out
from loopkit.tracing import trace_set
from loopkit.train import train
from test_train import TINY


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(config.load(None, TINY + ["train.steps=10"]), run, progress=False)
    return run


def tiny_model(recall: str) -> LoopedTransformer:
    cfg = config.load(None, TINY + [f"model.recall={recall}"])
    torch.manual_seed(0)
    return LoopedTransformer(cfg.model, 2, 2)


def test_early_exit_matches_the_rule_replayed_on_a_full_pass(tiny_run):
    cfg, task, model, _ = load_run(tiny_run)
    s = task.eval_sets()[1]
    trace = trace_set(model, task, s, 40, 16, torch.device("cpu"))
    tol = trace.residual[:, 10].median().item()  # about half the samples stop by t = 11
    replay = from_trace(trace, tol)
    logits, used, converged = run_until_converged(model, s.x, tol, 40)
    assert torch.equal(used, replay["iters"]) and torch.equal(converged, replay["converged"])
    assert 1 < len(used.unique())  # samples really stopped at different iterations
    assert torch.equal(task.scores(logits, s.y)["exact"], replay["exact"])


def test_no_recall_has_zero_sensitivity_and_recall_does_not():
    """Claim C1 (docs/design.md, "Claims"): without recall the step ignores e, so dh*/de = 0 exactly
    at any end state."""
    x = torch.randint(0, 2, (4, 8), generator=torch.Generator().manual_seed(0))
    for recall, zero in (("none", True), ("standard", False), ("internal", False)):
        report = analyze_model(tiny_model(recall).requires_grad_(False), x, max_iters=30, tol=1e-3, n_inits=2)
        sens = report["sensitivity"]["norm"]["max"]
        assert (sens == 0) if zero else (sens > 1e-3), (recall, sens)
        assert 0 < report["geometry"]["spectral_radius"]["median"] < 10
        assert report["init_dependence"]["n_inits"] == 2


def test_analyze_run_writes_results_figures_and_table(tiny_run):
    result = analyze_run(tiny_run, samples=4, max_iters=12, sets=["len16"])
    assert list(result["sets"]) == ["len16"]
    saved = json.loads((tiny_run / "analysis" / "results.json").read_text())
    assert saved["sets"]["len16"]["reachability"]["n_samples"] == 4
    for fig in ("residuals.png", "geometry.png", "sensitivity.png"):
        assert (tiny_run / "analysis" / fig).stat().st_size > 1000
    assert "len16" in format_summary(result)
    # an IFT solve that stopped far from its tolerance gives no sensitivity in the table, not its iterate
    result["sets"]["len16"]["sensitivity"]["linear_residual_max"] = 0.99
    assert summary_rows(result)[0]["sensitivity"] is None


def test_end_state_clusters_take_more_inputs_than_the_eval_set_from_the_held_out_side(tiny_run):
    """The clustering asks for more inputs (200) than the run evaluated (64): the set is made again
    at that size from evaluation's generator, so every input is still a held-out test string."""
    cfg, task, _, _ = load_run(tiny_run)
    s = task.eval_sets()[0]
    x = cluster_inputs(cfg, task, [s], 200)["len8"]
    assert len(s.x) == 64 and x.shape == (200, s.x.shape[1])
    assert held_out(x).all()  # length 8 has only 16 held-out strings: they repeat, none is a training one
    assert torch.equal(cluster_inputs(cfg, task, [s], 10)["len8"], s.x[:10])
    result = analyze_run(tiny_run, samples=2, max_iters=4, sets=["len8"], cluster_samples=200)
    assert result["sets"]["len8"]["end_state_clusters"]["n_inputs"] == 200


def test_cli_analyze_and_until_converged(tiny_run, capsys):
    assert cli.main(["analyze", str(tiny_run), "--sets", "len16"]) == 2  # analysed already: --force needed
    assert "pass --force to replace it" in capsys.readouterr().err
    assert cli.main(["analyze", str(tiny_run), "--force", "--sets", "len99"]) == 2
    assert "len99" in capsys.readouterr().err
    assert cli.main(["eval", str(tiny_run), "--until-converged", "--tol", "1e-2", "--max-iters", "12"]) == 0
    out = json.loads((tiny_run / "eval" / "until_converged.json").read_text())
    assert set(out["sets"]) == {"len8", "len16"} and all(1 <= r["mean_iters"] <= 12 for r in out["sets"].values())


def test_every_sample_is_classed_by_the_attractor_it_ends_on():
    """Fixed point (rho(J) < 1), attracting cycle (Floquet multipliers < 1) or neither: shares sum to
    one, agree with the per-sample kinds, and the optional worst-direction sensitivity is reported."""
    x = torch.randint(0, 2, (6, 8), generator=torch.Generator().manual_seed(1))
    model = tiny_model("standard").requires_grad_(False)
    report = analyze_model(model, x, max_iters=30, tol=1e-3, n_inits=2, sensitivity_norm=True)
    att = report["attractors"]
    kinds = att["per_sample"]["kind"]
    shares = {k: kinds.count(k) / len(kinds) for k in ("fixed_point", "cycle", "neither")}
    assert shares["fixed_point"] == pytest.approx(att["fixed_point_fraction"])
    assert shares["cycle"] == pytest.approx(att["attracting_cycle_fraction"])
    assert sum(shares.values()) == pytest.approx(1.0)
    converged = report["reachability"]["per_sample"]["converged"]
    rho = report["geometry"]["per_sample"]["spectral_radius"]
    assert all((k == "fixed_point") == (c and r < 1) for k, c, r in zip(kinds, converged, rho))
    # the worst direction is at least as sensitive as the random one
    assert report["sensitivity_norm"]["norm"]["max"] >= report["sensitivity"]["norm"]["max"] * 0.999
