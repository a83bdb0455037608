"""Implicit differentiation through a fixed point.

If h* = f(h*, e; theta), the implicit function theorem gives, for a loss gradient g = dL/dh*,

    dL/dtheta = w^T df/dtheta,   dL/de = w^T df/de,   where (I - J^T) w = g,  J = df/dh at h*.

So backprop needs no stored trajectory: one adjoint linear solve at h*.  We implement it with
the standard trick: re-apply f once *with* grad at the detached h* (this builds the
df/d(e, theta) part of the graph), and put a hook on that output that replaces the incoming
gradient g by the adjoint solution w.  Autograd then delivers w^T df/de and w^T df/dtheta to
e and to every parameter inside f.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .krylov import solve_i_minus
from .solvers import SolverResult, StepFn, solve


def attach_implicit(
    f: StepFn,
    h_star: Tensor,
    e: Tensor,
    *,
    method: str = "gmres",
    tol: float | None = None,
    restart: int = 30,
    max_restarts: int = 20,
    max_iters: int = 500,
    stats: dict | None = None,
) -> Tensor:
    """Return h* (same values) attached to the graph so backward uses the implicit gradient.

    ``h_star`` is a solved fixed point (its own graph, if any, is discarded).  ``e`` and the
    parameters of ``f`` may require grad.  The adjoint system (I - J^T) w = g is solved with
    ``method`` "gmres" (default; any spectrum) or "neumann" (needs rho(J) < 1), using VJPs
    through one stored evaluation of f at h*.  If ``stats`` is given, each backward records
    the adjoint solve's per-sample relative residual in ``stats["residual"]`` (and
    ``stats["matvecs"]``), so callers can check that the gradient is trustworthy.
    """
    h_star = h_star.detach()
    out = f(h_star, e)
    if not out.requires_grad:  # nothing upstream needs gradients
        return h_star
    if tol is None:
        tol = 1e-10 if h_star.dtype == torch.float64 else 1e-6
    cache: dict = {}

    def vjp_h(u: Tensor) -> Tensor:
        # One stored evaluation of f at h*, w.r.t. h only, reused by every adjoint matvec.
        if "graph" not in cache:
            with torch.enable_grad():
                z = h_star.clone().requires_grad_(True)
                cache["graph"] = (z, f(z, e.detach()))
        z, fz = cache["graph"]
        (g,) = torch.autograd.grad(fz, z, u, retain_graph=True, allow_unused=True)
        return torch.zeros_like(z) if g is None else g

    def hook(g: Tensor) -> Tensor:
        with torch.no_grad():
            # (I - J)^T w = g through w -> J^T w: the same linear solvers, fed vector-Jacobian products
            sol = solve_i_minus(vjp_h, g, method=method, tol=tol, restart=restart, max_restarts=max_restarts,
                                max_iters=max_iters)
        if stats is not None:
            stats["residual"] = sol.residual.detach()
            stats["matvecs"] = sol.matvecs
        return sol.x.to(g.dtype)

    out.register_hook(hook)
    # Forward value exactly h*; gradient flows through `out` (and thus through the hook).
    return h_star + (out - out.detach())


def solve_implicit(
    f: StepFn,
    e: Tensor,
    h0: Tensor,
    *,
    solver: str = "anderson",
    backward: str = "gmres",
    backward_tol: float | None = None,
    stats: dict | None = None,
    **solver_kwargs,
) -> tuple[Tensor, SolverResult]:
    """Solve for h* without a graph, then ``attach_implicit``: a differentiable fixed-point layer."""
    res = solve(f, e, h0, method=solver, **solver_kwargs)
    return attach_implicit(f, res.h, e, method=backward, tol=backward_tol, stats=stats), res
