"""Data generation in chunks, in this process or a process pool, with one progress bar: the
loop the sudoku and maze generators share (their outputs are the same for any worker count, since
every item is drawn from its own seed)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def run_chunks(make: Callable[[Any], Any], chunks: list[Any], store: Callable[[Any], int], workers: int,
               total: int, desc: str, unit: str, progress: bool = True) -> None:
    """`store(make(chunk))` for every chunk, in arrival order; `store` returns how many items the
    chunk held, which advances the bar. `make` must be a module-level function (it is pickled)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=not progress, unit=unit)
    try:
        for part in _results(make, chunks, workers):
            bar.update(store(part))
    finally:
        bar.close()


def _results(make: Callable[[Any], Any], chunks: list[Any], workers: int) -> Iterable[Any]:
    if workers <= 1 or len(chunks) <= 1:
        yield from map(make, chunks)
        return
    # spawn: safe even when the caller has threads running (e.g. a PyTorch process); a worker that
    # dies raises BrokenProcessPool here instead of hanging
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=mp.get_context("spawn"))
    try:
        for fut in as_completed([pool.submit(make, c) for c in chunks]):
            yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
