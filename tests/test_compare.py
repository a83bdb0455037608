"""`loopkit compare`: rows labelled by the switches that differ, values from each run's results."""

import json

import pytest
import yaml

from loopkit.cli import main
from loopkit.compare import compare
from loopkit.config import ConfigError


def fake_run(path, recall, exact_at_T, lr=0.001):
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"recall": recall, "norm": "outer"},
                                                      "train": {"lr": lr, "threads": 1}}))
    summary = {"easy": {"exact_at_train_T": exact_at_T, "exact_at_2x_T": 0.5, "exact_at_4x_T": 0.25},
               "hard": {"exact_at_train_T": 0.0, "exact_at_2x_T": 0.1}}
    (path / "eval" / "results.json").write_text(json.dumps({"summary": summary}))
    return path


def test_compare_labels_by_differing_switches_and_reads_values(tmp_path):
    a = fake_run(tmp_path / "a", "standard", 0.9)
    b = fake_run(tmp_path / "b", "internal", 0.125)
    res = json.loads((b / "eval" / "results.json").read_text())
    del res["summary"]["hard"]["exact_at_2x_T"]  # evaluated to a smaller T: shown as missing
    (b / "eval" / "results.json").write_text(json.dumps(res))
    lines = compare([a, b]).splitlines()
    assert lines[0] == "| run | easy @T | easy @2T | easy @4T | hard @T | hard @2T |"  # no run has hard @4T
    assert lines[2] == "| recall=standard | 90.0 | 50.0 | 25.0 | 0.0 | 10.0 |"
    assert lines[3] == "| recall=internal | 12.5 | 50.0 | 25.0 | 0.0 | – |"


def test_compare_shows_training_switches_and_ignores_threads(tmp_path):
    a = fake_run(tmp_path / "a", "standard", 0.9, lr=0.001)
    b = fake_run(tmp_path / "b", "standard", 0.9, lr=0.003)
    assert compare([a, b]).splitlines()[3].startswith("| train.lr=0.003 |")


def test_compare_without_results_names_the_missing_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="run/eval/results.json does not exist"):
        compare([tmp_path / "run"])
    assert main(["compare", str(tmp_path / "run")]) == 2
    assert "loopkit eval" in capsys.readouterr().err
