import pytest

from loopkit import cli, config
from loopkit.cli import main
from loopkit.config import ConfigError
from loopkit.demo import default_config_path


def test_defaults_and_overrides():
    cfg = config.load(None, ["model.recall=internal", "train.lr=3e-4", "model.causal=true",
                             "task.eval_lengths=[8, 16]"])
    assert cfg.model.recall == "internal" and cfg.train.lr == pytest.approx(3e-4) and cfg.model.causal is True
    assert cfg.task == {"name": "prefix_sums", "eval_lengths": [8, 16]}


def test_shipped_config_loads():
    cfg = config.load(default_config_path())
    assert cfg.task["name"] == "prefix_sums"


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.recal=none", "unknown config key 'model.recal'.*known keys in 'model': width"),
        ("model.recall=sideways", "model.recall: 'sideways' is not allowed; choose one of none, standard, internal"),
        ("model.norm=middle", "choose one of pre, post, outer, peri"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.steps=1.5", "train.steps: expected an integer"),
        ("optim.lr=1", "unknown config section"),
        ("model.width=30", "divisible by model.heads"),
        ("train.alpha=2", "alpha must lie in"),
        ("lr=1", "must be section.key"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [override])


def test_recall_none_refuses_an_input_free_start():
    with pytest.raises(ConfigError, match="recall=none"):
        config.load(None, ["model.recall=none", "model.init_state=zeros"])


def test_unknown_task_and_task_key(tmp_path):
    from loopkit.tasks import build_task

    with pytest.raises(ConfigError, match="choose one of prefix_sums"):
        build_task({"name": "labyrinths"})
    with pytest.raises(ConfigError, match="unknown config key 'task.train_len'.*train_length"):
        build_task({"name": "prefix_sums", "train_len": 8})


def test_cli_reports_a_bad_key_and_touches_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", str(default_config_path()), "model.widht=8", "--run-dir", str(run_dir)])
    assert code == 2
    assert "model.widht" in capsys.readouterr().err
    assert not run_dir.exists()
    code = main(["train", str(default_config_path()), "task.eval_lengths=[8, x]", "--run-dir", str(run_dir)])
    assert code == 2 and "task.eval_lengths[1]" in capsys.readouterr().err
    assert not run_dir.exists()


def test_malformed_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [width\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        config.load(bad)


def test_eval_overrides_touch_only_task_and_eval():
    cfg = config.load(None, ["task.eval_samples=10"])
    changed = config.override_for_eval(cfg, ["task.eval_samples=3", "eval.max_iters=7"])
    assert changed.task["eval_samples"] == 3 and changed.eval.max_iters == 7 and changed.model == cfg.model
    with pytest.raises(ConfigError, match="only task"):
        config.override_for_eval(cfg, ["model.width=8"])
    with pytest.raises(ConfigError, match="task.name cannot change"):
        config.override_for_eval(cfg, ["task.name=sudoku"])


@pytest.mark.parametrize("override", [
    "train.keep_checkpoints=-1", "train.keep_checkpoints=0", "train.grad_clip=-1", "train.min_lr_ratio=-2",
    "train.progressive_k=-2", "model.mlp_ratio=0", "model.heads=0", "train.ckpt_every=0", "train.lr=-1",
    "train.lr=.inf", "train.lr=.nan", "model.window=-1", "train.seed=-1", "eval.max_iters=-5", "eval.batch_size=0",
    "train.log_every=0", "train.weight_decay=-0.1", "train.implicit_tol=0",
])
def test_every_out_of_range_value_is_refused_naming_its_key_before_anything_is_written(override, tmp_path):
    from loopkit.cli import main

    key = override.split("=")[0]
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.load(None, [override])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 1\n")
    assert main(["train", str(cfg), override, "--run-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_options_may_come_between_a_commands_positional_arguments():
    """`train CONFIG --run-dir D key=value` is how people type it; plain argparse refused the overrides."""
    args = cli.parse_args(["train", "cfg.yaml", "--run-dir", "runs/x", "model.recall=none", "--resume", "train.lr=0.1"])
    assert (args.config, args.run_dir, args.overrides, args.resume) == ("cfg.yaml", "runs/x",
                                                                        ["model.recall=none", "train.lr=0.1"], True)
    args = cli.parse_args(["eval", "--force", "runs/x", "task.eval_lengths=[8]", "--max-iters", "5"])
    assert (args.run_dir, args.overrides, args.force, args.max_iters) == ("runs/x", ["task.eval_lengths=[8]"], True, 5)


def test_older_key_names_still_load_and_mean_the_same():
    """Run folders and sweeps written before the rename keep working: train.iters, train.iters_min
    and eval.iters are read as train.max_iters, train.min_iters and eval.max_iters."""
    old = config.from_dict({"train": {"iters": 12, "iters_min": 4}, "eval": {"iters": 30}})
    assert (old.train.max_iters, old.train.min_iters, old.eval.max_iters) == (12, 4, 30)
    assert config.load(None, ["train.iters=9"]).train.max_iters == 9
    with pytest.raises(ConfigError, match="train.iters and train.max_iters are one key"):
        config.from_dict({"train": {"iters": 12, "max_iters": 12}})
    # an override replaces the key whichever name the file used
    replaced = config.apply_overrides({"train": {"iters": 12}}, ["train.max_iters=5"])
    assert config.from_dict(replaced).train.max_iters == 5
