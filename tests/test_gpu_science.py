"""benchmarks/gpu_science.sh buys seeds on a lent GPU; its dry run at tiny sizes on the CPU proves
every stage (data, the sweep of standard vs internal recall over seeds, claims, report, the
tarball) works before a GPU's minutes are spent on it."""

import json
import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_science_dry_run_completes_every_stage(tmp_path):
    out = tmp_path / "science"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_science.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("data", "sweep", "claims", "report"):
        assert f"| {stage} | ok |" in summary, summary
    assert "6 [sweep] train exit 0" in summary and "6 [sweep] eval exit 0" in summary  # 2 placements x 3 seeds
    claims = json.loads((out / "claims.json").read_text())
    assert sorted(row["configuration"] for row in claims["rows"]) == ["recall=internal", "recall=standard"]
    assert len(claims["runs"]) == 6
    with tarfile.open(out / "gpu_science.tar.gz") as tar:
        names = tar.getnames()
    assert sum(n.endswith("eval/results.json") for n in names) == 6
    assert any(n.endswith("report.html") for n in names) and any(n.endswith("claims.md") for n in names)
    assert not any(n.endswith(".safetensors") for n in names)  # no weights, optimizer or random state
