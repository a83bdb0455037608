"""`loopkit.load(run_dir)`: a trained run as one object for notebooks and scripts.

The CLI writes files; a researcher at a notebook wants the model in hand: predict at a chosen T,
watch the answer and the residual evolve iteration by iteration, and diagnose one input's fixed
point. Inputs can be tensors of token ids or the task's own text (a bit string, an 81-character
sudoku, a FEN), which the task parses and checks.

A bad argument is an `ArgumentError` (a `ValueError`) naming the argument and what is allowed,
raised before the model runs, never an indexing or shape error from inside torch.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import Config
from .errors import LoopkitError
from .model import LoopedTransformer
from .tasks import Task


class ArgumentError(LoopkitError):
    """A bad argument to the Python API; the message names it and what is allowed."""


def check_count(name: str, value: Any, least: int = 1, none_ok: bool = True) -> None:
    """`value` is a whole number >= `least` (or None, meaning the default, when `none_ok`)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ArgumentError(f"{name}={value!r}: give a whole number >= {least}")


# analyze_model's numeric options: (least allowed, whether it is a whole number)
DIAGNOSE_RANGES = {"max_iters": (1, True), "n_inits": (1, True), "krylov_dim": (1, True), "min_sv_matvecs": (0, True),
                   "seed": (0, True), "tol": (0.0, False), "rho_tol": (0.0, False)}


@dataclass
class Trace:
    """One input batch followed for `max_iters` iterations (t = 1 .. max_iters)."""

    answers: Tensor  # (T, B, ...) the decoded answer (argmax) after every iteration
    residuals: Tensor  # (T, B) relative residual ||h_t - h_{t-1}|| / ||h_{t-1}||

    def settled_at(self) -> list[int]:
        """Per input, the first t from which the answer equals every later one up to T (T itself
        when it still changed at the last iteration: more iterations would tell)."""
        same_as_last = (self.answers == self.answers[-1]).flatten(2).all(-1)  # (T, B)
        trailing = same_as_last.flip(0).int().cumprod(0).sum(0)  # iterations at the end already settled
        return (len(self.answers) - trailing + 1).tolist()


@dataclass
class LoadedRun:
    """A trained model with its task and config (`load`)."""

    run_dir: Path
    config: Config
    task: Task
    model: LoopedTransformer
    step: int

    @property
    def train_iters(self) -> int:
        return self.config.train.max_iters

    def inputs(self, x: Tensor | str | list[str]) -> Tensor:
        """Token ids (B, L) from a tensor, or from one or more inputs written as the task's text;
        checked against the task's vocabulary and layout."""
        if isinstance(x, Tensor):
            if x.dim() not in (1, 2) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ArgumentError(f"x: a tensor of token ids must be integer with shape (L,) or (B, L), got "
                                    f"{x.dtype} {tuple(x.shape)}")
            tokens = x if x.dim() == 2 else x.unsqueeze(0)
        elif isinstance(x, str) or (isinstance(x, (list, tuple)) and x and all(isinstance(t, str) for t in x)):
            rows = [self.task.parse_input(t) for t in ([x] if isinstance(x, str) else x)]
            lengths = sorted({len(r) for r in rows})
            if len(lengths) > 1:
                shown = ", ".join(map(str, lengths))
                raise ArgumentError(f"x: the inputs have {len(lengths)} different lengths ({shown}); give inputs of "
                                    "one length per call")
            tokens = torch.stack(rows)
        else:
            raise ArgumentError(f"x: give a tensor of token ids, an input as text, or a list of texts; got {x!r:.80}")
        if tokens.numel() == 0:
            raise ArgumentError(f"x: the input is empty (shape {tuple(tokens.shape)})")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.task.vocab_size:
            raise ArgumentError(f"x: token {low if low < 0 else high} is outside this task's vocabulary "
                                f"(0 to {self.task.vocab_size - 1})")
        if self.task.layout.grid:
            try:
                self.task.layout.rows_cols(tokens.shape[1])
            except ValueError as err:
                raise ArgumentError(f"x: {err}") from None
        return tokens.long()

    @torch.no_grad()
    def predict(self, x: Tensor | str | list[str], max_iters: int | None = None) -> Tensor:
        """The decoded answer (argmax per position) after `max_iters` iterations (default: the training T)."""
        check_count("max_iters", max_iters)
        self.model.eval()
        out = self.model(self.inputs(x), max_iters or self.train_iters)
        return self.task.output_logits(out.logits).argmax(-1)

    @torch.no_grad()
    def trace(self, x: Tensor | str | list[str], max_iters: int | None = None) -> Trace:
        """The answer and the residual after every iteration, in one pass (O(1) state memory)."""
        check_count("max_iters", max_iters)
        self.model.eval()
        tokens, iters = self.inputs(x), max_iters or 4 * self.train_iters
        loop = self.model.start(tokens)
        prev = loop.h0
        answers: Tensor | None = None
        residuals = torch.empty(iters, len(tokens))
        # tables filled in place, not lists of small per-iteration tensors: those fragment the heap
        # between the large temporaries of each step and memory grows with T (loopkit/evaluate.py)
        for t, h in enumerate(self.model.trajectory(loop, iters)):
            size = prev.flatten(1).norm(dim=1)  # 0 when h_0 = 0: r_1 is then undefined (NaN)
            residuals[t] = ((h - prev).flatten(1).norm(dim=1) / torch.where(size > 0, size, torch.nan)).cpu()
            answer = self.task.output_logits(self.model.readout(h)).argmax(-1).cpu()
            if answers is None:
                answers = torch.empty((iters, *answer.shape), dtype=answer.dtype)
            answers[t] = answer
            prev = h
        return Trace(answers, residuals)

    def show(self, x: Tensor | str, answer: Tensor) -> str:
        """One input and its answer as the task writes them (a board, a bit string, a move)."""
        return self.task.format_output(self.inputs(x)[0], answer.reshape(-1))

    def diagnose(self, x: Tensor | str | list[str], **options: Any) -> dict[str, Any]:
        """The fixed-point diagnostics of these inputs (what `loopkit analyze` reports per set):
        reachability, attractors, rho(J) with its residual, ||J||, sigma_min(I - J), sensitivity,
        initial-state dependence. `options` go to `loopkit.analysis.analyze_model`."""
        from .analysis import analyze_model

        known = set(inspect.signature(analyze_model).parameters) - {"model", "x"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ArgumentError(f"diagnose: unknown option(s) {unknown}; allowed: {', '.join(sorted(known))}")
        for name, (least, whole) in DIAGNOSE_RANGES.items():
            if name not in options:
                continue
            value = options[name]
            if whole:
                check_count(name, value, least, none_ok=False)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not least < value < math.inf:
                raise ArgumentError(f"{name}={value!r}: give a finite number > {least}")
        if options.get("method", "iter") not in ("iter", "anderson"):
            raise ArgumentError(f"method={options['method']!r}: allowed iter, anderson")
        options.setdefault("max_iters", self.config.eval_max_iters())
        options.setdefault("tol", self.config.eval.tol)
        self.model.requires_grad_(False)
        return analyze_model(self.model, self.inputs(x), **options)


def load(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """The latest checkpoint of a run folder (loads weights only: no code runs from the folder)."""
    from .devices import resolve
    from .runs import load_run

    resolve(device, "device")
    cfg, task, model, step = load_run(run_dir, device)
    return LoadedRun(Path(run_dir), cfg, task, model.eval(), step)
