"""`loopkit compare`: rows labelled by the switches that differ, values from each run's curves."""

import json

import pytest
import yaml

from loopkit.cli import main
from loopkit.compare import compare
from loopkit.config import ConfigError


def fake_run(path, recall, easy_exact, lr=0.001, hard_len=8):
    """A run evaluated to T=8 (train T=2): curves index t-1 holds the score at T=t."""
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"recall": recall, "norm": "outer"},
                                                      "train": {"lr": lr, "threads": 1}}))
    curves = {"easy": {"exact": easy_exact, "token": [1.0] * 8},
              "hard": {"exact": [0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.2][:hard_len]}}
    (path / "eval" / "results.json").write_text(json.dumps({"train_iters": 2, "curves": curves}))
    return path


def test_compare_labels_by_differing_switches_and_reads_T_multiples(tmp_path):
    a = fake_run(tmp_path / "a", "standard", [0.0, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.25])
    b = fake_run(tmp_path / "b", "internal", [0.0, 0.125, 0, 0.5, 0, 0, 0, 0.25], hard_len=3)  # hard only to T=3
    lines = compare([a, b]).splitlines()
    assert lines[0] == "exact (%)"
    assert lines[1] == "| run | easy @T | easy @2T | easy @4T | hard @T | hard @2T | hard @4T |"
    assert lines[3] == "| recall=standard | 90.0 | 50.0 | 25.0 | 0.0 | 10.0 | 20.0 |"
    assert lines[4] == "| recall=internal | 12.5 | 50.0 | 25.0 | 0.0 | – | – |"


def test_compare_other_metric_and_unknown_metric(tmp_path):
    a = fake_run(tmp_path / "a", "standard", [0.5] * 8)
    assert compare([a], metric="token").splitlines()[3] == "| a | 100.0 | 100.0 | 100.0 |"
    with pytest.raises(ConfigError, match="no run has metric 'valid'.*'exact', 'token'"):
        compare([a], metric="valid")


def test_compare_shows_training_switches_and_ignores_threads(tmp_path):
    a = fake_run(tmp_path / "a", "standard", [0.9] * 8, lr=0.001)
    b = fake_run(tmp_path / "b", "standard", [0.9] * 8, lr=0.003)
    assert compare([a, b]).splitlines()[4].startswith("| train.lr=0.003 |")


def test_compare_without_results_names_the_missing_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="run/eval/results.json does not exist"):
        compare([tmp_path / "run"])
    assert main(["compare", str(tmp_path / "run")]) == 2
    assert "loopkit eval" in capsys.readouterr().err


def test_runs_saved_under_older_key_names_group_with_current_ones(tmp_path):
    """A sweep that straddles the key rename (train.iters -> train.max_iters) is one configuration."""
    from loopkit.compare import run_switches

    for name, key in (("old", "iters"), ("new", "max_iters")):
        (tmp_path / name).mkdir()
        text = f"model: {{recall: standard}}\ntrain: {{{key}: 40, lr: 0.002}}\n"
        (tmp_path / name / "config.yaml").write_text(text)
    assert run_switches(tmp_path / "old") == run_switches(tmp_path / "new")


def test_runs_made_before_a_new_key_or_a_position_rename_group_with_current_ones(tmp_path):
    """An older run lacks train.adam_beta2 (added since, at the default it had then) and says position
    grid (the older name of axes): the same configuration as a current run that spells both out."""
    from loopkit.compare import run_switches
    from loopkit.config import TrainConfig

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("model: {recall: internal, position: grid}\ntrain: {iters: 16}\n")
    beta2 = TrainConfig().adam_beta2
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.yaml").write_text(
        f"model: {{recall: internal, position: axes}}\ntrain: {{max_iters: 16, adam_beta2: {beta2}}}\n")
    assert run_switches(tmp_path / "old") == run_switches(tmp_path / "new")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text(
        "model: {recall: internal, position: axes}\ntrain: {adam_beta2: 0.9}\n")
    assert run_switches(tmp_path / "other")["train.adam_beta2"] == 0.9 != beta2


def test_compare_refuses_a_run_without_its_config(tmp_path):
    """Without config.yaml the run's switches are unknown: its row would be labelled as if it had none."""
    run = fake_run(tmp_path / "a", "standard", [0.5] * 8)
    (run / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"a/config.yaml does not exist, so the run's task and switches are unknown"):
        compare([run])


@pytest.mark.parametrize("change, message", [
    (lambda res: res.update(curves=["easy"]), r"curves is a list, not a mapping"),
    (lambda res: res["curves"].update(easy=[0.5]), r"curves.easy is a list, not a mapping"),
    (lambda res: res["curves"]["easy"].update(exact="0.5"), r"curves.easy.exact is a string, not a list"),
    (lambda res: res["curves"]["easy"].update(exact=["0.5"] * 8), r"an entry of curves.easy.exact is a string"),
    (lambda res: res.pop("train_iters"), r"train_iters is missing, not an integer"),
    (lambda res: res.update(train_iters=2.5), r"train_iters is a number, not an integer"),
])
def test_compare_names_a_wrongly_shaped_results_file(tmp_path, capsys, change, message):
    run = fake_run(tmp_path / "a", "standard", [0.5] * 8)
    path = run / "eval" / "results.json"
    res = json.loads(path.read_text())
    change(res)
    path.write_text(json.dumps(res))
    again = r"; run `loopkit eval \S+/a --force` again$"
    with pytest.raises(ConfigError, match=rf"eval/results.json is damaged: {message}.*{again}"):
        compare([run])
    assert main(["compare", str(run)]) == 2
    assert capsys.readouterr().err.startswith("loopkit: error: ")
