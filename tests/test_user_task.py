"""The user task of docs/tasks.md, run exactly as written: registered from outside the package,
trained and evaluated by name like a built-in task."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from loopkit import config
from loopkit.config import ConfigError
from loopkit.evaluate import evaluate_run
from loopkit.tasks import TASK_RANGES, TASKS, Task, register_task
from loopkit.train import train

DOC = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"


@pytest.fixture()
def user_task(tmp_path, monkeypatch):
    """The doc's first code block as a module of the user's (outside loopkit), imported."""
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    path = tmp_path / "my_tasks.py"
    path.write_text(code)
    monkeypatch.setattr("loopkit.tasks.TASKS", dict(TASKS))  # registrations end with the test
    monkeypatch.setattr("loopkit.tasks.TASK_RANGES", dict(TASK_RANGES))
    spec = importlib.util.spec_from_file_location("my_tasks", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "my_tasks", module)
    spec.loader.exec_module(module)
    return module


def test_the_documented_task_registers_trains_and_evaluates(user_task, tmp_path):
    import loopkit.tasks

    assert loopkit.tasks.TASKS["running_sum"] is user_task.RunningSum
    cfg = config.load(None, ["task.name=running_sum", "model.window=1", "model.causal=true", "model.width=32",
                             "task.train_length=6", "task.eval_lengths=[6, 12]", "train.max_iters=10",
                             "train.steps=300", "train.batch_size=32", "train.lr=0.003",
                             "train.progressive_k=4", "train.warmup_steps=10", "train.threads=1",
                             "train.precision=fp32", "train.eval_every=0", "train.log_every=25",
                             "eval.max_iters=40", "task.eval_samples=50"])
    train(cfg, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert min(losses[-4:]) < 0.65 * losses[0], losses  # ln 3 at the start: learning happened
    result = evaluate_run(tmp_path / "run", progress=False)
    assert list(result["summary"]) == ["len6", "len12"]
    len6 = result["summary"]["len6"]  # chance: 3^-6 = 0.14 % of strings, a third of the digits
    assert len6["best_exact"] > 0.1 and len6["token_at_max_T"] > 0.5


def test_the_documented_task_checks_its_options(user_task):
    with pytest.raises(ConfigError, match="task.train_length=0 is out of range: allowed >= 1"):
        config.load(None, ["task.name=running_sum", "task.train_length=0"])
    with pytest.raises(ConfigError, match="unknown config key 'task.length'.*train_length"):
        config.load(None, ["task.name=running_sum", "task.length=3"])


def test_a_taken_name_or_a_non_task_is_refused(user_task):
    class Other(Task):
        Options = user_task.RunningSumOptions

    with pytest.raises(ValueError, match="'running_sum' is taken"):
        register_task("running_sum", Other)
    with pytest.raises(ValueError, match="not a Task subclass"):
        register_task("plain", dict)
    with pytest.raises(ValueError, match="identifier"):
        register_task("two words", Other)
