"""One-call fixed-point analysis of a step map on a batch (what ``loopkit analyze`` reports)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._utils import to_jsonable
from .diagnostics import _stats, end_state_spread, initial_state_dependence, reachability, sensitivity, sensitivity_norm
from .jacobian import StepFn, floquet_radius, geometry
from .solvers import solve


def analyze(
    f: StepFn,
    e: Tensor,
    h0: Tensor,
    *,
    method: str = "iter",
    max_iters: int = 100,
    tol: float = 1e-5,
    refine: bool = False,
    refine_max_iters: int = 200,
    h0s: Sequence[Tensor] | Callable[[int], Tensor] | None = None,
    n_inits: int = 4,
    with_sensitivity: bool = True,
    with_geometry: bool = True,
    with_min_sv: bool = True,
    with_sensitivity_norm: bool = False,
    norm_give_up_above: float | None = None,
    readout: Callable[[Tensor], Tensor] | None = None,
    min_sv_matvecs: int = 4000,
    krylov_dim: int = 20,
    restarts: int = 1,
    rho_tol: float = 1e-3,
    rho_restarts: int = 10,
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
    - rho(J) restarts Arnoldi (up to ``rho_restarts`` cycles) until every Ritz residual is at
      most ``rho_tol``; the residuals and the share at tolerance are reported beside rho.
    - ``with_sensitivity_norm`` adds ||dh*/de||_2 (the worst direction; two solves per product).
      With ``norm_give_up_above`` it is abandoned, and says why, as soon as one of its solves stops
      above that relative residual (I - J near-singular, as at rho(J) = 1: each of its ~32 solves
      would run to its cap, tens of minutes on a CPU, for an unfinished iterate).
    - With geometry, "attractors" says per sample whether the end state is an attracting fixed
      point (converged, rho(J) < 1), an attracting cycle (a period-p orbit whose monodromy has
      spectral radius < 1: the Floquet test, since rho(J) at one point of an orbit decides
      nothing), or neither; ``readout`` (h -> logits), when given, adds whether the decoded
      answer (argmax of the last dim) is the same at every point of each cycle.
    Per-sample values are lists in batch order; non-finite numbers become None.
    """
    kw = dict(solver_kwargs or {})
    t0 = time.perf_counter()
    res = solve(f, e, h0, method=method, max_iters=max_iters, tol=tol, **kw)
    report: dict = {
        "config": {"method": method, "max_iters": max_iters, "tol": tol, "refine": refine, "seed": seed},
        "reachability": reachability(res),
        "spread": end_state_spread(res.h),
    }
    h_star = res.h
    if refine:
        ref = solve(f, e, res.h, method="anderson", max_iters=refine_max_iters, tol=tol, **kw)
        report["refined"] = reachability(ref)
        report["spread_refined"] = end_state_spread(ref.h)
        h_star = ref.h
    if h0s is not None:
        dep = initial_state_dependence(f, e, h0s, n_inits=n_inits, method=method, max_iters=max_iters, tol=tol, **kw)
        report["init_dependence"] = dep.summary()
    if with_sensitivity:
        report["sensitivity"] = sensitivity(f, h_star, e, seed=seed, mode=mode).summary()
    if with_geometry:
        geo = geometry(f, h_star, e, krylov_dim=krylov_dim, restarts=restarts, min_sv=with_min_sv,
                       min_sv_matvecs=min_sv_matvecs, rho_tol=rho_tol, rho_restarts=rho_restarts, mode=mode, seed=seed)
        rho = geo["spectral_radius"]
        summary: dict = {
            "spectral_radius": _stats(rho),
            "spectral_radius_residual": _stats(geo["spectral_radius_residual"]),
            "spectral_radius_tol": rho_tol,
            "spectral_radius_at_tol_fraction": (geo["spectral_radius_residual"] <= rho_tol).double().mean().item(),
            "stable_fraction": (rho < 1).double().mean().item(),
            "complex_dominant_fraction": (geo["dominant_eigenvalue"].imag.abs() > 1e-8 * rho).double().mean().item(),
            "spectral_norm": _stats(geo["spectral_norm"]),
            "per_sample": {k: v for k, v in geo.items()},
        }
        if with_min_sv:
            summary["sigma_min_I_minus_J"] = _stats(geo["sigma_min_I_minus_J"])
        report["geometry"] = summary
    if with_sensitivity_norm:
        report["sensitivity_norm"] = sensitivity_norm(f, h_star, e, seed=seed, mode=mode,
                                                      give_up_above=norm_give_up_above).summary()
    if with_geometry:
        report["attractors"] = attractors(f, res, e, geo["spectral_radius"], readout=readout, mode=mode, seed=seed)
    report["seconds"] = time.perf_counter() - t0
    report["device"] = str(h0.device)
    report["dtype"] = str(h0.dtype).replace("torch.", "")
    return to_jsonable(report)


def attractors(f: StepFn, res, e: Tensor, rho: Tensor, *, readout: Callable[[Tensor], Tensor] | None = None,
               mode: str = "auto", seed: int = 0) -> dict:
    """Attracting fixed point / attracting cycle / neither, per sample (see `analyze`)."""
    period = res.cycle_period
    floquet = floquet_radius(f, res.h, e, period, mode=mode, seed=seed).rho
    fixed = res.converged.cpu() & (rho.cpu() < 1)
    cycle = (period.cpu() >= 2) & (floquet.cpu() < 1)
    kind = ["fixed_point" if a else "cycle" if b else "neither" for a, b in zip(fixed.tolist(), cycle.tolist())]
    out: dict = {"fixed_point_fraction": fixed.double().mean().item(),
                 "attracting_cycle_fraction": cycle.double().mean().item(),
                 "neither_fraction": 1 - (fixed | cycle).double().mean().item(),
                 "floquet_radius": _stats(floquet),
                 "per_sample": {"kind": kind, "floquet_radius": floquet}}
    if readout is not None and (period >= 2).any():
        same = torch.ones(len(kind), dtype=torch.bool)
        h, answer = res.h, readout(res.h).argmax(-1)
        for step in range(1, int(period.max())):
            h = f(h, e)
            on_orbit = (period > step).cpu()  # steps still inside each sample's cycle
            same &= ~on_orbit | (readout(h).argmax(-1) == answer).flatten(1).all(1).cpu()
        cycling = period.cpu() >= 2
        out["readout_constant_on_cycle_fraction"] = same[cycling].double().mean().item()
        out["per_sample"]["readout_constant_on_cycle"] = [bool(s) if c else None for s, c in zip(same, cycling)]
    return out
