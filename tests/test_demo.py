"""`loopkit demo` on a tiny recipe: both models train side by side (one process each), resume
instead of retraining, and the table gives every length's best T; a failing model is one line."""

import os

import pytest

from loopkit import checkpoint
from loopkit.config import ConfigError
from loopkit.demo import DEMO_MODELS, run_demo

TINY = ["task.train_length=6", "task.eval_lengths=[6, 12]", "task.eval_samples=16", "model.width=16",
        "model.heads=2", "train.max_iters=8", "train.batch_size=16", "train.steps=6", "train.warmup_steps=2",
        "train.log_every=2", "train.eval_every=0", "train.ckpt_every=3", "eval.max_iters=16", "eval.batch_size=16"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side-by-side training needs two cores")
def test_demo_trains_both_models_side_by_side_and_resumes(tmp_path, capsys):
    results = run_demo(tmp_path, extra=TINY)
    out = capsys.readouterr().out
    assert "(side by side)" in out and "best (T)" in out and "fixed-point residual r_t" in out
    last = results["recall_outer"]["median_residual"]["len12"][-1]
    assert f"{last:9.1e}" in out  # the diagnosis is the evaluation's own residual trace
    for name in DEMO_MODELS:
        assert checkpoint.read_state(checkpoint.latest(tmp_path / name))["step"] == 6
        assert (tmp_path / name / "demo.log").is_file()
        best = results[name]["summary"]["len12"]
        assert f"({best['best_T']})" in out
    stamp = (tmp_path / "no_recall" / "metrics.jsonl").stat().st_mtime_ns
    run_demo(tmp_path, extra=TINY)  # finished runs are evaluated again, not retrained
    assert "[demo] training" not in capsys.readouterr().out
    assert (tmp_path / "no_recall" / "metrics.jsonl").stat().st_mtime_ns == stamp


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side-by-side training needs two cores")
def test_a_failing_demo_model_is_one_line_naming_it(tmp_path):
    """A run folder left by a demo with another recipe: its process refuses to resume it, and the
    demo ends with that refusal in one line naming the model."""
    run_demo(tmp_path, extra=TINY)
    for name in DEMO_MODELS:
        for ckpt in (tmp_path / name / "checkpoints").iterdir():
            if ckpt.name.startswith("step_00000006"):
                ckpt.rename(ckpt.with_name("old"))  # as if killed before its last checkpoint
        (tmp_path / name / "checkpoints" / "latest").write_text("step_00000003")
    with pytest.raises(ConfigError, match=r"demo training failed - recall_outer: .*train.lr.*; no_recall: "):
        run_demo(tmp_path, extra=[*TINY, "train.lr=0.5"])
