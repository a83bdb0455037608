"""Progress of the slow commands (eval, eval --until-converged, analyze, claims, report) on
stderr: items done and their rate, through tqdm as training shows its steps.

Shown only where someone watches: never when stderr is not a terminal (logs, pipes, a sweep's
workers) nor under `--quiet` (`progress=False`), and only once a job has run for `DELAY_S`
seconds, so quick jobs stay silent. A job is opened with `job(...)` around the work; the code
doing the work calls `advance()` (and `note()`), which cost nothing when no job is open, so
library functions such as `early_exit.run_until_converged` report progress without a bar
argument of their own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm import tqdm

DELAY_S = 2.0  # a job quicker than this shows nothing

_bar: ContextVar[tqdm | None] = ContextVar("loopkit_progress_bar", default=None)
_quiet = False  # the command line's --quiet


def set_quiet(quiet: bool) -> None:
    """No bars from now on where the caller leaves `progress` None (the CLI's --quiet)."""
    global _quiet
    _quiet = quiet


def enabled(progress: bool | None = None) -> bool:
    """`progress` None: when stderr is a terminal, unless `set_quiet`."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return not _quiet and bool(isatty and isatty())
    return progress


@contextmanager
def job(desc: str, unit: str = "it", total: int | None = None, progress: bool | None = None) -> Iterator[tqdm]:
    """A bar for the work inside the `with` block; `advance` and `note` act on it. Cleared from
    the screen when the block ends (the command's own output follows)."""
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled(progress), delay=DELAY_S, leave=False,
               dynamic_ncols=True, file=sys.stderr)
    token = _bar.set(bar)
    try:
        yield bar
    finally:
        _bar.reset(token)
        bar.close()


def advance(n: int = 1) -> None:
    """`n` more items done in the open job (none open: nothing)."""
    bar = _bar.get()
    if bar is not None:
        bar.update(n)


def note(text: str) -> None:
    """A short status after the counts (e.g. samples finished), shown at the bar's next refresh."""
    bar = _bar.get()
    if bar is not None and not bar.disable:
        bar.set_postfix_str(text, refresh=False)
