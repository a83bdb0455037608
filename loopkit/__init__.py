"""loopkit: train, extrapolate and diagnose looped transformers. `loopkit.load(run_dir)` opens a
trained run in Python (loopkit/api.py); the `loopkit` command does the rest (loopkit/cli.py)."""

from .api import load

__all__ = ["load"]
