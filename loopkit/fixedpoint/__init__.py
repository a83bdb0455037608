"""Fixed-point diagnostics for weight-tied iterated maps h <- f(h, e).

Knows nothing about models, training or tasks: everything takes a callable ``f(h, e)`` that is
batched and per-sample (sample i of the output depends only on sample i of h and e), plus
tensors of shape (B, *state_shape).  Results are per sample, shape (B,), plus aggregates.

    solve / fixed_point_iter / anderson     -> SolverResult (reachability of h = f(h, e))
    reachability(result)                    -> JSON dict
    end_state_spread(h)                     -> JSON dict (collapse across inputs)
    sensitivity(f, h*, e)                   -> Sensitivity (IFT, ||dh*/de . v||)
    sensitivity_norm(f, h*, e)              -> SensitivityNorm (||dh*/de||_2, Lanczos through the IFT solves)
    floquet_radius(f, h, e, period)         -> SpectralRadius of a cycle's monodromy (does the orbit attract?)
    distinct_states(h)                      -> JSON dict (how many end states a batch of inputs reaches)
    initial_state_dependence(f, e, h0s)     -> InitDependence
    spectral_radius / spectral_norm / min_singular_value / geometry   (Jacobian at h*)
    attach_implicit / solve_implicit        -> implicit differentiation through h*
    gmres / neumann / solve_i_minus / top_ritz                      (batched Krylov tools)
    analyze(f, e, h0)                       -> JSON dict with all of the above
"""

from .analyze import analyze
from .diagnostics import (
    InitDependence,
    Sensitivity,
    SensitivityNorm,
    distinct_states,
    end_state_spread,
    initial_state_dependence,
    reachability,
    sensitivity,
    sensitivity_norm,
)
from .implicit import attach_implicit, solve_implicit
from .jacobian import (
    Linearization,
    SingularValue,
    SpectralRadius,
    floquet_radius,
    geometry,
    min_singular_value,
    spectral_norm,
    spectral_radius,
)
from .krylov import LinearSolveResult, RitzResult, gmres, neumann, solve_i_minus, top_ritz
from .solvers import SOLVERS, SolverResult, anderson, fixed_point_iter, register_solver, solve

__all__ = [
    "InitDependence",
    "LinearSolveResult",
    "Linearization",
    "RitzResult",
    "Sensitivity",
    "SensitivityNorm",
    "SingularValue",
    "SolverResult",
    "SpectralRadius",
    "analyze",
    "anderson",
    "attach_implicit",
    "distinct_states",
    "end_state_spread",
    "fixed_point_iter",
    "floquet_radius",
    "geometry",
    "gmres",
    "initial_state_dependence",
    "min_singular_value",
    "neumann",
    "reachability",
    "sensitivity",
    "sensitivity_norm",
    "solve",
    "SOLVERS",
    "register_solver",
    "solve_i_minus",
    "solve_implicit",
    "spectral_norm",
    "spectral_radius",
    "top_ritz",
]
