"""`loopkit sweep`: a grid of runs that survives kills, skips finished work and isolates failures."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loopkit.config import ConfigError
from loopkit.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task.train_length=8", "task.eval_lengths=[8, 16]", "task.eval_samples=16",
    "model.width=16", "model.heads=2", "model.window=1", "model.causal=true",
    "train.max_iters=6", "train.progressive_k=3", "train.batch_size=16", "train.warmup_steps=3", "train.steps=12",
    "train.log_every=2", "train.eval_every=0", "train.ckpt_every=3", "eval.max_iters=8", "eval.batch_size=16",
]


def write_sweep(path: Path, **extra) -> Path:
    spec = {"base": str(ROOT / "loopkit" / "configs" / "prefix_sums.yaml"), "overrides": TINY,
            "axes": {"model.recall": ["standard", "internal"]}, "seeds": [0], "stages": ["train", "eval"], **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rows]


def test_sweep_names_runs_by_their_switches_and_checks_every_config_first(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 1]), tmp_path / "out")
    assert [p.name for p in sweep.points] == ["recall-standard_seed-0", "recall-internal_seed-0",
                                              "recall-standard_seed-1", "recall-internal_seed-1"]
    assert "train.seed=1" in sweep.points[2].overrides
    bad = write_sweep(tmp_path / "bad.yaml", axes={"model.norm": ["outer", "sideways"]})
    with pytest.raises(ConfigError, match="run norm-sideways_seed-0: model.norm: 'sideways' is not allowed"):
        load_sweep(bad, tmp_path / "out2")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep(write_sweep(tmp_path / "typo.yaml", seed=[1]), tmp_path / "out3")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_named_variants_are_crossed_with_the_axes_and_seeds(tmp_path):
    spec = write_sweep(tmp_path / "v.yaml", axes={"model.norm": ["outer"]}, seeds=[0, 1],
                       variants={"standard": ["model.recall=standard"],
                                 "internal_h0input": ["model.recall=internal", "model.init_state=input"]})
    sweep = load_sweep(spec, tmp_path / "out")
    # (write_sweep's yaml.safe_dump sorts the variant names: the sweep keeps the file's order)
    assert [p.name for p in sweep.points] == ["internal_h0input_norm-outer_seed-0", "standard_norm-outer_seed-0",
                                              "internal_h0input_norm-outer_seed-1", "standard_norm-outer_seed-1"]
    assert {"model.recall=internal", "model.init_state=input", "train.seed=1"} <= set(sweep.points[2].overrides)
    with pytest.raises(ConfigError, match="'variants' maps a name"):
        load_sweep(write_sweep(tmp_path / "w.yaml", variants={"a b": []}), tmp_path / "out")


def test_killed_sweep_rerun_equals_an_uninterrupted_one_and_a_third_run_redoes_nothing(tmp_path):
    spec = write_sweep(tmp_path / "s.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "loopkit.cli", "sweep", str(spec), "--workers", "2", "--out"]
    subprocess.run(cmd + [str(tmp_path / "whole")], env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(cmd + [str(tmp_path / "cut")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "cut").glob("*/checkpoints/latest")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and every run it started
    proc.wait()
    done = subprocess.run(cmd + [str(tmp_path / "cut")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("recall-standard_seed-0", "recall-internal_seed-0"):
        assert metrics(tmp_path / "cut" / name) == metrics(tmp_path / "whole" / name)
        assert (tmp_path / "cut" / name / "eval" / "results.json").is_file()
    logs = {p: p.read_text() for p in (tmp_path / "cut").glob("*/sweep.log")}
    assert run_sweep(spec, tmp_path / "cut", progress=False) == []
    assert {p: p.read_text() for p in (tmp_path / "cut").glob("*/sweep.log")} == logs  # nothing was rerun


def test_a_failing_run_does_not_stop_the_others(tmp_path):
    # an untied stack has no fixed-point map, so its analyze stage fails; the tied run must finish
    spec = write_sweep(tmp_path / "s.yaml", overrides=TINY + ["train.alpha=0"], axes={"model.tied": [True, False]},
                       stages=["train", "analyze"], analyze_args=["--samples", "4", "--min-sv-budget", "0"])
    failures = run_sweep(spec, tmp_path / "out", workers=2, progress=False)
    assert [name for name, _ in failures] == ["tied-false_seed-0"]
    assert "analyze failed" in failures[0][1]
    assert (tmp_path / "out" / "tied-true_seed-0" / "analysis" / "results.json").is_file()
    assert "no fixed-point map" in (tmp_path / "out" / "tied-false_seed-0" / "sweep.log").read_text()


def test_the_ray_backend_runs_a_sweep_on_a_local_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'loopkit[ray]')")
    spec = write_sweep(tmp_path / "s.yaml")
    assert run_sweep(spec, tmp_path / "ray", workers=2, progress=False, backend="ray") == []
    assert run_sweep(spec, tmp_path / "local", workers=2, progress=False) == []
    for name in ("recall-standard_seed-0", "recall-internal_seed-0"):
        assert metrics(tmp_path / "ray" / name) == metrics(tmp_path / "local" / name)


def test_a_misspelt_stage_option_is_refused_before_any_run_starts(tmp_path, capsys):
    from loopkit.cli import main

    path = write_sweep(tmp_path / "s.yaml", stages=["train", "eval", "analyze"],
                       analyze_args=["--samples", "4", "--sensitivity-norms"])
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "analyze_args" in err and "--sensitivity-norms" in err
    assert not (tmp_path / "out").exists()

    path = write_sweep(tmp_path / "t.yaml", eval_args=["--max-iters", "many"])
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "eval_args" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "loopkit" / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_loads_and_its_stage_options_parse(path, tmp_path):
    from loopkit.cli import check_stage_args

    sweep = load_sweep(path, tmp_path / "out")
    assert sweep.points and len({p.name for p in sweep.points}) == len(sweep.points)
    check_stage_args(str(path), sweep.eval_args, sweep.analyze_args)


def test_a_value_that_would_lead_out_of_the_sweep_folder_is_refused(tmp_path, capsys):
    from loopkit.cli import main

    # train.device is any text to the config: the folder name is checked whatever the config takes
    for axes in ({"train.device": ["cpu", "../../escape"]}, {"model.norm": ["a/b"]}, {"model.norm": [".."]}):
        spec = write_sweep(tmp_path / "s.yaml", axes=axes)
        key, values = next(iter(axes.items()))
        with pytest.raises(ConfigError, match=rf"s.yaml: run .*: axis {key} value '{re.escape(values[-1])}' would put "
                                              rf"the run outside"):
            load_sweep(spec, tmp_path / "a" / "b" / "out")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "a" / "b" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("loopkit: error: ") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written, inside or out


def test_two_runs_never_share_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="s.yaml: 'seeds' lists 0 twice"):
        load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 0]), tmp_path / "out")
    with pytest.raises(ConfigError, match="s.yaml: axis model.recall lists none twice"):
        load_sweep(write_sweep(tmp_path / "s.yaml", axes={"model.recall": ["none", "none"]}), tmp_path / "out")
    # distinct values whose names join to the same folder (refused before the config sees the values)
    spec = write_sweep(tmp_path / "s.yaml", axes={"model.norm": ["outer", "outer_recall-a"],
                                                  "model.recall": ["a_recall-b", "b"]})
    with pytest.raises(ConfigError, match="s.yaml: the runs model.norm=outer model.recall=a_recall-b train.seed=0 and "
                                          "model.norm=outer_recall-a model.recall=b train.seed=0 would share the "
                                          "folder norm-outer_recall-a_recall-b_seed-0"):
        load_sweep(spec, tmp_path / "out")


def _pids_running(text: str) -> list[int]:
    """Live (not zombie) processes whose command line holds text."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if proc.name.isdigit() and text in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_stage_dies_with_a_killed_sweep_and_the_rerun_finishes(tmp_path):
    spec = write_sweep(tmp_path / "s.yaml", overrides=TINY + ["train.steps=1000", "train.ckpt_every=100"],
                       axes={"model.recall": ["standard"]}, stages=["train"])
    run_dir = tmp_path / "out" / "recall-standard_seed-0"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "loopkit.cli", "sweep", str(spec), "--out", str(tmp_path / "out"), "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert _pids_running(str(run_dir)), "no train stage found mid-training"
        os.kill(proc.pid, signal.SIGKILL)  # the sweep alone
        proc.wait()
        deadline = time.time() + 3  # (the stage would train for several seconds more)
        while _pids_running(str(run_dir)) and time.time() < deadline:
            time.sleep(0.05)
        assert not _pids_running(str(run_dir)), "the train stage outlived the killed sweep"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # an orphan, if any, would train on
        except ProcessLookupError:
            pass
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sweep complete" in done.stdout and metrics(run_dir)[-1]["step"] == 1000


def test_a_run_locked_by_another_process_fails_saying_so(tmp_path):
    import fcntl

    spec = write_sweep(tmp_path / "s.yaml", axes={"model.recall": ["standard"]}, stages=["train"])
    run_dir = tmp_path / "out" / "recall-standard_seed-0"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live `loopkit train` holds it
        [(name, reason)] = run_sweep(spec, tmp_path / "out", progress=False)
    assert name == "recall-standard_seed-0" and "\n" not in reason
    assert reason.startswith("train failed (exit 2): ") and "in use by another loopkit train process" in reason


def test_a_run_with_a_damaged_checkpoint_pointer_fails_alone(tmp_path, capsys):
    from loopkit import config
    from loopkit.cli import main
    from loopkit.sweep import stage_done

    spec = write_sweep(tmp_path / "s.yaml", stages=["train"])
    sweep = load_sweep(spec, tmp_path / "out")
    damaged = sweep.points[0]
    (damaged.run_dir / "checkpoints").mkdir(parents=True)
    (damaged.run_dir / "config.yaml").write_text(yaml.safe_dump(config.load(sweep.base, damaged.overrides).to_dict()))
    (damaged.run_dir / "checkpoints" / "latest").write_text("garbage")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "loopkit: 1 run(s) failed:" in err and "Traceback" not in err
    assert f"  {damaged.name}: train failed (exit 2): " in err and "latest names 'garbage'" in err
    assert metrics(sweep.points[1].run_dir)[-1]["step"] == 12  # the other run trained to the end
    (damaged.run_dir / "checkpoints" / "latest").write_text("step_00000009")  # a step whose folder is missing
    assert not stage_done(damaged, "train", sweep.base)


def test_a_ray_address_where_nothing_answers_is_refused_at_once(tmp_path):
    spec = write_sweep(tmp_path / "s.yaml")
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "loopkit.cli", "sweep", str(spec), "--out", str(tmp_path / "out"),
                           "--backend", "ray", "--address", "127.0.0.1:1"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert time.time() - started < 15
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("loopkit: error: --backend ray --address 127.0.0.1:1: no Ray cluster answers there "
                                  "(connection refused)")
    from loopkit.sweep import check_address

    for bad in ("127.0.0.1", "127.0.0.1:port", "127.0.0.1:0", "ray://:10001"):
        with pytest.raises(ConfigError, match=f"--address '{bad}' is not a Ray address"):
            check_address(bad)
    check_address("auto")  # Ray's own forms that name no host and port are Ray's to read
