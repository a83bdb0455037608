"""`loopkit.load`: the README's example runs exactly as written, and the API's pieces agree with
the model and the task."""

import re
from pathlib import Path

import pytest
import torch

import loopkit
from loopkit.config import ConfigError

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
