import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loopkit import checkpoint, config
from loopkit.checkpoint import CheckpointError
from loopkit.config import ConfigError
from loopkit.evaluate import evaluate_run
from loopkit.train import lr_at, plan_step, step_generator, train

TINY = [
    "task.train_length=8", "task.eval_lengths=[8, 16]", "task.eval_samples=64",
    "model.width=16", "model.heads=2", "model.window=1", "model.causal=true",
    "train.max_iters=6", "train.batch_size=16", "train.warmup_steps=3", "train.threads=1",
    "train.log_every=2", "train.eval_every=4", "train.ckpt_every=5", "eval.max_iters=8",
]


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rows]


def test_schedule_and_plans():
    tc = config.load(None, ["train.steps=100", "train.warmup_steps=10", "train.lr=1.0", "train.min_lr_ratio=0.1"]).train
    assert lr_at(tc, 0) == pytest.approx(0.1) and lr_at(tc, 9) == pytest.approx(1.0)
    assert lr_at(tc, 100) == pytest.approx(0.1) and lr_at(tc, 55) == pytest.approx(0.55)
    tc = config.load(None, ["train.max_iters=10", "train.min_iters=4"]).train
    plans = [plan_step(tc, step_generator(0, s)) for s in range(300)]
    assert {p.iters for p in plans} == set(range(4, 11))
    assert all(0 <= p.n and 1 <= p.k and p.n + p.k <= p.iters for p in plans)
    fixed = config.load(None, ["train.max_iters=10", "train.progressive_k=3"]).train
    assert {plan_step(fixed, step_generator(0, s)).k for s in range(50)} == {3}


def test_prefix_sums_batches_of_random_length_are_a_function_of_the_step():
    from loopkit.tasks import build_task

    task = build_task({"name": "prefix_sums", "train_length": 12, "train_length_min": 4})
    lengths = [task.train_batch(2, step_generator(0, s))[0].shape[1] for s in range(200)]
    assert set(lengths) == set(range(4, 13))
    again = [task.train_batch(2, step_generator(0, s))[0].shape[1] for s in range(200)]
    assert again == lengths
    x, y = task.train_batch(3, step_generator(0, 5))
    assert torch.equal(y, x.cumsum(-1) % 2)


@pytest.mark.parametrize("extra", [["model.init_state=random"], ["train.alpha=0.5", "train.bptt=3", "train.min_iters=3",
                                             "task.train_length_min=3"]])
def test_killed_run_resumes_to_exactly_the_same_metrics(tmp_path, extra):
    cfg = config.load(None, TINY + ["train.steps=20"] + extra)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "cut", progress=False, stop_after=12)  # dies after step 12, last checkpoint at 10
    assert checkpoint.read_state(checkpoint.latest(tmp_path / "cut"))["step"] == 10
    assert metrics(tmp_path / "cut")[-1]["step"] == 12  # logged past the checkpoint: must be dropped
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


def test_a_run_killed_before_its_first_checkpoint_resumes_without_duplicate_log_lines(tmp_path):
    cfg = config.load(None, TINY + ["train.steps=8"])  # checkpoints every 5 steps, logs every 2
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "cut", progress=False, stop_after=4)  # logged steps 2 and 4, no checkpoint yet
    assert checkpoint.latest(tmp_path / "cut") is None and metrics(tmp_path / "cut")
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


def test_a_run_killed_while_writing_its_first_checkpoint_pointer_resumes(tmp_path, capsys):
    """Killed after the first checkpoint folder was renamed into place but before checkpoints/latest
    was written (a window a sweep's kill hit in CI): the resume takes that folder, says so, and
    ends where an uninterrupted run does."""
    cfg = config.load(None, TINY + ["train.steps=8"])  # checkpoints every 5 steps
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "cut", progress=False, stop_after=6)
    (tmp_path / "cut" / "checkpoints" / "latest").unlink()
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert "latest is missing; using the newest checkpoint, step_00000005" in capsys.readouterr().err
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


def test_sigkill_at_a_random_moment_then_resume(tmp_path):
    """A real SIGKILL, wherever it lands (also inside a checkpoint write), leaves a resumable run."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(config.dump(config.load(None, TINY + ["train.steps=60", "train.ckpt_every=3"])))
    cmd = [sys.executable, "-m", "loopkit.cli", "train", str(cfg_file), "--run-dir"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd + [str(tmp_path / "cut")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "cut" / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd + [str(tmp_path / "cut"), "--resume"], env=env, check=True, capture_output=True)
    subprocess.run(cmd + [str(tmp_path / "whole")], env=env, check=True, capture_output=True)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


def test_run_directory_is_never_mixed(tmp_path):
    cfg = config.load(None, TINY + ["train.steps=5"])
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path / "run", progress=False)
    other = config.load(None, TINY + ["train.steps=5", "model.recall=internal"])
    with pytest.raises(CheckpointError, match="model.recall: checkpoint has 'standard', config has 'internal'"):
        train(other, tmp_path / "run", resume=True, progress=False)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from loopkit.model import LoopedTransformer

    cfg = config.load(None, TINY + ["train.steps=5"])
    train(cfg, tmp_path / "run", progress=False)
    wider = LoopedTransformer(config.load(None, TINY + ["model.width=32"]).model, 2, 2)
    with pytest.raises(CheckpointError, match="wrong shape"):
        checkpoint.load_weights(checkpoint.latest(tmp_path / "run"), wider)


def test_checkpoints_are_plain_safetensors(tmp_path):
    cfg = config.load(None, TINY + ["train.steps=5"])
    train(cfg, tmp_path / "run", progress=False)
    files = sorted(p.name for p in checkpoint.latest(tmp_path / "run").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]


def test_short_training_learns_prefix_sums(tmp_path):
    """Loss falls and accuracy rises well above chance (0.5 per bit, 2^-8 per sequence)."""
    # T=10 >= length 8 + 1: a window-1 causal operator needs one iteration per position to carry parity.
    cfg = config.load(None, TINY + ["train.steps=400", "train.lr=0.001", "model.width=64", "model.heads=4",
                                    "train.batch_size=64", "train.max_iters=10", "eval.max_iters=20",
                                    "train.log_every=50", "train.eval_every=0", "train.ckpt_every=400"])
    torch.manual_seed(0)
    train(cfg, tmp_path / "run", progress=False)
    rows = metrics(tmp_path / "run")
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
    result = evaluate_run(tmp_path / "run")
    len8 = result["curves"]["len8"]
    assert max(len8["token"]) > 0.9 and max(len8["exact"]) > 0.5
    assert (tmp_path / "run" / "eval" / "accuracy_vs_T.png").stat().st_size > 1000


def test_implicit_gradient_matches_unrolled_on_a_contractive_model():
    """train.implicit: backprop by one adjoint solve at h_T equals full backprop through T iterations
    once the iteration has converged (an outer-norm model at init is a contraction: rho(J) < 1)."""
    import dataclasses

    from loopkit import fixedpoint
    from loopkit.tasks import build_task
    from loopkit.train import LoopObjective, StepPlan, build_model

    cfg = config.load(None, TINY + ["train.alpha=0", "train.implicit=true", "train.implicit_tol=1e-7"])
    task = build_task(cfg.task)
    torch.manual_seed(0)
    model = build_model(cfg, task)
    x, y = task.train_batch(4, torch.Generator().manual_seed(1))
    f, e, h0 = model.fixed_point_map(x)
    h_star = model(x, 80).state.detach()
    rho = fixedpoint.spectral_radius(f, h_star, e.detach()).rho
    assert rho.max() < 0.95  # the premise: a contraction
    grads = []
    for implicit in (True, False):
        model.zero_grad()
        objective = LoopObjective(model, task, dataclasses.replace(cfg.train, implicit=implicit))
        objective(x, y, StepPlan(80, 0, 80)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].norm() > 0
    assert (grads[0] - grads[1]).norm() < 1e-3 * grads[1].norm()
    with pytest.raises(ConfigError, match="train.implicit"):
        config.load(None, ["train.implicit=true"])  # alpha = 1: nothing to differentiate implicitly


def test_ddp_on_two_cpu_processes(tmp_path):
    """The same entry point under torchrun (gloo on CPU): two ranks train one model and rank 0 writes."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(config.dump(config.load(None, TINY + ["train.steps=6", "train.ckpt_every=3"])))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "loopkit.cli", "train", str(cfg_file), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert checkpoint.read_state(checkpoint.latest(tmp_path / "run"))["step"] == 6
    assert [r["step"] for r in metrics(tmp_path / "run")] == [2, 4, 6]


def test_a_diverging_run_stops_non_zero_and_keeps_its_last_finite_checkpoint(tmp_path, capsys):
    from safetensors.torch import load_file

    from loopkit.cli import main

    run = tmp_path / "run"
    cfg = config.load(None, TINY + ["train.steps=10", "train.keep_checkpoints=1"])
    train(cfg, run, progress=False)
    cfg_file = tmp_path / "more.yaml"  # the same run continued with a rate that blows it up
    cfg_file.write_text(config.dump(config.load(None, TINY + ["train.steps=40", "train.keep_checkpoints=1",
                                                              "train.lr=1e6", "train.grad_clip=1e6"])))
    assert main(["train", str(cfg_file), "--run-dir", str(run), "--resume", "--allow-changes"]) == 2
    errors = [ln.strip("\r") for ln in capsys.readouterr().err.splitlines()
              if ln.strip("\r").startswith("loopkit: error:")]
    assert len(errors) == 1 and errors[0].startswith("loopkit: error: training diverged by step")
    assert "step_00000010" in errors[0] and "train.lr (now 1e+06)" in errors[0]
    kept = checkpoint.latest(run)
    assert kept.name == "step_00000010"  # pruning (keep 1) did not replace it with a broken one
    assert all(torch.isfinite(w).all() for w in load_file(kept / "model.safetensors").values())
    assert all(math.isfinite(r["loss"]) for r in metrics(run))  # nothing non-finite was logged


def test_a_second_train_on_a_locked_run_folder_is_refused(tmp_path):
    import fcntl

    cfg = config.load(None, TINY + ["train.steps=5"])
    train(cfg, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / ".lock", "a") as held:  # another process's lock, as the OS sees it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = (tmp_path / "run" / "metrics.jsonl").read_text()
        with pytest.raises(ConfigError, match="is in use by another loopkit train process"):
            train(config.load(None, TINY + ["train.steps=10"]), tmp_path / "run", resume=True, progress=False)
        assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    train(config.load(None, TINY + ["train.steps=10"]), tmp_path / "run", resume=True, progress=False,
          allow_changes=True)  # free again
    with pytest.raises(ConfigError, match="holds no run"):
        train(cfg, tmp_path / "nothing", resume=True, progress=False)
    assert not (tmp_path / "nothing").exists()


def test_latest_never_points_outside_the_run(tmp_path):
    cfg = config.load(None, TINY + ["train.steps=5"])
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    (tmp_path / "a" / "checkpoints" / "latest").write_text("../../b/checkpoints/step_00000005")
    with pytest.raises(CheckpointError, match="not a checkpoint of this run"):
        checkpoint.latest(tmp_path / "a")


def test_resume_keeps_the_record_true(tmp_path):
    """A changed recipe is refused unless allowed (then recorded); a log line cut by a power cut and
    a half-written checkpoint folder left by a kill do not stop the resume."""
    import yaml

    run = tmp_path / "run"
    cfg = config.load(None, TINY + ["train.steps=10"])
    train(cfg, run, progress=False, stop_after=7)  # checkpoint at 5, log lines up to 6
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "loss": 0.6')  # the power cut
    (run / "checkpoints" / ".tmp-step_00000010-999").mkdir()
    changed = config.load(None, TINY + ["train.steps=10", "train.lr=0.002"])
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.001 -> 0\.002.*--allow-changes"):
        train(changed, run, resume=True, progress=False)
    train(cfg, run, resume=True, progress=False)
    train(cfg, tmp_path / "whole", progress=False)
    assert metrics(run) == metrics(tmp_path / "whole")
    assert not list((run / "checkpoints").glob(".tmp-step_*"))
    longer = config.load(None, TINY + ["train.steps=12"])
    train(longer, run, resume=True, progress=False, allow_changes=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 12
    record = json.loads((run / "config_changes.jsonl").read_text())
    assert record == {"step": 10, "changes": ["train.steps: 10 -> 12"]}


def test_an_older_name_of_a_position_resumes_under_its_current_name():
    """position grid (before tasks declared their axes) builds what axes builds: a checkpoint saved
    under grid resumes under axes; a genuinely different position is still refused."""
    cfg = config.load(Path(__file__).parent.parent / "loopkit" / "configs" / "sudoku.yaml", ["model.position=axes"])
    stored = cfg.to_dict()
    stored["model"]["position"] = "grid"
    checkpoint.check_same_model(stored, cfg, Path("ckpt"))
    stored["model"]["position"] = "relative"
    with pytest.raises(CheckpointError, match="model.position: checkpoint has 'relative', config has 'axes'"):
        checkpoint.check_same_model(stored, cfg, Path("ckpt"))


def test_a_checkpoint_written_under_older_key_names_resumes_without_a_recipe_change():
    """train.iters / train.iters_min / eval.iters are the older names of the max_iters / min_iters
    keys: a run saved under them resumes unchanged, and a real difference is still named."""
    from loopkit.train import config_changes

    cfg = config.load(None, TINY + ["train.steps=10"])
    stored = cfg.to_dict()
    stored["train"]["iters"] = stored["train"].pop("max_iters")
    stored["train"]["iters_min"] = stored["train"].pop("min_iters")
    stored["eval"]["iters"] = stored["eval"].pop("max_iters")
    assert config_changes(stored, cfg) == []
    stored["train"]["iters"] += 1
    assert config_changes(stored, cfg) == [f"train.max_iters: {cfg.train.max_iters + 1} -> {cfg.train.max_iters}"]
