"""One-call fixed-point analysis of a step map on a batch (what ``loopkit analyze`` reports)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import Tensor

from ._utils import to_jsonable
from .diagnostics import _stats, end_state_spread, initial_state_dependence, reachability, sensitivity
from .jacobian import StepFn, geometry
from .solvers import solve


def analyze(
    f: StepFn,
    e: Tensor,
    h0: Tensor,
    *,
    method: str = "iter",
    max_iter: int = 100,
    tol: float = 1e-5,
    refine: bool = False,
    refine_max_iter: int = 200,
    h0s: Sequence[Tensor] | Callable[[int], Tensor] | None = None,
    n_inits: int = 4,
    with_sensitivity: bool = True,
    with_geometry: bool = True,
    with_min_sv: bool = True,
    min_sv_matvecs: int = 4000,
    krylov_dim: int = 20,
    restarts: int = 1,
    mode: str = "auto",
    seed: int = 0,
    solver_kwargs: dict | None = None,
) -> dict:
    """Run the solver and every diagnostic; return a JSON-friendly dict.

    - ``method`` ("iter" = the model's own dynamics, or "anderson") drives reachability.
    - The local diagnostics (sensitivity, geometry) are taken at the solver's final states.
      With ``refine`` an Anderson solve started from those states locates h* more precisely
      first (its reachability is reported under "refined"); they are only meaningful where the
      state is near a fixed point, so check ``reachability.per_sample.converged`` alongside.
    - ``h0s`` (a list of initial states, or a callable k -> h0) enables the initial-state
      dependence check over ``n_inits`` starts.
    - ``with_min_sv`` controls sigma_min(I - J), the most expensive estimate (inner GMRES);
      ``min_sv_matvecs`` caps its Jacobian products (its residual says how far it got).
    Per-sample values are lists in batch order; non-finite numbers become None.
    """
    kw = dict(solver_kwargs or {})
    t0 = time.perf_counter()
    res = solve(f, e, h0, method=method, max_iter=max_iter, tol=tol, **kw)
    report: dict = {
        "config": {"method": method, "max_iter": max_iter, "tol": tol, "refine": refine, "seed": seed},
        "reachability": reachability(res),
        "spread": end_state_spread(res.h),
    }
    h_star = res.h
    if refine:
        ref = solve(f, e, res.h, method="anderson", max_iter=refine_max_iter, tol=tol, **kw)
        report["refined"] = reachability(ref)
        report["spread_refined"] = end_state_spread(ref.h)
        h_star = ref.h
    if h0s is not None:
        dep = initial_state_dependence(f, e, h0s, n_inits=n_inits, method=method, max_iter=max_iter, tol=tol, **kw)
        report["init_dependence"] = dep.summary()
    if with_sensitivity:
        report["sensitivity"] = sensitivity(f, h_star, e, seed=seed, mode=mode).summary()
    if with_geometry:
        geo = geometry(f, h_star, e, krylov_dim=krylov_dim, restarts=restarts, min_sv=with_min_sv,
                       min_sv_matvecs=min_sv_matvecs, mode=mode, seed=seed)
        rho = geo["spectral_radius"]
        summary: dict = {
            "spectral_radius": _stats(rho),
            "stable_fraction": (rho < 1).double().mean().item(),
            "complex_dominant_fraction": (geo["dominant_eigenvalue"].imag.abs() > 1e-8 * rho).double().mean().item(),
            "spectral_norm": _stats(geo["spectral_norm"]),
            "per_sample": {k: v for k, v in geo.items()},
        }
        if with_min_sv:
            summary["sigma_min_I_minus_J"] = _stats(geo["sigma_min_I_minus_J"])
        report["geometry"] = summary
    report["seconds"] = time.perf_counter() - t0
    report["device"] = str(h0.device)
    report["dtype"] = str(h0.dtype).replace("torch.", "")
    return to_jsonable(report)
