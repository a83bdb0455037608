"""The maze task as training and evaluation see it: registration, disjoint train/test, learning,
the size ladder with its pictures, user files, the notebook API, bad options."""

import json

import numpy as np
import pytest
import torch

from loopkit import config, load
from loopkit.config import ConfigError
from loopkit.evaluate import evaluate_run
from loopkit.mazes import generate, save_mazes
from loopkit.tasks import TASKS, build_task
from loopkit.train import train

SMALL = ["task.name=mazes", "task.train_sizes=[7]", "task.train_size=200", "task.eval_sizes=[7, 11]",
         "task.eval_samples=6", "task.workers=1", "model.width=32", "model.heads=4", "model.window=1",
         "train.max_iters=12", "train.progressive_k=4", "train.batch_size=16", "train.warmup_steps=5",
         "train.threads=1", "train.precision=fp32", "train.log_every=10", "train.eval_every=0",
         "train.ckpt_every=1000", "eval.max_iters=24", "eval.batch_size=6"]


@pytest.fixture()
def small(tmp_path):
    return SMALL + [f"task.cache_dir={tmp_path / 'cache'}"]


def test_mazes_is_a_registered_grid_task(small):
    task = build_task(config.load(None, small).task)
    assert TASKS["mazes"] is type(task) and task.layout.grid and not task.layout.side
    x, y = task.train_batch(5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 49) and set(y.unique().tolist()) <= {0, 1}
    assert ((x == 2).sum(1) == 1).all() and ((x == 3).sum(1) == 1).all()  # one start, one goal
    assert (y[x == 0] == 0).all() and (y[(x == 2) | (x == 3)] == 1).all()  # the path avoids walls, joins S and G


def test_training_never_sees_an_eval_maze(small, capsys):
    """With the training seed equal to the eval seed, the size-7 eval mazes are the first training
    mazes (maze i depends only on size, seed and i): they must be left out of the pool."""
    task = build_task(config.load(None, small + ["task.seed=1234", "task.train_size=20"]).task)
    pool_x, _ = task.train_pool(7)
    pool = {tuple(m) for m in pool_x.tolist()}
    held = {tuple(m) for s in task.eval_sets() for m in s.x.tolist()}
    assert pool and not pool & held
    assert len(pool_x) == 20 - 6
    assert "6 training maze(s) of size 7 equal an eval maze" in capsys.readouterr().err


def test_a_small_model_learns_small_mazes_and_evaluation_draws_each_size(small, tmp_path):
    run = tmp_path / "run"
    train(config.load(None, small + ["train.steps=150", "train.lr=0.003"]), run, progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0], losses  # learning happened (the path is ~25 % of the cells)
    result = evaluate_run(run, progress=False)
    assert set(result["summary"]) == {"7x7", "11x11"}
    y = build_task(config.load(None, small).task).eval_sets()[0].y
    constant = 1 - y.float().mean().item()  # the best constant answer: "no character is on the path"
    assert max(result["curves"]["7x7"]["token"]) > constant + 0.03
    for size in (7, 11):
        png = run / "eval" / f"maze_{size}x{size}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_user_maze_files_become_one_set_per_size(small, tmp_path):
    xs = [m for size in (7, 9) for m in generate(size, 2, seed=5, progress=False)[0]]
    save_mazes(tmp_path / "mine.txt", xs)
    task = build_task(config.load(None, small + [f"task.eval_files=[{tmp_path / 'mine.txt'}]"]).task)
    sets = {s.name: s for s in task.eval_sets()}
    assert sets["mine:7x7"].x.shape == (2, 49) and sets["mine:9x9"].x.shape == (2, 81)
    assert torch.equal(sets["mine:9x9"].x, torch.as_tensor(np.stack(xs[2:])).long().flatten(1))


def test_a_trained_maze_model_reads_and_writes_maze_text(small, tmp_path):
    run = tmp_path / "run"
    train(config.load(None, small + ["train.steps=2"]), run, progress=False)
    x, _ = generate(9, 1, seed=3, progress=False)
    text = "\n".join("".join("#.SG"[t] for t in row) for row in x[0])
    loaded = load(run)
    answer = loaded.predict(text, 5)
    assert answer.shape == (1, 81)
    shown = loaded.show(text, answer).splitlines()
    assert len(shown[0]) == 9 and all(c in "#.SGo" for c in "".join(shown[:9]))


@pytest.mark.parametrize("override,key", [("task.eval_sizes=[8]", "task.eval_sizes"),
                                          ("task.train_sizes=[]", "task.train_sizes"),
                                          ("task.loops=1.5", "task.loops"),
                                          ("model.causal=true", "model.causal")])
def test_bad_maze_options_are_one_line_errors(small, override, key):
    with pytest.raises(ConfigError, match=key):
        config.load(None, small + [override])
