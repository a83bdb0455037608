"""Fixed-point solvers for h = f(h, e) with per-sample bookkeeping.

Both solvers share one loop (``_solve``) that, at iteration t, evaluates F_t = f(X_t, e) once
and measures the relative fixed-point residual

    r_t = ||F_t - X_t|| / max(||X_t||, eps)        (norms per sample over non-batch dims)

For plain iteration X_{t+1} = F_t, so this is exactly ||h_{t+1} - h_t|| / ||h_t||.  The
solvers differ only in how X_{t+1} is formed from the history (plain step or Anderson mix),
so convergence, freezing, divergence and cycle detection mean the same thing for both.

Conventions (per sample):
- converged: r_t < tol at some t; ``iters`` = t + 1 = f-evaluations until then (or the number
  run, if never); the returned state is F_t at that t (one more application of f).
- with ``stop_on_converge`` a converged sample is frozen: neither its state nor its trace
  changes any more (the trace carries its last residual forward).  Otherwise it keeps
  iterating, and ``trace`` is the full residual history.
- diverged: the state (or f's output) became non-finite, or ||X_t|| grew beyond
  ``div_factor`` times max(||X_0||, ||F_0||).  Diverged samples are frozen.
- cycle_period p in 2..``max_period`` (0 = none), decided on the final iterates of a sample
  that neither converged nor diverged: the smallest p with ||X_T - X_{T-p}|| <=
  cycle_tol * ||X_T|| that is also < 0.1 * ||X_T - X_{T-1}|| (the orbit returns far closer
  than one step moves, which rules out slow monotone convergence).  Cycles describe the
  dynamics being run, so they are meaningful for plain iteration (the model's own dynamics);
  Anderson typically breaks cycles.
- f is always evaluated on the whole batch and frozen samples are masked out afterwards,
  rather than sliced away: slicing would break maps that close over per-batch tensors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._utils import acc_dtype, bfinite, bnorm, bwhere

StepFn = Callable[[Tensor, Tensor], Tensor]
# update(t, X_t, F_t) -> (X_{t+1}, fallback flags (B,) or None)
Update = Callable[[int, Tensor, Tensor], tuple[Tensor, "Tensor | None"]]


@dataclass
class SolverResult:
    """Per-sample outcome of a fixed-point solve (all per-sample fields have shape (B,))."""

    h: Tensor  # (B, *S) final state (F at the last evaluated step of each sample)
    converged: Tensor  # bool
    iters: Tensor  # int64, f-evaluations until convergence (or run, if not converged)
    residual: Tensor  # final relative residual r at the last evaluated step
    trace: Tensor  # (T, B) relative residual per iteration (see module doc for frozen samples)
    cycle_period: Tensor  # int64, 0 = no cycle detected
    diverged: Tensor  # bool
    method: str
    tol: float
    nfe: int  # batched f-evaluations actually run (= T)
    extra: dict = field(default_factory=dict)  # method-specific per-sample info


def _detect_cycles(history: list[Tensor], candidates: Tensor, max_period: int, cycle_tol: float) -> Tensor:
    """Smallest period p in 2..max_period per sample (0 = none); see module docstring."""
    B = history[-1].shape[0]
    period = torch.zeros(B, dtype=torch.long, device=history[-1].device)
    if len(history) < 3:
        return period
    x_t = history[-1]
    norm_t = bnorm(x_t)
    step = bnorm(x_t - history[-2])
    for p in range(2, min(max_period, len(history) - 1) + 1):
        d = bnorm(x_t - history[-1 - p])
        hit = candidates & (period == 0) & (d <= cycle_tol * norm_t) & (d < 0.1 * step)
        period = torch.where(hit, torch.full_like(period, p), period)
    return period


@torch.no_grad()
def _solve(
    f: StepFn,
    e: Tensor,
    h0: Tensor,
    update: Update,
    *,
    method: str,
    max_iters: int,
    tol: float,
    stop_on_converge: bool,
    max_period: int,
    cycle_tol: float,
    div_factor: float,
    eps: float,
) -> SolverResult:
    B = h0.shape[0]
    dev = h0.device
    rdt = acc_dtype(h0.dtype)
    x = h0.detach().clone()
    h_out = x.clone()
    active = torch.ones(B, dtype=torch.bool, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    diverged = torch.zeros(B, dtype=torch.bool, device=dev)
    iters = torch.zeros(B, dtype=torch.long, device=dev)
    residual = torch.full((B,), float("inf"), dtype=rdt, device=dev)
    fallbacks = torch.zeros(B, dtype=torch.long, device=dev)
    trace: list[Tensor] = []
    history: deque[Tensor] = deque([x], maxlen=max(max_period, 1) + 1)
    ref: Tensor | None = None
    t = 0
    for t in range(max_iters):
        fx = f(x, e)
        x_norm = bnorm(x)
        r = bnorm(fx - x) / x_norm.clamp_min(eps)
        if ref is None:
            ref = torch.maximum(x_norm, bnorm(fx)).clamp_min(eps)
        r = torch.where(active, r, residual)
        trace.append(r)
        residual = r
        new_conv = active & ~converged & (r < tol)
        iters = torch.where(active & ~converged, torch.full_like(iters, t + 1), iters)
        converged = converged | new_conv

        x_next, fb = update(t, x, fx)
        if fb is not None:
            fallbacks = fallbacks + (fb & active).long()
        bad = ~bfinite(fx) | ~bfinite(x_next) | ~(bnorm(x_next) <= div_factor * ref)
        new_div = active & bad & ~new_conv
        diverged = diverged | new_div

        h_out = bwhere(active, fx, h_out)
        stop = new_div | (new_conv if stop_on_converge else torch.zeros_like(new_conv))
        x = bwhere(active & ~stop, x_next, x)
        active = active & ~stop
        history.append(x)
        if not bool(active.any()):
            break
    if max_period >= 2:
        candidates = ~diverged & ~(residual < tol)
        cycle = _detect_cycles(list(history), candidates, max_period, cycle_tol)
    else:
        cycle = torch.zeros(B, dtype=torch.long, device=dev)
    extra = {"fallbacks": fallbacks} if method == "anderson" else {}
    return SolverResult(
        h=h_out,
        converged=converged,
        iters=iters,
        residual=residual,
        trace=torch.stack(trace) if trace else torch.zeros(0, B, dtype=rdt, device=dev),
        cycle_period=cycle,
        diverged=diverged,
        method=method,
        tol=tol,
        nfe=len(trace),
        extra=extra,
    )


def fixed_point_iter(
    f: StepFn,
    e: Tensor,
    h0: Tensor,
    *,
    max_iters: int = 100,
    tol: float = 1e-5,
    stop_on_converge: bool = True,
    max_period: int = 8,
    cycle_tol: float = 1e-3,
    div_factor: float = 1e4,
    eps: float = 1e-12,
) -> SolverResult:
    """Plain iteration h_{t+1} = f(h_t, e): the model's own dynamics, residual trace per sample."""
    return _solve(
        f, e, h0, lambda t, x, fx: (fx, None),
        method="iter", max_iters=max_iters, tol=tol, stop_on_converge=stop_on_converge,
        max_period=max_period, cycle_tol=cycle_tol, div_factor=div_factor, eps=eps,
    )  # fmt: skip


class _Anderson:
    """Type-II Anderson mixing with a per-sample safeguard.

    With residuals G_i = F_i - X_i of the last m iterates, choose weights alpha (sum 1)
    minimizing ||sum_i alpha_i G_i||, i.e. alpha = K^{-1} 1 / (1^T K^{-1} 1) with the Gram
    matrix K = G G^T + lam * mean(diag K) * I.  Regularizing *relative* to the Gram scale keeps
    the method scale-invariant (an absolute lam would turn into plain averaging as residuals
    shrink).  Then X_{t+1} = beta * sum alpha F + (1 - beta) * sum alpha X.
    Safeguard: if the small solve fails, K's condition number exceeds ``max_cond``, or alpha is
    non-finite, that sample takes a plain damped step (1 - beta) X_t + beta F_t instead.
    """

    def __init__(self, m: int, lam: float, beta: float, max_cond: float) -> None:
        self.m, self.lam, self.beta, self.max_cond = m, lam, beta, max_cond
        self.X: Tensor | None = None
        self.F: Tensor | None = None

    def __call__(self, t: int, x: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        xf, ff = x.reshape(B, -1), fx.reshape(B, -1)
        if self.X is None:
            self.X = xf.new_zeros(B, self.m, xf.shape[1])
            self.F = xf.new_zeros(B, self.m, xf.shape[1])
        assert self.F is not None
        slot = t % self.m
        self.X[:, slot] = xf
        self.F[:, slot] = ff
        k = min(t + 1, self.m)
        X, F = self.X[:, :k], self.F[:, :k]
        plain = (1 - self.beta) * x + self.beta * fx
        if k == 1:
            return plain, torch.zeros(B, dtype=torch.bool, device=x.device)
        dt = acc_dtype(x.dtype)
        G = (F - X).to(dt)
        K = torch.bmm(G, G.transpose(1, 2))
        scale = torch.diagonal(K, dim1=1, dim2=2).mean(dim=1)
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
        eye = torch.eye(k, dtype=dt, device=x.device)
        K = K + (self.lam * scale).reshape(B, 1, 1) * eye
        K_ok = torch.isfinite(K).all(dim=2).all(dim=1)
        K = torch.where(K_ok.reshape(B, 1, 1), K, eye.expand(B, k, k))
        ones = torch.ones(B, k, 1, dtype=dt, device=x.device)
        sol, info = torch.linalg.solve_ex(K, ones)
        alpha = sol.squeeze(-1)
        alpha = alpha / alpha.sum(dim=1, keepdim=True)
        ev = torch.linalg.eigvalsh(K)
        cond = ev[:, -1].abs() / ev[:, 0].abs().clamp_min(torch.finfo(dt).tiny)
        bad = ~K_ok | (info != 0) | ~torch.isfinite(alpha).all(dim=1) | ~(cond <= self.max_cond)
        alpha = torch.where(bad.unsqueeze(-1), torch.zeros_like(alpha), alpha).to(x.dtype)
        mixed = self.beta * torch.bmm(alpha.unsqueeze(1), F).squeeze(1)
        if self.beta != 1.0:
            mixed = mixed + (1 - self.beta) * torch.bmm(alpha.unsqueeze(1), X).squeeze(1)
        return bwhere(bad, plain, mixed.reshape(x.shape)), bad


def anderson(
    f: StepFn,
    e: Tensor,
    h0: Tensor,
    *,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
    max_cond: float = 1e12,
    max_iters: int = 100,
    tol: float = 1e-5,
    stop_on_converge: bool = True,
    max_period: int = 8,
    cycle_tol: float = 1e-3,
    div_factor: float = 1e4,
    eps: float = 1e-12,
) -> SolverResult:
    """Anderson-accelerated fixed-point solve (memory m, relative regularization lam, mixing beta).

    Finds h* much faster than plain iteration when the map is a slow contraction, and often
    when it is not a contraction at all; use it to *locate* fixed points, and plain iteration
    to ask whether the model's own dynamics reach them.  ``extra["fallbacks"]`` counts the
    safeguarded plain steps per sample.
    """
    if m < 1:
        raise ValueError("Anderson memory m must be >= 1")
    return _solve(
        f, e, h0, _Anderson(m, lam, beta, max_cond),
        method="anderson", max_iters=max_iters, tol=tol, stop_on_converge=stop_on_converge,
        max_period=max_period, cycle_tol=cycle_tol, div_factor=div_factor, eps=eps,
    )  # fmt: skip


# name -> solver (f, e, h0, **options) -> SolverResult; `register_solver` adds one, `solve` looks it up
SOLVERS: dict[str, Callable[..., SolverResult]] = {"iter": fixed_point_iter, "anderson": anderson}


def register_solver(name: str, fn: Callable[..., SolverResult]) -> Callable[..., SolverResult]:
    """Make `fn(f, e, h0, **options) -> SolverResult` available as `solve(..., method=name)`."""
    if name in SOLVERS and SOLVERS[name] is not fn:
        raise ValueError(f"solver name {name!r} is taken")
    SOLVERS[name] = fn
    return fn


def solve(f: StepFn, e: Tensor, h0: Tensor, *, method: str = "anderson", **kwargs) -> SolverResult:
    """The solver registered as `method` ("iter": plain iteration, "anderson": Anderson acceleration)."""
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; choose one of {', '.join(SOLVERS)}")
    return SOLVERS[method](f, e, h0, **kwargs)
