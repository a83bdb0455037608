"""Helpers the tasks share: rating buckets of a rated puzzle file, and the default cache folder."""

from pathlib import Path

import numpy as np

from loopkit.cache import cache_dir
from loopkit.tasks.buckets import bucket_indices


def test_buckets_split_at_sorted_edges_and_skip_empty_ones():
    ratings = [1.0, 1500, 2100.5, 900, float("nan"), 1499.9, 3000]
    found = bucket_indices(np.array(ratings), [2000, 1500, 2500.5])  # edges in any order
    assert [(name, rows.tolist()) for name, rows in found] == [
        ("-1500", [0, 3, 5]),  # [-inf, 1500)
        ("1500-2000", [1]),  # lo inclusive
        ("2000-2500.5", [2]),
        ("2500.5-", [6]),  # NaN falls in none
    ]
    assert [name for name, _ in bucket_indices([5.0], [2, 4])] == ["4-"]  # only buckets that hold a puzzle
    assert [name for name, _ in bucket_indices([1, 2], [])] == ["-"]  # no edges: one bucket


def test_cache_dir_defaults_per_task_and_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("", "sudoku") == tmp_path / ".cache" / "loopkit" / "sudoku"
    assert cache_dir("~/data", "chess") == tmp_path / "data"
    assert cache_dir("rel/dir", "chess") == Path("rel/dir")
