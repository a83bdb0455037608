"""The sudoku task as training and evaluation see it: encoding, validity metric, file sets, errors."""

import pytest
import torch

from loopkit import config
from loopkit.config import ConfigError
from loopkit.evaluate import evaluate_run
from loopkit.model import LoopedTransformer
from loopkit.sudoku import generate
from loopkit.sudoku.io import save_puzzles
from loopkit.tasks import build_task
from loopkit.tasks.sudoku import Sudoku, valid_grids
from loopkit.train import train

SMALL = ["task.name=sudoku", "task.train_size=64", "task.eval_samples=8", "task.eval_levels=[easy, hard]",
         "task.workers=1", "model.width=32", "model.heads=2", "model.position=axes", "model.recall=internal",
         "train.max_iters=3", "train.batch_size=8", "train.steps=4", "train.warmup_steps=1", "train.threads=1",
         "train.log_every=2", "train.eval_every=4", "train.ckpt_every=4", "eval.max_iters=6"]


@pytest.fixture()
def small(tmp_path):
    return SMALL + [f"task.cache_dir={tmp_path / 'cache'}"]


def test_validity_metric_against_known_grids():
    puzzles, solutions, _ = generate("easy", 4, seed=3, workers=1, progress=False)
    x, sol = torch.as_tensor(puzzles).long(), torch.as_tensor(solutions).long()
    assert valid_grids(sol, x).all()
    swapped = sol.clone()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # breaks a column (and a given, unless both were blank)
    assert not valid_grids(swapped, x).any()
    relabelled = (sol % 9) + 1  # a valid sudoku, but it contradicts the givens
    assert valid_grids(relabelled, torch.zeros_like(x)).all() and not valid_grids(relabelled, x).any()
    # works on leading dims, as evaluation passes (T, B, 81)
    assert valid_grids(torch.stack([sol, swapped]), x).tolist() == [[True] * 4, [False] * 4]


def test_train_batches_are_valid_and_reproducible(small):
    task = build_task(config.load(None, small + ["task.augment=true"]).task)
    x1, y1 = task.train_batch(16, torch.Generator().manual_seed(5))
    x2, y2 = task.train_batch(16, torch.Generator().manual_seed(5))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert y1.min() >= 0 and y1.max() <= 8 and valid_grids(y1 + 1, x1).all()


def test_training_never_sees_an_eval_puzzle(small, capsys):
    """With the training seed equal to the eval seed, the easy eval puzzles are the first training
    puzzles: they must be left out of the pool, and none of the remaining ones may be an eval puzzle."""
    task = build_task(config.load(None, small + ["task.seed=1234", "task.train_size=20"]).task)
    task.train_batch(4, torch.Generator().manual_seed(0))
    pool = {tuple(p) for p in task._train[0].tolist()}
    held = {tuple(p) for s in task.eval_sets() for p in s.x.tolist()}
    assert pool and not pool & held
    assert len(pool) == 20 - 8  # the 8 easy eval puzzles came out of the 20
    assert "8 training puzzle(s) equal an eval puzzle" in capsys.readouterr().err


def test_rated_file_becomes_one_eval_set_per_bucket(small, tmp_path):
    puzzles, solutions, _ = generate("easy", 6, seed=4, workers=1, progress=False)
    path = tmp_path / "mine.txt"
    save_puzzles(path, puzzles, ids=[f"p{i}" for i in range(6)], ratings=[1.0, 1.5, 2.0, 3.0, 4.5, 6.0])
    task = build_task(config.load(None, small + [f"task.eval_files=[{path}]", "task.rating_buckets=[2, 4]"]).task)
    sets = {s.name: s for s in task.eval_sets()}
    assert {n: len(s.x) for n, s in sets.items() if n.startswith("mine")} == {"mine:-2": 2, "mine:2-4": 2, "mine:4-": 2}
    assert valid_grids(sets["mine:-2"].y + 1, sets["mine:-2"].x).all()  # targets solved from the puzzles


def test_bad_options_are_named(small, tmp_path):
    with pytest.raises(ConfigError, match="task.train_level"):
        build_task(config.load(None, small + ["task.train_level=impossible"]).task)
    with pytest.raises(ConfigError, match="task.eval_files"):
        build_task(config.load(None, small + [f"task.eval_files=[{tmp_path / 'missing.txt'}]"]).task)
    cfg = config.load(None, small)
    with pytest.raises(ValueError, match="81 cells"):
        LoopedTransformer(cfg.model, 10, 9, layout=Sudoku.layout)(torch.zeros(2, 80, dtype=torch.long), 2)


def test_train_and_evaluate_end_to_end(small, tmp_path):
    cfg = config.load(None, small)
    train(cfg, tmp_path / "run", progress=False)
    result = evaluate_run(tmp_path / "run")
    assert set(result["curves"]) == {"easy", "hard"}
    assert set(result["curves"]["easy"]) == {"exact", "token", "valid"}
    assert len(result["curves"]["hard"]["valid"]) == 6
