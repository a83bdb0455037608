"""What `loopkit eval` reports and what it costs: the per-sample trace stays flat in memory as T
grows (only its (N, T) tables grow), the summary never reports another T's value as the
training T's, and the slow commands show progress on a terminal only, never under --quiet."""

import gc
import io
import json
import shutil
import sys
from importlib import resources

import pytest
import torch

from loopkit import cli, config, progress
from loopkit.claims import read_run
from loopkit.compare import compare
from loopkit.demo import extrapolation_table
from loopkit.evaluate import evaluate_run, format_table, summarize
from loopkit.model import LoopedTransformer
from loopkit.multiples import at_multiples, percent
from loopkit.tasks import build_task
from loopkit.tracing import trace_set
from loopkit.train import train
from test_train import TINY


def untrained():
    cfg = config.load(None, TINY)
    task = build_task(cfg.task)
    torch.manual_seed(0)
    return task, LoopedTransformer(cfg.model, task.vocab_size, task.num_classes)


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no __class__ lookups


def test_trace_keeps_no_tensor_per_iteration(monkeypatch):
    """Tensors that survive every iteration (a few per-sample scalars appended to lists, stacked at
    the end) fragment the heap between the iterations' large activations: eval grew by about one
    state per iteration (1.5 GB at 5 sudoku puzzles x T = 5000). Counted at the same point of every
    iteration, the live tensors must not grow with t."""
    task, model = untrained()
    s = task.eval_sets()[0]
    T, calls, seen, correct = 24, [], {}, task.scores

    def counting(logits, y, x=None):
        calls.append(1)
        if len(calls) in (2, T):  # (a full count per iteration is slow)
            seen[len(calls)] = live_tensors()
        return correct(logits, y, x)

    monkeypatch.setattr(task, "scores", counting)
    trace = trace_set(model, task, s, T, len(s.x), torch.device("cpu"))
    assert len(calls) == T
    assert seen[T] == seen[2], f"live tensors grew from {seen[2]} to {seen[T]} over {T - 2} iterations"
    n = len(s.x)  # what the trace keeps: (N, T) per quantity, nothing larger
    tables = [*trace.scores.values(), trace.residual, trace.changed, trace.prob_change]
    assert all(t.shape == (n, T) for t in tables)
    assert sum(t.untyped_storage().nbytes() for t in tables) == n * T * sum(t.element_size() for t in tables)


def test_trace_is_the_same_whatever_the_batch_size():
    task, model = untrained()
    s = task.eval_sets()[1]
    whole = trace_set(model, task, s, 10, len(s.x), torch.device("cpu"))
    parts = trace_set(model, task, s, 10, 7, torch.device("cpu"))  # 64 samples: 9 batches, the last of 1
    for m in whole.scores:
        assert torch.equal(whole.scores[m], parts.scores[m])
    assert torch.equal(whole.changed, parts.changed)
    torch.testing.assert_close(whole.residual, parts.residual)
    torch.testing.assert_close(whole.prob_change, parts.prob_change)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained with T = 6 (two steps: what it learnt does not matter here)."""
    path = tmp_path_factory.mktemp("eval") / "run"
    train(config.load(None, TINY + ["train.steps=2"]), path, progress=False)
    evaluate_run(path, progress=False)
    return path


def test_summary_has_no_training_T_value_when_evaluated_short_of_it():
    """Curves to T = 3 of a model trained with T = 6: the value at T = 3 (here 100 %) was reported
    as the training T's."""
    curves = {"len8": {"exact": [0.0, 0.5, 1.0], "token": [0.5, 0.8, 1.0]}}
    row = summarize(curves, train_iters=6)["len8"]
    assert row["exact_at_train_T"] is None and "exact_at_2x_T" not in row
    assert row["exact_at_max_T"] == 1.0 and row["best_T"] == 3
    assert summarize(curves, train_iters=3)["len8"]["exact_at_train_T"] == 1.0
    assert summarize(curves, train_iters=2)["len8"]["exact_at_train_T"] == 0.5
    head, line = format_table(summarize(curves, train_iters=6)).splitlines()
    assert head.split()[:3] == ["set", "@train", "T"]
    assert line.split() == ["len8", "n/a", "100.0%", "100.0%", "3"]


def test_values_at_multiples_of_T_and_their_percentages():
    """One reading of T, 2T, 4T and one format, shared by eval, compare and the demo."""
    curve = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert at_multiples(curve, 2) == {1: 0.2, 2: 0.4, 4: 0.8}
    assert at_multiples(curve, 3) == {1: 0.3, 2: 0.6, 4: None}  # 4T = 12 lies beyond the curve
    assert at_multiples(curve, 9) == {1: None, 2: None, 4: None}
    assert at_multiples(curve, 4, (2,)) == {2: 0.8}
    assert summarize({"s": {"exact": curve, "token": curve}}, 3)["s"]["exact_at_2x_T"] == 0.6
    assert percent(0.5) == "50.0%" and percent(1.0, 9) == "   100.0%" and percent(None, 9) == "      n/a"
    assert percent(0.125, unit="", missing="–") == "12.5" and percent(None, unit="", missing="–") == "–"


def test_eval_short_of_the_training_T_says_n_a_everywhere(run, capsys, tmp_path):
    assert cli.main(["eval", str(run), "--max-iters", "3", "--out", "short"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["set", "@train", "T", "@max", "T"]
    assert [line.split()[1] for line in table[1:3]] == ["n/a", "n/a"]
    saved = json.loads((run / "short" / "results.json").read_text())
    assert saved["train_iters"] == 6 and saved["max_iters"] == 3
    assert all(s["exact_at_train_T"] is None for s in saved["summary"].values())
    assert '"exact_at_train_T": null' in (run / "short" / "results.json").read_text()
    # compare keeps the training T's column, empty; the demo table says n/a; claims read it as unknown
    lines = compare([run], out_name="short").splitlines()
    assert lines[1] == "| run | len8 @T | len16 @T |" and lines[3] == "| run | – | – |"
    assert "n/a" in extrapolation_table({"run": saved})
    short = tmp_path / "short_run"  # what the claims read: eval/results.json beside config.yaml
    (short / "eval").mkdir(parents=True)
    shutil.copy(run / "config.yaml", short)
    (short / "eval" / "results.json").write_text(json.dumps(saved))
    values = read_run(short).values
    assert values["id_T"] != values["id_T"] and values["ood_T"] != values["ood_T"]  # nan
    assert values["id_best"] == 100 * saved["summary"]["len8"]["best_exact"]


class Terminal(io.StringIO):
    """stderr as a terminal: where progress bars belong."""

    def isatty(self) -> bool:
        return True


CONFIG = str(resources.files("loopkit") / "configs" / "prefix_sums.yaml")
COMMANDS = {  # command line -> the start of its progress bar
    "train": (lambda run: ["train", CONFIG, "--run-dir", str(run.parent / "trained"), *TINY, "train.steps=2",
                           "train.progressive_k=0"],
              "train:"),
    "eval": (lambda run: ["eval", str(run), "--out", "again", "--force"], "eval len8:"),
    "until-converged": (lambda run: ["eval", str(run), "--until-converged", "--out", "again", "--force"],
                        "eval len8 (until converged):"),
    "analyze": (lambda run: ["analyze", str(run), "--force", "--sets", "len8", "--samples", "2", "--inits", "1",
                             "--min-sv-budget", "0", "--rho-tol", "1", "--max-iters", "8"], "analyze len8 (1/1 sets):"),
    "claims": (lambda run: ["claims", str(run), "--out", str(run / "claims")], "claims: bootstrap:"),
    "report": (lambda run: ["report", str(run), "--out", str(run / "report.html")], "claims: bootstrap:"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_progress_only_on_a_terminal_and_never_under_quiet(run, command, monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY_S", 0.0)  # these jobs are quick: show their bars at once
    argv, bar = COMMANDS[command][0](run), COMMANDS[command][1]
    if command == "train":
        shutil.rmtree(run.parent / "trained", ignore_errors=True)
    assert cli.main(argv) == 0  # stderr is pytest's capture, not a terminal
    err = capsys.readouterr().err
    assert bar not in err and "\r" not in err
    for quiet, shown in (([], True), (["--quiet"], False)):
        if command == "train":
            shutil.rmtree(run.parent / "trained", ignore_errors=True)
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        assert cli.main([*argv, *quiet]) == 0
        assert (bar in term.getvalue()) == shown, term.getvalue()[-300:]
        if not shown:
            assert "\r" not in term.getvalue()
