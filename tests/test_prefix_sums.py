"""Prefix sums: the generator against an independent check, and train/test disjointness."""

import itertools

import torch

from loopkit.tasks import build_task
from loopkit.tasks.prefix_sums import held_out
from loopkit.train import step_generator


def test_labels_are_the_running_parity():
    task = build_task({"name": "prefix_sums", "train_length": 10})
    x, y = task.train_batch(50, step_generator(0, 0))
    for bits, parity in zip(x.tolist(), y.tolist()):
        running = 0
        for b, p in zip(bits, parity):
            running ^= b
            assert p == running


def test_every_length_has_both_a_training_and_a_test_part():
    for length in range(1, 13):
        strings = torch.tensor(list(itertools.product([0, 1], repeat=length)))
        test = held_out(strings)
        assert 0 < int(test.sum()) < len(strings)


def test_train_and_test_strings_are_disjoint_at_every_trained_length():
    """Training draws lengths 4..6; eval sets at 5 and 6 must share no string with any training
    batch (checked exhaustively: the test part is a fixed set), and the 12-bit set is untouched."""
    task = build_task({"name": "prefix_sums", "train_length": 6, "train_length_min": 4,
                       "eval_lengths": [5, 6, 12], "eval_samples": 40})
    seen = {tuple(row) for s in range(300) for row in task.train_batch(16, step_generator(1, s))[0].tolist()}
    sets = {s.name: s for s in task.eval_sets()}
    for name in ("len5", "len6"):
        rows = {tuple(r) for r in sets[name].x.tolist()}
        assert held_out(sets[name].x).all()
        assert not rows & seen
    for length in (4, 5, 6):
        assert not held_out(torch.tensor([r for r in seen if len(r) == length])).any()
    assert len({len(r) for r in seen}) == 3  # 4, 5 and 6 bits were all drawn
    assert not held_out(sets["len12"].x).all()  # beyond the training lengths no split is needed
