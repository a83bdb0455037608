"""`loopkit.load`: the README's example runs exactly as written, and the API's pieces agree with
the model and the task."""

import re
from pathlib import Path

import pytest
import torch

import loopkit
from loopkit.config import ConfigError
from loopkit.errors import LoopkitError

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-example:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its loopkit.load example"
    return match.group(1)


def test_the_readme_example_runs_as_written(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "valid solution" in out  # the committed model solves this easy puzzle
    assert re.search(r"answer settled at t = \d+", out) and re.search(r"rho\(J\) = [\d.]+", out)


def test_predict_trace_and_parsing_agree_with_the_model():
    run = loopkit.load(ROOT / "results" / "sudoku" / "standard_outer")
    puzzle = "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."
    x = run.inputs(puzzle)
    assert x.shape == (1, 81) and int((x == 0).sum()) == puzzle.count(".")
    trace = run.trace(puzzle, max_iters=20)
    assert trace.answers.shape == (20, 1, 81) and trace.residuals.shape == (20, 1)
    for t in (1, 7, 20):  # the trace's answer after t iterations is predict(max_iters=t)
        assert torch.equal(trace.answers[t - 1], run.predict(puzzle, max_iters=t))
    settled = trace.settled_at()[0]
    assert all(torch.equal(a, trace.answers[-1]) for a in trace.answers[settled - 1:])
    assert settled == 1 or not torch.equal(trace.answers[settled - 2], trace.answers[-1])
    with pytest.raises(ConfigError, match="position 3"):
        run.inputs("12x" + "." * 78)


@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory):
    """A tiny untrained prefix-sums run: the argument checks need a model, not a good one."""
    from test_reliability import tiny_checkpoint

    run = tmp_path_factory.mktemp("api") / "run"
    tiny_checkpoint(run, ["model.width=8", "model.heads=2", "train.max_iters=2"])
    return loopkit.load(run)


# issue 24, item 11: a bad argument is a ValueError naming it, raised before the model runs
@pytest.mark.parametrize("call, message", [
    (lambda r: r.trace("0101", max_iters=-5), r"max_iters=-5: give a whole number >= 1"),
    (lambda r: r.predict("0101", max_iters=0), r"max_iters=0: give a whole number >= 1"),
    (lambda r: r.predict("0101", max_iters=2.5), r"max_iters=2\.5: give a whole number"),
    (lambda r: r.predict(torch.tensor([[0, 1, 5]])), r"x: token 5 is outside this task's vocabulary \(0 to 1\)"),
    (lambda r: r.predict(torch.tensor([0, -1, 1])), r"x: token -1 is outside this task's vocabulary"),
    (lambda r: r.predict(torch.tensor([[0.0, 1.0]])), r"x: a tensor of token ids must be integer"),
    (lambda r: r.predict(torch.zeros(2, 2, 2, dtype=torch.long)),
     r"shape \(L,\) or \(B, L\), got torch\.int64 \(2, 2, 2\)"),
    (lambda r: r.predict(torch.zeros(1, 0, dtype=torch.long)), r"x: the input is empty"),
    (lambda r: r.trace(["0101", "011"]), r"x: the inputs have 2 different lengths \(3, 4\); give inputs of one length"),
    (lambda r: r.predict(42), r"x: give a tensor of token ids, an input as text, or a list of texts; got 42"),
    (lambda r: r.predict([]), r"x: give a tensor of token ids"),
    (lambda r: r.diagnose("0101", n_inits=0), r"n_inits=0: give a whole number >= 1"),
    (lambda r: r.diagnose("0101", tol=-1.0), r"tol=-1\.0: give a finite number > 0"),
    (lambda r: r.diagnose("0101", method="newton"), r"method='newton': allowed iter, anderson"),
    (lambda r: r.diagnose("0101", samples=3), r"diagnose: unknown option\(s\) \['samples'\]; allowed: "),
])
def test_api_arguments_are_checked_and_named(prefix_run, call, message):
    with pytest.raises(ValueError, match=message) as caught:
        call(prefix_run)
    assert isinstance(caught.value, LoopkitError)  # one line on the command line too


def test_load_on_a_device_this_machine_lacks(prefix_run):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: cuda is a valid device")
    with pytest.raises(ValueError, match=r"device=cuda: no CUDA GPU is available here; allowed here: cpu"):
        loopkit.load(prefix_run.run_dir, device="cuda")
    with pytest.raises(ValueError, match=r"device=meta: loopkit cannot run on meta here"):
        loopkit.load(prefix_run.run_dir, device="meta")
    assert loopkit.load(prefix_run.run_dir, device=torch.device("cpu")).step == 0  # a torch.device, as before


def test_good_arguments_still_run(prefix_run):
    assert prefix_run.predict(torch.tensor([0, 1, 1, 0]), max_iters=3).shape == (1, 4)
    assert prefix_run.trace(["0101", "0111"], max_iters=3).answers.shape == (3, 2, 4)
    assert prefix_run.diagnose("0101", max_iters=4, n_inits=1, min_sv_matvecs=0)["reachability"]
