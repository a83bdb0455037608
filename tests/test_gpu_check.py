"""benchmarks/gpu_check.sh is the script a lent GPU runs; its dry run at tiny sizes on the CPU
proves every stage works before a GPU's minutes are spent on it."""

import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_completes_every_stage(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("preflight", "tests", "throughput", "memory", "cudagraph_train", "sudoku_data", "sudoku_calibration",
                  "sudoku_train", "sudoku_eval"):
        assert f"| {stage} | ok |" in summary, summary
    assert "| sudoku | 32 | 81 | auto+compile" in summary  # the throughput table, compiled row included
    assert "| 8 | progressive |" in summary  # the memory table
    assert "compiled: ran; loss falls: True; within 0.1 of eager's at every logged step: True" in summary
    assert (out / "sudoku_eval.json").stat().st_size > 0
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("sudoku/eval/results.json") for n in names)
    assert not any(n.endswith(("optimizer.safetensors", "rng.safetensors")) for n in names)
