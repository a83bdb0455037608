"""loopkit: train, extrapolate and diagnose looped transformers. `loopkit.load(run_dir)` opens a
trained run in Python (loopkit/api.py); the `loopkit` command does the rest (loopkit/cli.py).

Importing the package imports nothing else: `loopkit.load` is looked up on first use, so
`import loopkit.fixedpoint` (model-agnostic) or `loopkit --help` do not pay for torch, the tasks or
python-chess."""

__all__ = ["load"]


def __getattr__(name: str):
    if name == "load":
        from .api import load

        return load
    raise AttributeError(f"module 'loopkit' has no attribute {name!r}")
