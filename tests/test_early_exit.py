"""Halting rules of adaptive test-time compute: the replay on a full pass (`from_trace`) against
hand-built traces whose answers are known, the replay against the real runner on a tiny trained
model, and the CLI/config checks of the flags."""

import json

import pytest
import torch

from loopkit import cli, config
from loopkit.config import ConfigError
from loopkit.early_exit import compute_curve, format_compute, from_trace, run_until_converged, stable_mask
from loopkit.model import LoopedTransformer
from loopkit.tasks import build_task
from loopkit.tasks.base import Task
from loopkit.tasks.chess import Chess
from loopkit.tracing import SetTrace, output_change, output_state, trace_set
from loopkit.train import train
from test_train import TINY

T = 20


def hand_trace() -> SetTrace:
    """Three samples over T = 20 iterations (t = 1 .. 20 is column t - 1):
    0: the answer changes at t = 1..5, then holds; probabilities settle (< 1e-3) only from t = 10;
       correct from t = 5 on.
    1: the answer changes at every iteration; the residual falls below 1e-3 at t = 12; never correct.
    2: the answer changes at t = 1, 2, pauses at t = 3, 4, changes at t = 5, then holds; correct from t = 5.
    """
    changed = torch.zeros(3, T, dtype=torch.bool)
    changed[0, :5] = True
    changed[1] = True
    changed[2, [0, 1, 4]] = True
    prob_change = torch.full((3, T), 0.5)
    prob_change[0, 9:] = 1e-4
    prob_change[:, 0] = float("inf")
    residual = torch.ones(3, T)
    residual[1, 11:] = 1e-4
    t = torch.arange(1, T + 1)
    exact = torch.stack([(t >= 5).float(), torch.zeros(T), (t >= 5).float()])
    return SetTrace({"exact": exact, "token": exact}, residual, changed, prob_change)


@pytest.mark.parametrize("rule,params,iters,fired", [
    # stable: the answer held k iterations (k transitions without a change) -> stop at t = last change + k
    ("stable", {"k": 1}, [6, 20, 3], [True, False, True]),  # sample 2 pauses at t = 3: k = 1 is fooled
    ("stable", {"k": 2}, [7, 20, 4], [True, False, True]),  # ... and k = 2 too (t = 3, 4 unchanged)
    ("stable", {"k": 3}, [8, 20, 8], [True, False, True]),  # k = 3 outlasts the pause
    ("stable", {"k": 15}, [20, 20, 20], [True, False, True]),  # held exactly 15 at t = 20: fires at the cap
    ("stable", {"k": 16}, [20, 20, 20], [False, False, False]),
    # the probability guard: sample 0 also waits for its probabilities (t = 10); samples 1, 2 never settle
    ("stable", {"k": 3, "prob_tol": 1e-3}, [10, 20, 20], [True, False, False]),
    ("residual", {"tol": 1e-3}, [20, 12, 20], [False, True, False]),
    ("either", {"tol": 1e-3, "k": 3}, [8, 12, 8], [True, True, True]),
    ("either", {"tol": 1e-3, "k": 2}, [7, 12, 4], [True, True, True]),
])
def test_replay_on_a_hand_built_trace_stops_where_the_rule_says(rule, params, iters, fired):
    out = from_trace(hand_trace(), rule=rule, **params)
    assert out["iters"].tolist() == iters
    assert out["converged"].tolist() == fired
    expected_exact = [float(i >= 5) if s != 1 else 0.0 for s, i in enumerate(iters)]
    assert out["exact"].tolist() == expected_exact  # scores are read at the stop


def test_stable_mask_counts_iterations_since_the_last_change():
    changed = torch.tensor([[True, False, True, False, False, False]])
    streak = [0, 1, 0, 1, 2, 3]
    for k in (1, 2, 3):
        assert stable_mask(changed, torch.zeros(1, 6), k)[0].tolist() == [s >= k for s in streak]


def test_compute_curve_keeps_the_residual_keys_and_adds_the_new_rules():
    curve = compute_curve({"a": hand_trace()}, tolerances=(1e-3,), stable_k=(3, 16), prob_tols=(1e-3,))
    assert [r["tol"] for r in curve["tolerances"]] == [1e-3]  # as before: one row per tolerance
    assert {"exact", "mean_iters", "fixed_T_for_same_exact", "compute_saved"} <= set(curve["tolerances"][0]["pooled"])
    stable = {(r["k"], r["prob_tol"]): r for r in curve["stable"]}
    assert set(stable) == {(3, 0.0), (16, 0.0), (3, 1e-3), (16, 1e-3)}
    row = stable[(3, 0.0)]
    assert row["pooled"]["mean_iters"] == pytest.approx((8 + 20 + 8) / 3)
    # 2 of 3 right; the fixed T first reaching 2/3 is T = 5
    assert row["pooled"]["exact"] == pytest.approx(2 / 3) and row["pooled"]["fixed_T_for_same_exact"] == 5
    assert row["pooled"]["compute_saved"] == pytest.approx(1 - 12 / 5)  # negative: sample 1 never settles
    assert row["sets"]["a"]["fixed_T_for_same_exact"] == 5 and row["pooled"]["per_set_fixed_T"] == 5
    assert len(curve["either"]) == 2 and set(curve["best"]) == {"residual", "stable", "either"}
    assert curve["best_fixed_T"] == {"T": 5, "exact": pytest.approx(2 / 3)}
    assert "k=3" in format_compute(curve) and "dp<0.001" in format_compute(curve, all_rows=True)


def test_a_trace_without_output_changes_still_gives_the_residual_curve():
    old = SetTrace(hand_trace().scores, hand_trace().residual)  # as a SetTrace was built before
    curve = compute_curve({"a": old}, tolerances=(1e-3,))
    assert list(curve["best"]) == ["residual"] and "stable" not in curve
    with pytest.raises(ValueError, match="changed"):
        from_trace(old, rule="stable", k=2)
    with pytest.raises(ValueError, match="choose one of residual, stable, either"):
        from_trace(hand_trace(), 1e-3, rule="fixed")


def test_a_move_change_across_squares_counts_as_a_changed_answer():
    """Chess answers one move among all squares' planes: the best square can change while every
    square's own best plane stays, so stability must watch the flattened argmax."""
    before, after = torch.zeros(1, 64, 73), torch.zeros(1, 64, 73)
    before[0, 0, 0], before[0, 1, 0] = 5.0, 4.0
    after[0, 0, 0], after[0, 1, 0] = 3.0, 4.0
    def change(view):
        return output_change(output_state(view(None, after)), output_state(view(None, before)))

    assert not change(Task.output_logits)[0].item()
    moved, dp = change(Chess.output_logits)
    assert moved.item() and 0 < dp.item() <= 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(config.load(None, TINY + ["train.steps=10"]), run, progress=False)
    return run


@pytest.fixture(scope="module")
def traced():
    """An untrained model with its block's matrices scaled up 15x: its answers keep changing for
    1 to 12 iterations, depending on the input (a 10-step trained tiny model fixes its answer at
    t = 1, which would test nothing)."""
    cfg = config.load(None, TINY)
    task = build_task(cfg.task)
    torch.manual_seed(0)
    model = LoopedTransformer(cfg.model, 2, 2)
    with torch.no_grad():
        for p in model.blocks.parameters():
            if p.dim() == 2:
                p.mul_(15)
    s = task.eval_sets()[1]
    return task, model, s, trace_set(model, task, s, 40, 16, torch.device("cpu"))


@pytest.mark.parametrize("rule,k,prob_tol", [("stable", 1, 0.0), ("stable", 5, 0.0), ("stable", 2, "median"),
                                             ("either", 5, 0.0)])
def test_runner_matches_the_replay_for_the_new_rules(traced, rule, k, prob_tol):
    task, model, s, trace = traced
    tol = trace.residual[:, 10].median().item()  # about half the samples reach it by t = 11
    if prob_tol == "median":
        prob_tol = trace.prob_change[:, 5].median().item()
    replay = from_trace(trace, tol, rule=rule, k=k, prob_tol=prob_tol)
    logits, used, fired = run_until_converged(model, s.x, tol, 40, rule=rule, k=k, prob_tol=prob_tol,
                                              output=task.output_logits)
    assert torch.equal(used, replay["iters"]) and torch.equal(fired, replay["converged"])
    assert 1 < len(used.unique())  # samples really stopped at different iterations
    assert torch.equal(task.scores(logits, s.y)["exact"], replay["exact"])


def test_cli_until_converged_with_each_rule_and_eval_writes_them_all(tiny_run, capsys):
    for flags in (["--halt", "stable", "--stable-k", "2"],
                  ["--halt", "either", "--stable-k", "3", "--prob-tol", "0.1"]):
        assert cli.main(["eval", str(tiny_run), "--until-converged", "--max-iters", "12", "--out", "ee", "--force",
                         *flags]) == 0
        out = json.loads((tiny_run / "ee" / "until_converged.json").read_text())
        assert out["halt"] == flags[1] and out["stable_k"] == int(flags[3])
        assert all(1 <= r["mean_iters"] <= 12 for r in out["sets"].values()) and 1 <= out["pooled"]["mean_iters"] <= 12
    assert "early exit (either: r<0.001 | k=3, dp<0.1)" in capsys.readouterr().out
    # results are never replaced without --force
    before = (tiny_run / "ee" / "until_converged.json").read_text()
    assert cli.main(["eval", str(tiny_run), "--until-converged", "--max-iters", "5", "--out", "ee"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (tiny_run / "ee" / "until_converged.json").read_text() == before
    # --tol 0: the residual rule never fires, so every sample runs the cap (the fixed-T baseline)
    assert cli.main(["eval", str(tiny_run), "--until-converged", "--tol", "0", "--max-iters", "5", "--out", "ee",
                     "--force"]) == 0
    out = json.loads((tiny_run / "ee" / "until_converged.json").read_text())
    assert out["pooled"]["mean_iters"] == 5 and out["pooled"]["converged"] == 0
    assert cli.main(["eval", str(tiny_run), "--out", "ee"]) == 0
    saved = json.loads((tiny_run / "ee" / "results.json").read_text())["early_exit"]
    assert {"tolerances", "stable", "either", "best", "pooled_fixed_T_exact"} <= set(saved)
    assert "stable" in capsys.readouterr().out
    assert (tiny_run / "ee" / "accuracy_vs_compute.png").stat().st_size > 1000


@pytest.mark.parametrize("flags,message", [
    (["--until-converged", "--stable-k", "0"], "eval.stable_k must be >= 1"),
    (["--until-converged", "--prob-tol", "-1"], "eval.prob_tol must be >= 0"),
    (["eval.halt=sideways", "--until-converged"],
     "eval.halt: 'sideways' is not allowed; choose one of residual, stable, either"),
    (["--halt", "stable"], "--halt, --stable-k and --prob-tol choose the rule of --until-converged"),
])
def test_bad_halting_flags_name_the_key_and_the_allowed_values(tiny_run, capsys, flags, message):
    assert cli.main(["eval", str(tiny_run), *flags]) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_rule_flag_is_refused_by_the_parser(tiny_run, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["eval", str(tiny_run), "--until-converged", "--halt", "sometimes"])
    assert stop.value.code == 2
    assert "invalid choice: 'sometimes' (choose from" in capsys.readouterr().err


def test_config_checks_the_halting_keys():
    cfg = config.load(None, ["eval.halt=either", "eval.stable_k=5", "eval.prob_tol=1e-2"])
    assert (cfg.eval.halt, cfg.eval.stable_k, cfg.eval.prob_tol) == ("either", 5, 0.01)
    with pytest.raises(ConfigError, match="eval.stable_k must be >= 1"):
        config.load(None, ["eval.stable_k=0"])
    with pytest.raises(ConfigError, match="eval.stable_k: expected an integer"):
        config.load(None, ["eval.stable_k=2.5"])
