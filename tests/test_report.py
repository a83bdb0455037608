"""`loopkit report`: a self-contained page that a headless browser renders with its figures drawn."""

import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from loopkit.cli import main
from test_claims import fake_run


def with_curves(run: Path, slope: float) -> Path:
    """Give a fake run accuracy-vs-T curves and residual traces, as `loopkit eval` writes them."""
    import json

    path = run / "eval" / "results.json"
    res = json.loads(path.read_text())
    res["curves"] = {name: {"exact": [min(1.0, slope * t) for t in range(1, 33)]} for name in res["summary"]}
    res["median_residual"] = {name: [0.5**t for t in range(1, 33)] for name in res["summary"]}
    path.write_text(json.dumps(res))
    return run


@pytest.fixture
def grid(tmp_path):
    for seed in range(2):
        with_curves(fake_run(tmp_path / "grid", "standard", "outer", seed, id_best=1.0, ood_T=0.1, ood_best=0.8), 0.05)
        with_curves(fake_run(tmp_path / "grid", "none", "outer", seed, id_best=0.9, ood_T=0.0, ood_best=0.1,
                             sensitivity=0.0, rho=1.1), 0.01)
    return tmp_path / "grid"


def test_report_is_one_file_with_embedded_figures(grid):
    assert main(["report", str(grid)]) == 0
    page = (grid / "report.html").read_text()
    assert page.count("<img") == 4 and page.count("data:image/png;base64,") == 4
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline
    assert "C1:" in page and "recall=standard" in page


def test_report_refuses_runs_of_two_tasks(grid, capsys):
    """A sweep folder that also holds a run of another task: no page mixing them, one line naming them."""
    with_curves(fake_run(grid, "internal", "outer", 0, id_best=1.0, ood_T=0.1, ood_best=0.8, task="sudoku"), 0.05)
    assert main(["report", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loopkit: error: the runs are of 2 tasks (sudoku: ") and "; prefix_sums: " in err
    assert err.count("\n") == 1 and not (grid / "report.html").exists()


@pytest.mark.parametrize("part, damage, message", [
    ("eval", lambda res: res["median_residual"].update(easy=["0.5"] * 4),
     "eval/results.json is damaged: an entry of median_residual.easy is a string, not a number"),
    ("analysis", lambda res: res["sets"]["hard"].update(init_dependence=[0.1]),
     "analysis/results.json is damaged: sets.hard.init_dependence is a list, not a mapping"),
])
def test_report_names_a_damaged_file_as_claims_does(grid, capsys, part, damage, message):
    """The report reads the files through the checks of `loopkit claims`: one line, no traceback."""
    import json

    path = grid / "none_outer_s1" / part / "results.json"
    res = json.loads(path.read_text())
    damage(res)
    path.write_text(json.dumps(res))
    assert main(["report", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"loopkit: error: {path}") and message in err and err.count("\n") == 1


def test_report_renders_in_headless_chromium(grid, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    assert main(["report", str(grid)]) == 0
    shot = tmp_path / "shot.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1300,2400", "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
                           (grid / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console_errors = [ln for ln in done.stderr.splitlines() if "CONSOLE" in ln and "ERROR" in ln.upper()]
    assert not console_errors, console_errors
    pixels = matplotlib.image.imread(shot)[..., :3]
    drawn = (pixels < 0.9).any(-1).mean()  # share of pixels that are not (near) white
    assert drawn > 0.03, f"the page looks blank ({drawn:.1%} drawn)"
    colored = ((pixels.max(-1) - pixels.min(-1)) > 0.2).mean()  # plot lines and bands are coloured; text is grey
    assert colored > 0.002, f"no figure appears to be drawn ({colored:.2%} coloured pixels)"
