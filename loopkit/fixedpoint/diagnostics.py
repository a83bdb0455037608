"""Reachability and input-dependence diagnostics built on the solvers and Jacobian products.

- ``reachability``: does iterating reach a fixed point, how fast, and if not, why not
  (cycle / divergence / too slow)?
- ``end_state_spread``: do different inputs end in different states?  A spread of ~0 means the
  loop collapsed to an input-independent point: it "converges" but computes nothing.
- ``sensitivity``: ||dh*/de . v|| by the implicit function theorem; a local, directional
  version of the same question that does not depend on how inputs are distributed.
- ``initial_state_dependence``: do different h0 reach the same end state for the same input?
  If not, the answer depends on initialization (multiple attractors / no unique fixed point).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._utils import bnorm, random_unit, to_jsonable
from .jacobian import Linearization, StepFn
from .krylov import solve_i_minus, top_ritz
from .solvers import SolverResult, solve


def _stats(x: Tensor) -> dict:
    """min/median/mean/max over the finite entries of a (B,) tensor (None when there are none)."""
    x = x.detach().double().cpu()
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": x.min().item(),
        "median": x.median().item(),
        "mean": x.mean().item(),
        "max": x.max().item(),
    }


def reachability(res: SolverResult, tol: float | None = None) -> dict:
    """Per-sample and aggregated reachability of a solver run, as plain JSON-able Python.

    ``converged_fraction_vs_t[t]`` is the fraction of samples with r_s < tol for some s <= t
    (first passage), so it is monotone and comparable between stopping modes.  ``tol`` may be
    looser than the one the solver ran with (a stricter one cannot be judged after stopping).
    """
    tol = res.tol if tol is None else tol
    B = res.converged.shape[0]
    hit = res.trace < tol
    if tol == res.tol:
        first = res.converged
    else:
        first = hit.any(dim=0)
    frac_t = hit.cummax(dim=0).values.double().mean(dim=1) if res.trace.numel() else torch.zeros(0)
    conv_iters = res.iters[res.converged].double()
    periods = res.cycle_period[res.cycle_period > 0]
    return to_jsonable(
        {
            "method": res.method,
            "tol": tol,
            "n_samples": B,
            "iterations_run": res.nfe,
            "converged_fraction": first.double().mean().item(),
            "converged_fraction_vs_t": frac_t,
            "iters_to_converge": _stats(conv_iters),
            "final_residual": _stats(res.residual),
            "median_residual_vs_t": res.trace.double().nanmedian(dim=1).values if res.trace.numel() else [],
            "cycle_fraction": (res.cycle_period > 0).double().mean().item(),
            "cycle_periods": {int(p): int((periods == p).sum()) for p in periods.unique().tolist()},
            "diverged_fraction": res.diverged.double().mean().item(),
            "per_sample": {
                "converged": first,
                "iters": res.iters,
                "final_residual": res.residual,
                "cycle_period": res.cycle_period,
                "diverged": res.diverged,
            },
        }
    )


def end_state_spread(h: Tensor, eps: float = 1e-12) -> dict:
    """Spread of end states across the batch (different inputs), relative to their size.

    relative_spread = mean_i ||h_i - mean_j h_j|| / mean_i ||h_i||  (0 = input-independent
    collapse), and the mean pairwise distance ||h_i - h_j|| (i != j) over the same scale.
    Per sample: distance to the batch mean over the mean norm.
    """
    B = h.shape[0]
    flat = h.reshape(B, -1).double()
    scale = bnorm(flat).mean().clamp_min(eps)
    to_mean = bnorm(flat - flat.mean(dim=0, keepdim=True))
    if B > 1:
        pair = torch.cdist(flat.unsqueeze(0), flat.unsqueeze(0)).squeeze(0)
        pairwise = (pair.sum() / (B * (B - 1))) / scale
    else:
        pairwise = torch.zeros((), dtype=flat.dtype)
    return to_jsonable(
        {
            "relative_spread": (to_mean.mean() / scale).item(),
            "pairwise_relative": pairwise.item(),
            "mean_norm": bnorm(flat).mean().item(),
            "per_sample": to_mean / scale,
        }
    )


@dataclass
class Sensitivity:
    """IFT sensitivity u = (I - J)^{-1} (df/de) v per sample, for unit directions v."""

    u: Tensor  # (B, *S) dh*/de . v
    norm: Tensor  # (B,) ||u||
    relative: Tensor  # (B,) ||u|| * ||e|| / ||h*||: relative change of h* per relative change of e
    v: Tensor  # (B, *E) the unit directions used
    linear_residual: Tensor  # (B,) ||(I-J)u - b|| / ||b|| of the linear solve
    converged: Tensor  # (B,) bool

    def summary(self) -> dict:
        return to_jsonable(
            {
                "norm": _stats(self.norm),
                "relative": _stats(self.relative),
                "linear_residual_max": self.linear_residual.max().item() if self.norm.numel() else None,
                "linear_converged_fraction": self.converged.double().mean().item(),
                "per_sample": {"norm": self.norm, "relative": self.relative, "linear_residual": self.linear_residual},
            }
        )


@torch.no_grad()
def sensitivity(
    f: StepFn | Linearization,
    h_star: Tensor | None = None,
    e: Tensor | None = None,
    v: Tensor | None = None,
    *,
    seed: int = 0,
    method: str = "gmres",
    tol: float | None = None,
    restart: int = 30,
    max_restarts: int = 20,
    max_iters: int = 500,
    mode: str = "auto",
    eps: float = 1e-12,
) -> Sensitivity:
    """||dh*/de . v|| per sample via the implicit function theorem.

    Differentiating h* = f(h*, e) gives (I - J) dh* = (df/de) de, so for a direction v we solve
    (I - J) u = (df/de) v with JVPs and an iterative solver (``method`` "gmres" or "neumann";
    Neumann only converges when rho(J) < 1).  ``v`` defaults to a random direction with unit
    norm per sample (seeded).  Meaningful only where h* is (close to) a fixed point.
    """
    lin = f if isinstance(f, Linearization) else Linearization(f, h_star, e, mode)  # type: ignore[arg-type]
    if tol is None:
        tol = 1e-10 if lin.h.dtype == torch.float64 else 1e-5
    if v is None:
        v = random_unit(lin.e, seed)
    b = lin.jvp_e(v)
    sol = solve_i_minus(lin.jvp, b, method=method, tol=tol, restart=restart, max_restarts=max_restarts,
                        max_iters=max_iters)
    n = bnorm(sol.x)
    rel = n * bnorm(lin.e) / bnorm(lin.h).clamp_min(eps)
    return Sensitivity(sol.x, n, rel, v, sol.residual, sol.converged)


@dataclass
class InitDependence:
    """End states reached from K initial states for the same inputs."""

    h: Tensor  # (K, B, *S)
    spread: Tensor  # (B,) mean_k ||h_k - mean_k h_k|| / mean_k ||h_k||
    max_pairwise: Tensor  # (B,) max_{k,l} ||h_k - h_l|| / mean_k ||h_k||
    converged: Tensor  # (K, B) bool
    results: list[SolverResult]

    def summary(self) -> dict:
        return to_jsonable(
            {
                "n_inits": self.h.shape[0],
                "spread": _stats(self.spread),
                "max_pairwise": _stats(self.max_pairwise),
                "converged_fraction_per_init": self.converged.double().mean(dim=1),
                "per_sample": {"spread": self.spread, "max_pairwise": self.max_pairwise},
            }
        )


def initial_state_dependence(
    f: StepFn,
    e: Tensor,
    h0s: Sequence[Tensor] | Callable[[int], Tensor],
    *,
    n_inits: int = 4,
    eps: float = 1e-12,
    **solver_kwargs,
) -> InitDependence:
    """Run the solver from several h0 (a list, or a callable k -> h0 for k < n_inits) and measure
    per sample how far apart the end states are, relative to their size.

    0 means every start reached the same state (a unique attractor for that input).
    ``solver_kwargs`` go to ``solvers.solve`` (default method "iter": the model's own dynamics).
    """
    starts = list(h0s) if not callable(h0s) else [h0s(k) for k in range(n_inits)]
    solver_kwargs.setdefault("method", "iter")
    results = [solve(f, e, h0, **solver_kwargs) for h0 in starts]
    H = torch.stack([r.h for r in results])  # (K, B, *S)
    K, B = H.shape[:2]
    flat = H.reshape(K, B, -1).double()
    norms = torch.linalg.vector_norm(flat, dim=2)  # (K, B)
    scale = norms.mean(dim=0).clamp_min(eps)
    spread = torch.linalg.vector_norm(flat - flat.mean(dim=0, keepdim=True), dim=2).mean(dim=0) / scale
    pair = torch.cdist(flat.transpose(0, 1), flat.transpose(0, 1))  # (B, K, K)
    max_pair = pair.flatten(1).max(dim=1).values / scale
    conv = torch.stack([r.converged for r in results])
    return InitDependence(H, spread, max_pair, conv, results)


@dataclass
class SensitivityNorm:
    """||dh*/de||_2 per sample: the operator norm of S = (I - J)^{-1} (df/de)."""

    value: Tensor  # (B,) largest singular value of S (nan when given up)
    relative: Tensor  # (B,) value * ||e|| / ||h*||
    residual: Tensor  # (B,) relative Ritz residual of the Lanczos estimate on S^T S
    linear_residual: Tensor  # (B,) worst residual of the inner (I - J) and (I - J)^T solves
    gave_up_above: float | None = None  # set when a solve stopped above this residual and the estimate was abandoned

    def summary(self) -> dict:
        if self.gave_up_above is not None:
            worst = self.linear_residual.max().item()
            return to_jsonable({"skipped": f"an IFT solve stopped at relative residual {worst:.2g} > "
                                           f"{self.gave_up_above:g}: I - J is near-singular at these end states",
                                "linear_residual_max": worst})
        return to_jsonable({"norm": _stats(self.value), "relative": _stats(self.relative),
                            "ritz_residual_max": self.residual.max().item() if self.value.numel() else None,
                            "linear_residual_max": self.linear_residual.max().item() if self.value.numel() else None,
                            "per_sample": {"norm": self.value, "relative": self.relative,
                                           "ritz_residual": self.residual}})


class _Unsolvable(Exception):
    """Raised out of the Lanczos loop when an inner solve cannot reach the asked residual."""


@torch.no_grad()
def sensitivity_norm(
    f: StepFn | Linearization,
    h_star: Tensor | None = None,
    e: Tensor | None = None,
    *,
    krylov_dim: int = 8,
    restarts: int = 1,
    tol: float = 1e-6,
    seed: int = 0,
    mode: str = "auto",
    eps: float = 1e-12,
    give_up_above: float | None = None,
) -> SensitivityNorm:
    """The worst-case input sensitivity ||dh*/de||_2 per sample, not one random direction.

    S v = (I - J)^{-1} (df/de) v and S^T w = (df/de)^T (I - J)^{-T} w each cost one GMRES solve
    (JVPs, resp. VJPs); Lanczos on S^T S (the Krylov form of power iteration) gives the top
    singular value. About 2 x krylov_dim x (restarts + 1) solves: the expensive option, kept
    beside the one-direction `sensitivity`. With ``give_up_above`` the estimate is abandoned
    (values nan, ``gave_up_above`` set) as soon as one solve stops above that relative residual:
    where I - J is near-singular every later solve runs to its cap too (tens of minutes on a CPU)
    and the result would be an unfinished iterate, not dh*/de.
    """
    lin = f if isinstance(f, Linearization) else Linearization(f, h_star, e, mode)  # type: ignore[arg-type]
    solve_tol = 1e-10 if lin.h.dtype == torch.float64 else 1e-5
    worst = torch.zeros(lin.h.shape[0], dtype=lin.h.dtype, device=lin.h.device)

    def sts(v: Tensor) -> Tensor:
        nonlocal worst
        a = solve_i_minus(lin.jvp, lin.jvp_e(v), tol=solve_tol)
        b = solve_i_minus(lin.vjp, a.x, tol=solve_tol)
        worst = torch.maximum(worst, torch.maximum(a.residual, b.residual).to(worst))
        if give_up_above is not None and worst.max() > give_up_above:
            raise _Unsolvable
        return lin.vjp_e(b.x)

    try:
        r = top_ritz(sts, random_unit(lin.e, seed), krylov_dim=krylov_dim, restarts=restarts, tol=tol, symmetric=True)
    except _Unsolvable:
        nan = torch.full_like(worst, math.nan)
        return SensitivityNorm(nan, nan, nan, worst, gave_up_above=give_up_above)
    value = r.value.clamp_min(0).sqrt()
    rel = value * bnorm(lin.e) / bnorm(lin.h).clamp_min(eps)
    return SensitivityNorm(value, rel, r.residual, worst)


def distinct_states(h: Tensor, rel_tol: float = 1e-2, eps: float = 1e-12) -> dict:
    """How many different end states a batch of inputs reaches, and how much of the input that keeps.

    Leader clustering: each state joins the first cluster whose leader lies within
    rel_tol x (mean state norm), else starts a new one. A loop whose fixed points do not depend
    on the input (C1: no recall) ends in a few clusters whatever the inputs; an input-dependent
    one in about as many as there are inputs. ``retained_bits`` is the entropy of the cluster
    sizes over log2(N): 1 when every input has its own end state, 0 when all share one.
    """
    flat = h.reshape(h.shape[0], -1).double()
    radius = rel_tol * bnorm(flat).mean().clamp_min(eps)
    leaders: list[Tensor] = []
    labels = torch.empty(flat.shape[0], dtype=torch.long)
    for i, x in enumerate(flat):
        if leaders:
            d = torch.linalg.vector_norm(torch.stack(leaders) - x, dim=1)
            j = int(d.argmin())
            if d[j] <= radius:
                labels[i] = j
                continue
        labels[i] = len(leaders)
        leaders.append(x)
    sizes = torch.bincount(labels).double()
    p = sizes / sizes.sum()
    entropy = float(-(p * p.log2()).sum())
    n = flat.shape[0]
    return to_jsonable({"n_inputs": n, "rel_tol": rel_tol, "clusters": len(leaders),
                        "largest_cluster_share": float(p.max()),
                        "retained_bits": entropy / math.log2(n) if n > 1 else 0.0,
                        "per_sample": labels})
