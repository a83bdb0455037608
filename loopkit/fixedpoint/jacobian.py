"""Jacobian products of the map at a state, and the local geometry they reveal.

At a state h (ideally a fixed point h*) with input e, J = df/dh.  Because f acts on every
sample independently, J is block diagonal over the batch, so a single batched JVP/VJP applies
each sample's own J_i to its own vector: every estimate below is per sample at the cost of
one batched call per Krylov step.

- ``spectral_radius``: rho(J), whether the forward iteration is locally contracting
  (rho < 1 is also the "stable backprop" regime for the Neumann/implicit solve).
- ``spectral_norm``: ||J||_2 >= rho(J); the gap measures non-normality (transient growth).
- ``min_singular_value``: sigma_min(I - J), how well-posed the implicit function theorem
  (and hence implicit backprop and the sensitivity estimate) is at h*.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._utils import bnorm, bview, random_unit
from .krylov import gmres, top_ritz

StepFn = Callable[[Tensor, Tensor], Tensor]


def _with_math_attention(f: StepFn) -> StepFn:
    """f with scaled_dot_product_attention forced onto its math backend: the fused CPU/GPU kernels
    have no forward-mode AD rule and no double backward, which every product below needs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def g(h: Tensor, e: Tensor) -> Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            return f(h, e)

    return g


class Linearization:
    """J = df/dh and df/de of ``f`` at (h, e), applied to batched vectors.

    mode:
      "linearize": J v via ``torch.func.linearize``: f is traced once at (h, e) and each product
                 then runs only the tangent computation -- several times cheaper per product than
                 "forward" on a transformer step, after a one-off tracing cost
                 (benchmarks/README.md, "Diagnostics cost");
      "forward": J v via ``torch.func.jvp`` (re-runs f each call, no stored graph);
      "reverse": both products from one stored autograd graph, J v by the double-backward
                 trick d/du <J^T u, v> (for ops lacking forward-mode AD rules, e.g. some fused
                 attention kernels);
      "auto":    linearize, falling back to forward and then reverse if tracing or a trial JVP
                 raises (e.g. data-dependent control flow in f, ops without forward-mode rules).
    J^T u always uses ``torch.func.vjp`` (forward mode) or the stored graph (reverse mode).
    """

    def __init__(self, f: StepFn, h: Tensor, e: Tensor, mode: str = "auto") -> None:
        if mode not in ("auto", "linearize", "forward", "reverse"):
            raise ValueError(f"mode must be 'auto', 'linearize', 'forward' or 'reverse', got {mode!r}")
        self.f = _with_math_attention(f)
        self.h = h.detach()
        self.e = e.detach()
        self._vjp_fn: Callable | None = None
        self._vjp_e_fn: Callable | None = None
        self._lin_jvp: Callable | None = None
        self._graph: tuple | None = None
        if mode in ("auto", "linearize"):
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracing internals warn about deprecated helpers
                    _, self._lin_jvp = torch.func.linearize(lambda x: self.f(x, self.e), self.h)
                mode = "linearize"
            except Exception:  # noqa: BLE001 - tracing can fail in many ways; fall back to plain JVPs
                if mode == "linearize":
                    raise
                mode = "auto"
        if mode == "auto":
            try:
                with torch.no_grad():
                    self._fwd_jvp(torch.zeros_like(self.h))
                mode = "forward"
            except (RuntimeError, NotImplementedError):
                mode = "reverse"
        self.mode = mode

    # forward mode -------------------------------------------------------------------------
    def _fwd_jvp(self, v: Tensor) -> Tensor:
        return torch.func.jvp(lambda x: self.f(x, self.e), (self.h,), (v,))[1]

    # reverse mode: one graph, reused for every product ------------------------------------
    def _reverse_graph(self) -> tuple:
        if self._graph is None:
            with torch.enable_grad():
                x = self.h.clone().requires_grad_(True)
                y = self.e.clone().requires_grad_(True)
                out = self.f(x, y)
                u = torch.zeros_like(out, requires_grad=True)
                gx, gy = torch.autograd.grad(out, (x, y), u, create_graph=True, allow_unused=True)
            self._graph = (x, y, out, u, gx, gy)
        return self._graph

    @staticmethod
    def _grad_or_zero(out: Tensor | None, inp: Tensor, cot: Tensor) -> Tensor:
        if out is None or not out.requires_grad:
            return torch.zeros_like(inp)
        g = torch.autograd.grad(out, inp, cot, retain_graph=True, allow_unused=True)[0]
        return torch.zeros_like(inp) if g is None else g

    # public products ------------------------------------------------------------------------
    def jvp(self, v: Tensor) -> Tensor:
        """J v (same shape as h)."""
        if self.mode == "linearize":
            return self._lin_jvp(v)
        if self.mode == "forward":
            return self._fwd_jvp(v)
        x, _, _, u, gx, _ = self._reverse_graph()
        return self._grad_or_zero(gx, u, v)

    def vjp(self, u: Tensor) -> Tensor:
        """J^T u (same shape as h)."""
        if self.mode in ("linearize", "forward"):
            if self._vjp_fn is None:
                _, self._vjp_fn = torch.func.vjp(lambda x: self.f(x, self.e), self.h)
            return self._vjp_fn(u)[0]
        x, _, out, _, _, _ = self._reverse_graph()
        return self._grad_or_zero(out, x, u)

    def vjp_e(self, u: Tensor) -> Tensor:
        """(df/de)^T u for a cotangent u shaped like h (result shaped like e)."""
        if self._vjp_e_fn is None:
            _, self._vjp_e_fn = torch.func.vjp(lambda y: self.f(self.h, y), self.e)
        return self._vjp_e_fn(u)[0]

    def jvp_e(self, v: Tensor) -> Tensor:
        """(df/de) v for a direction v shaped like e (result shaped like h)."""
        if self.mode in ("linearize", "forward"):
            return torch.func.jvp(lambda y: self.f(self.h, y), (self.e,), (v,))[1]
        _, _, _, u, _, gy = self._reverse_graph()
        return self._grad_or_zero(gy, u, v)


@dataclass
class SpectralRadius:
    rho: Tensor  # (B,) |lambda_max|
    eigenvalue: Tensor  # (B,) complex, imag >= 0
    residual: Tensor  # (B,) relative Ritz residual (accuracy estimate)


@dataclass
class SingularValue:
    value: Tensor  # (B,)
    residual: Tensor  # (B,) relative Ritz residual of the underlying symmetric problem
    inner_residual: Tensor | None = None  # (B,) worst inner linear-solve residual (sigma_min only)
    inverse_estimate: Tensor | None = None  # (B,) 1/sqrt(mu) from inverse Lanczos (sigma_min only)
    matvecs: int = 0


def _as_lin(f: StepFn | Linearization, h: Tensor | None, e: Tensor | None, mode: str) -> Linearization:
    if isinstance(f, Linearization):
        return f
    assert h is not None and e is not None
    return Linearization(f, h, e, mode)


@torch.no_grad()
def spectral_radius(
    f: StepFn | Linearization,
    h: Tensor | None = None,
    e: Tensor | None = None,
    *,
    krylov_dim: int = 20,
    restarts: int = 0,
    tol: float = 1e-4,
    converged_share: float = 0.9,
    seed: int = 0,
    mode: str = "auto",
) -> SpectralRadius:
    """rho(J) per sample via restarted Arnoldi on JVPs (handles complex dominant pairs).

    The default is one Krylov cycle of 20 JVPs, which keeps one estimate for a batch near the
    cost of the forward it diagnoses, and matched a 390-product reference closely on a trained
    prefix-sums model (figures: benchmarks/README.md, "Diagnostics cost").  Samples with nearly
    tied dominant eigenvalues need more: their `residual` says so; `restarts` > 0 adds cycles
    while fewer than `converged_share` of the samples are at `tol` (every cycle costs the whole
    batch).  `geometry` (used by `loopkit analyze` on small batches) allows one restart."""
    lin = _as_lin(f, h, e, mode)
    r = top_ritz(lin.jvp, random_unit(lin.h, seed), krylov_dim=krylov_dim, restarts=restarts, tol=tol,
                 converged_share=converged_share)
    return SpectralRadius(r.value.abs(), r.value, r.residual)


@torch.no_grad()
def spectral_norm(
    f: StepFn | Linearization,
    h: Tensor | None = None,
    e: Tensor | None = None,
    *,
    krylov_dim: int = 20,
    restarts: int = 1,
    tol: float = 1e-8,
    seed: int = 1,
    mode: str = "auto",
) -> SingularValue:
    """||J||_2 per sample: the top eigenvalue of J^T J (VJP after JVP), by Lanczos.

    Lanczos is the Krylov upgrade of power iteration on J^T J: same products, but it resolves
    the top singular value to high accuracy even when sigma_1 and sigma_2 are close.
    """
    lin = _as_lin(f, h, e, mode)
    r = top_ritz(
        lambda v: lin.vjp(lin.jvp(v)),
        random_unit(lin.h, seed),
        krylov_dim=krylov_dim,
        restarts=restarts,
        tol=tol,
        symmetric=True,
    )
    return SingularValue(r.value.clamp_min(0).sqrt(), r.residual)


@torch.no_grad()
def min_singular_value(
    f: StepFn | Linearization,
    h: Tensor | None = None,
    e: Tensor | None = None,
    *,
    krylov_dim: int = 8,
    restarts: int = 8,
    tol: float = 1e-6,
    inner_tol: float | None = None,
    inner_restart: int = 30,
    inner_max_restarts: int = 3,
    max_matvecs: int = 4000,
    seed: int = 2,
    mode: str = "auto",
) -> SingularValue:
    """sigma_min(I - J) per sample, by Lanczos on the inverse of M = (I - J)^T (I - J).

    The smallest eigenvalue of M is badly separated relative to the whole spectrum, so Lanczos
    on M itself converges slowly; on M^{-1} it is the *largest* eigenvalue and converges fast
    (inverse iteration, Krylov-accelerated).  Each application of M^{-1} is two GMRES solves,
    with (I - J^T) and then (I - J).

    The reported ``value`` is the quotient ||(I - J) y|| / ||y|| for the final Ritz vector y or
    for the M^{-1} output with the largest gain, whichever is smaller.  For *any* y this is an
    upper bound on sigma_min, and it is second-order accurate when y is close to the singular
    vector.  This matters when I - J is (nearly) singular (e.g. a scale-invariant step, where h
    itself is a null direction): the inner solves then cannot converge and 1/sqrt(mu) (kept as
    ``inverse_estimate``) is unreliable, but an inverse-iteration step is still dominated by
    the near-null direction, so the bound still comes out small.
    ``inner_residual`` (worst inner solve) flags that regime.  ``max_matvecs`` (JVPs + VJPs)
    caps the cost, checked before every application of M^{-1}; non-normal J (e.g. a causal
    chain, where (I - J)^{-1} needs as many Krylov steps as the chain is long) hits it first.
    """
    lin = _as_lin(f, h, e, mode)
    if inner_tol is None:
        inner_tol = 1e-11 if lin.h.dtype == torch.float64 else 1e-5
    worst = torch.zeros(lin.h.shape[0], dtype=torch.float64, device=lin.h.device)
    count = 0
    last: dict[str, Tensor] = {}

    def inv_m(v: Tensor) -> Tensor:
        nonlocal worst, count
        if count >= max_matvecs:
            # Budget spent inside a Krylov cycle: the remaining steps become free no-ops. The
            # value stays an upper bound (see above); its residual says it did not converge.
            return v
        kw = dict(tol=inner_tol, restart=inner_restart, max_restarts=inner_max_restarts)
        a = gmres(lambda x: x - lin.vjp(x), v, **kw)
        b = gmres(lambda x: x - lin.jvp(x), a.x, **kw)
        count += a.matvecs + b.matvecs
        worst = torch.maximum(worst, torch.maximum(a.residual, b.residual).to(worst.dtype))
        # Keep, per sample, the output with the largest gain ||M^{-1} v|| / ||v||: an inverse-
        # iteration step, dominated by the (near-)null direction when I - J is singular.
        gain = bnorm(b.x) / bnorm(v)
        gain = torch.where(torch.isfinite(gain), gain, torch.zeros_like(gain))
        if "x" not in last:
            last["x"], last["gain"] = b.x, gain
        else:
            better = gain > last["gain"]
            last["x"] = torch.where(bview(better, v), b.x, last["x"])
            last["gain"] = torch.maximum(gain, last["gain"])
        return b.x

    r = top_ritz(
        inv_m,
        random_unit(lin.h, seed),
        krylov_dim=krylov_dim,
        restarts=restarts,
        tol=tol,
        symmetric=True,
        stop=lambda: count >= max_matvecs,
    )
    mu = r.value
    nan = torch.full_like(mu, float("nan"))
    inverse = torch.where(mu > 0, mu.clamp_min(torch.finfo(mu.dtype).tiny).rsqrt(), nan)

    def bound(y: Tensor) -> Tensor:
        y = y / bview(bnorm(y).clamp_min(torch.finfo(torch.float32).tiny), y).to(y.dtype)
        b = bnorm(y - lin.jvp(y)) / bnorm(y)
        return torch.where(torch.isfinite(b), b, torch.full_like(b, float("inf")))

    # Both candidates give rigorous upper bounds; the max-gain output of M^{-1} is the better
    # one when I - J is singular (inner solves fail, Lanczos is fed noise), the Ritz vector otherwise.
    value = torch.minimum(bound(r.vector), bound(last["x"]))
    return SingularValue(value, r.residual, worst, inverse, count + 2)


def geometry(
    f: StepFn,
    h: Tensor,
    e: Tensor,
    *,
    krylov_dim: int = 20,
    restarts: int = 1,
    min_sv: bool = True,
    min_sv_matvecs: int = 4000,
    rho_tol: float = 1e-3,
    rho_restarts: int = 10,
    mode: str = "auto",
    seed: int = 0,
) -> dict[str, Tensor]:
    """All three geometry estimates at (h, e) as per-sample tensors (one shared Linearization).

    rho(J) is run to a stated tolerance: Arnoldi restarts (up to `rho_restarts`) until every
    sample's Ritz residual is at most `rho_tol`, because one cycle left residuals of 2e-2 to
    1e-1 on trained sudoku models and underestimated rho by up to 0.03; the residual is
    returned beside the value so a reader can see which estimates are not at tolerance."""
    lin = Linearization(f, h, e, mode)
    sr = spectral_radius(lin, krylov_dim=krylov_dim, restarts=rho_restarts, tol=rho_tol, converged_share=1.0,
                         seed=seed)
    sn = spectral_norm(lin, krylov_dim=krylov_dim, restarts=restarts, seed=seed + 1)
    out: dict[str, Tensor] = {
        "spectral_radius": sr.rho,
        "dominant_eigenvalue": sr.eigenvalue,
        "spectral_radius_residual": sr.residual,
        "spectral_norm": sn.value,
        "spectral_norm_residual": sn.residual,
    }
    if min_sv:
        sm = min_singular_value(lin, seed=seed + 2, max_matvecs=min_sv_matvecs)
        out["sigma_min_I_minus_J"] = sm.value
        out["sigma_min_residual"] = sm.residual
        out["sigma_min_inner_residual"] = sm.inner_residual
        out["sigma_min_inverse_estimate"] = sm.inverse_estimate
    return out


@torch.no_grad()
def floquet_radius(
    f: StepFn,
    h: Tensor,
    e: Tensor,
    period: Tensor,
    *,
    krylov_dim: int = 20,
    restarts: int = 1,
    tol: float = 1e-6,
    seed: int = 0,
    mode: str = "auto",
) -> SpectralRadius:
    """Whether a cycle attracts: rho of the monodromy matrix M = J(h_p) ... J(h_1) per sample.

    For a period-p orbit h_1 -> ... -> h_p -> h_1 (h_1 = h, h_{k+1} = f(h_k, e)), rho(J) at one
    point of the orbit says nothing about stability; the orbit attracts when the Floquet
    multipliers, the eigenvalues of M, lie inside the unit circle. ``period`` (B,) is the period
    of each sample's cycle (a solver's ``cycle_period``); samples with period < 2 get NaN.
    """
    B = h.shape[0]
    rho = torch.full((B,), float("nan"), dtype=h.dtype, device=h.device)
    eig = torch.full((B,), complex(float("nan"), float("nan")), dtype=torch.complex128, device=h.device)
    res = torch.full((B,), float("nan"), dtype=h.dtype, device=h.device)
    for p in sorted({int(q) for q in period.tolist() if int(q) >= 2}):
        idx = (period == p).nonzero().squeeze(1)
        hs, es = h[idx], e[idx]
        lins = []
        for _ in range(p):
            lins.append(Linearization(f, hs, es, mode))
            hs = f(hs, es)

        def monodromy(v: Tensor, lins: list[Linearization] = lins) -> Tensor:  # default binds this p's
            for lin in lins:
                v = lin.jvp(v)
            return v

        r = top_ritz(monodromy, random_unit(h[idx], seed), krylov_dim=krylov_dim, restarts=restarts, tol=tol)
        rho[idx], eig[idx], res[idx] = r.value.abs().to(h.dtype), r.value.to(torch.complex128), r.residual.to(h.dtype)
    return SpectralRadius(rho, eig, res)
