"""Tests for loopkit.fixedpoint against answers known in closed form.

Every estimator is compared with something computed independently: dense torch.linalg on
explicitly built matrices, a spectrum we chose, analytic iteration counts, or autograd through
an unrolled loop.  Closed-form checks run in float64.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from loopkit.fixedpoint import (
    Linearization,
    analyze,
    anderson,
    end_state_spread,
    fixed_point_iter,
    floquet_radius,
    gmres,
    initial_state_dependence,
    min_singular_value,
    neumann,
    reachability,
    sensitivity,
    sensitivity_norm,
    solve,
    solve_implicit,
    spectral_norm,
    spectral_radius,
)

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The tensors here are tiny; intra-op threads only add contention on a 2-core box.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------
# Linear maps f(h, e) = A_i h + B_i e with a chosen spectrum, one matrix per sample.
# ------------------------------------------------------------------------------------------

L, D, M = 4, 8, 6  # state (B, L, D): n = 32; input (B, M)
N = L * D


def _block_diag(blocks: list[torch.Tensor]) -> torch.Tensor:
    return torch.block_diag(*blocks)


def _spectrum_matrix(dominant, rest_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Real block-diagonal matrix: a dominant real eigenvalue or complex pair (r, theta), plus
    real eigenvalues uniformly in [-rest_scale, rest_scale]."""
    blocks = []
    if isinstance(dominant, tuple):
        r, th = dominant
        a, b = r * math.cos(th), r * math.sin(th)
        blocks.append(torch.tensor([[a, -b], [b, a]], dtype=DT))
    else:
        blocks.append(torch.tensor([[dominant]], dtype=DT))
    k = N - sum(b.shape[0] for b in blocks)
    rest = (torch.rand(k, generator=gen, dtype=DT) * 2 - 1) * rest_scale
    blocks += [x.reshape(1, 1) for x in rest]
    return _block_diag(blocks)


def _similar(Dm: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A = Q D Q^{-1} with a mildly non-orthogonal Q, so A is non-normal (||A|| > rho(A))."""
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=gen, dtype=DT))
    Q = Q + 0.3 * torch.randn(N, N, generator=gen, dtype=DT) / math.sqrt(N)
    return Q @ Dm @ torch.linalg.inv(Q)


def _linear_problem(kind: str):
    gen = torch.Generator().manual_seed(1234 if kind == "real" else 4321)
    if kind == "real":
        dominants = [0.9, -0.85, 0.7]  # sign matters: rho is a modulus
        rhos = [0.9, 0.85, 0.7]
    else:
        dominants = [(0.9, 0.7), (0.8, 2.0), (0.75, 1.2)]
        rhos = [0.9, 0.8, 0.75]
    A = torch.stack([_similar(_spectrum_matrix(d, 0.5, gen), gen) for d in dominants])
    Bm = torch.randn(len(dominants), N, M, generator=gen, dtype=DT) / math.sqrt(M)
    e = torch.randn(len(dominants), M, generator=gen, dtype=DT)

    def f(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        hf = h.reshape(h.shape[0], N)
        out = torch.einsum("bij,bj->bi", A, hf) + torch.einsum("bij,bj->bi", Bm, e)
        return out.reshape(h.shape[0], L, D)

    return f, A, Bm, e, dominants, torch.tensor(rhos, dtype=DT)


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample relative error."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return (a - b).norm(dim=1) / b.norm(dim=1)


@pytest.mark.parametrize("kind", ["real", "complex"])
def test_linear_map_closed_forms(kind: str) -> None:
    f, A, Bm, e, dominants, rho_true = _linear_problem(kind)
    B = e.shape[0]
    eye = torch.eye(N, dtype=DT)
    h_true = torch.linalg.solve(eye - A, torch.einsum("bij,bj->bi", Bm, e))

    res = anderson(f, e, torch.zeros(B, L, D, dtype=DT), tol=1e-12, max_iters=300)
    assert res.converged.all() and not res.diverged.any()
    assert (_rel(res.h, h_true) < 1e-2).all()
    h = res.h

    # spectral radius (Arnoldi, Krylov dim 20 < n = 32 so this is not a trivial full solve)
    sr = spectral_radius(f, h, e, krylov_dim=20)
    assert torch.allclose(torch.linalg.eigvals(A).abs().max(dim=1).values, rho_true)  # sanity of setup
    assert ((sr.rho - rho_true).abs() / rho_true < 1e-2).all(), (sr.rho, rho_true)
    assert (sr.residual < 1e-4).all()
    # a small Krylov space needs the restarts (and a truthful Ritz residual to keep restarting)
    small = spectral_radius(f, h, e, krylov_dim=4, restarts=40, tol=1e-8)
    assert ((small.rho - rho_true).abs() / rho_true < 1e-2).all(), (small.rho, rho_true)
    one_cycle = spectral_radius(f, h, e, krylov_dim=4, restarts=0)
    assert (one_cycle.residual > 1e-2).any()  # an unconverged estimate says so
    if kind == "complex":
        lam_true = torch.tensor([complex(r * math.cos(t), r * math.sin(t)) for r, t in dominants])
        assert ((sr.eigenvalue - lam_true).abs() / lam_true.abs() < 1e-2).all(), sr.eigenvalue
    else:
        assert (sr.eigenvalue.imag.abs() < 1e-6).all()

    # spectral norm (A is non-normal, so this differs from rho)
    norm_true = torch.linalg.matrix_norm(A, ord=2)
    assert (norm_true > rho_true * 1.05).all()
    sn = spectral_norm(f, h, e)
    assert ((sn.value - norm_true).abs() / norm_true < 1e-2).all(), (sn.value, norm_true)

    # smallest singular value of I - A
    smin_true = torch.linalg.svdvals(eye - A).min(dim=1).values
    sm = min_singular_value(f, h, e)
    assert ((sm.value - smin_true).abs() / smin_true < 1e-2).all(), (sm.value, smin_true)

    # IFT sensitivity along given unit directions v: u = (I - A)^{-1} B v
    v = torch.randn(B, M, generator=torch.Generator().manual_seed(7), dtype=DT)
    v = v / v.norm(dim=1, keepdim=True)
    u_true = torch.linalg.solve(eye - A, torch.einsum("bij,bj->bi", Bm, v))
    for method in ("gmres", "neumann"):  # rho < 1, so the Neumann series converges too
        s = sensitivity(f, h, e, v, method=method)
        assert (_rel(s.u, u_true) < 1e-2).all()
        assert ((s.norm - u_true.norm(dim=1)).abs() / u_true.norm(dim=1) < 1e-2).all()
        assert (s.linear_residual < 1e-8).all() and s.converged.all()
    rel_true = u_true.norm(dim=1) * e.norm(dim=1) / h_true.norm(dim=1)
    assert ((s.relative - rel_true).abs() / rel_true < 1e-2).all()
    # default direction: random, unit norm per sample
    s = sensitivity(f, h, e)
    assert torch.allclose(s.v.norm(dim=1), torch.ones(B, dtype=DT))
    u_true = torch.linalg.solve(eye - A, torch.einsum("bij,bj->bi", Bm, s.v))
    assert ((s.norm - u_true.norm(dim=1)).abs() / u_true.norm(dim=1) < 1e-2).all()


def test_singular_i_minus_j_is_reported() -> None:
    """An eigenvalue exactly 1 makes I - A singular: the inner solves cannot converge, yet the
    reported sigma_min (a rigorous upper bound) must come out ~0, and the failure be visible."""
    gen = torch.Generator().manual_seed(3)
    A = torch.stack([_similar(_spectrum_matrix(1.0, 0.5, gen), gen) for _ in range(3)])
    assert (torch.linalg.svdvals(torch.eye(N, dtype=DT) - A).min(dim=1).values < 1e-12).all()
    f = lambda h, e: torch.einsum("bij,bj->bi", A, h) + e  # noqa: E731
    h = torch.randn(3, N, generator=gen, dtype=DT)
    sm = min_singular_value(f, h, h)
    assert (sm.value < 1e-8).all(), sm.value
    assert (sm.inner_residual > 1e-3).all()


def test_every_linearization_mode_agrees() -> None:
    """The traced (linearize), plain forward-mode and double-backward (for ops without
    forward-mode AD) products are the same J v and J^T u; "auto" picks the traced one."""
    f, A, Bm, e, _, rho_true = _linear_problem("complex")
    h = torch.randn(e.shape[0], L, D, dtype=DT)
    fwd, rev = Linearization(f, h, e, "forward"), Linearization(f, h, e, "reverse")
    traced = Linearization(f, h, e)
    assert traced.mode == "linearize"
    v = torch.randn_like(h)
    Av = torch.einsum("bij,bj->bi", A, v.reshape(-1, N)).reshape(h.shape)
    ATv = torch.einsum("bji,bj->bi", A, v.reshape(-1, N)).reshape(h.shape)
    for lin in (traced, fwd, rev):
        assert torch.allclose(lin.jvp(v), Av)
        assert torch.allclose(lin.vjp(v), ATv)
    assert ((spectral_radius(rev).rho - rho_true).abs() / rho_true < 1e-2).all()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runs_on_input_device_and_dtype(device: str, dtype: torch.dtype) -> None:
    """Nothing is hard-wired to the CPU or float64: results live where the inputs live."""
    _, A, Bm, e, _, rho_true = _linear_problem("complex")
    A, Bm, e = A.to(device, dtype), Bm.to(device, dtype), e.to(device, dtype)
    f = lambda h, e: (torch.einsum("bij,bj->bi", A, h.reshape(-1, N))  # noqa: E731
                      + torch.einsum("bij,bj->bi", Bm, e)).reshape(-1, L, D)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    res = anderson(f, e, torch.zeros(e.shape[0], L, D, device=device, dtype=dtype), tol=tol, max_iters=200)
    assert res.converged.all() and res.h.device.type == device and res.h.dtype == dtype
    sr = spectral_radius(f, res.h, e)
    assert sr.rho.device.type == device
    assert ((sr.rho.cpu().double() - rho_true).abs() / rho_true < 1e-2).all()
    s = sensitivity(f, res.h, e)
    assert s.u.device.type == device and s.u.dtype == dtype and s.converged.all()
    sm = min_singular_value(f, res.h, e)
    smin_true = torch.linalg.svdvals(torch.eye(N, dtype=DT) - A.cpu().double()).min(dim=1).values
    assert ((sm.value.cpu().double() - smin_true).abs() / smin_true < 1e-2).all()
    json.dumps(analyze(f, e, torch.zeros_like(res.h), method="anderson", tol=tol), allow_nan=False)


def test_gmres_and_neumann_against_dense_solve() -> None:
    gen = torch.Generator().manual_seed(0)
    B, n = 4, 40
    A = torch.eye(n, dtype=DT) + 0.8 * torch.randn(B, n, n, generator=gen, dtype=DT) / math.sqrt(n)
    b = torch.randn(B, n, generator=gen, dtype=DT)
    b[2] = 0.0  # b = 0 must give x = 0, not NaN
    x_true = torch.linalg.solve(A, b)
    sol = gmres(lambda v: torch.einsum("bij,bj->bi", A, v), b, tol=1e-12, restart=10, max_restarts=50)
    assert sol.converged.all()
    assert torch.isfinite(sol.x).all() and (sol.x[2] == 0).all()
    err = (sol.x - x_true).norm(dim=1) / x_true.norm(dim=1).clamp_min(1e-300)
    assert (err[[0, 1, 3]] < 1e-9).all()
    # Neumann: (I - J) u = b with a contraction J
    J = 0.5 * torch.randn(B, n, n, generator=gen, dtype=DT) / math.sqrt(n)
    J = J / torch.linalg.matrix_norm(J, ord=2).reshape(B, 1, 1) * 0.7
    u = neumann(lambda v: torch.einsum("bij,bj->bi", J, v), b, tol=1e-12)
    u_true = torch.linalg.solve(torch.eye(n, dtype=DT) - J, b)
    assert torch.allclose(u.x, u_true, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Reachability: convergence, freezing, cycles, divergence
# ------------------------------------------------------------------------------------------


def test_per_sample_stopping_freezes_converged_samples() -> None:
    """f(h) = a_i h + e with h0 = 0: h_t = e (1 - a^t)/(1 - a), so
    r_t = ||h_{t+1} - h_t|| / ||h_t|| = a^t (1 - a) / (1 - a^t) for t >= 1 (r_0 = inf)."""
    a = torch.tensor([0.1, 0.5, 0.9], dtype=DT)
    e = torch.randn(3, 8, generator=torch.Generator().manual_seed(3), dtype=DT)
    f = lambda h, e: a.reshape(-1, 1) * h + e  # noqa: E731
    tol = 1e-6
    res = fixed_point_iter(f, e, torch.zeros_like(e), tol=tol, max_iters=500)

    def expected_iters(ai: float) -> int:
        t = 1
        while ai**t * (1 - ai) / (1 - ai**t) >= tol:
            t += 1
        return t + 1  # r_t is measured by the (t+1)-th evaluation of f

    want = torch.tensor([expected_iters(x) for x in a.tolist()])
    assert res.converged.all()
    assert torch.equal(res.iters.cpu(), want), (res.iters, want)
    assert res.iters[0] < res.iters[1] < res.iters[2]
    # a frozen sample's state is exactly h_{iters} of its own iteration, not a later one
    for i in range(3):
        h = torch.zeros_like(e[i])
        for _ in range(int(want[i])):
            h = a[i] * h + e[i]
        assert torch.equal(res.h[i], h)
        assert not torch.equal(res.h[i], a[i] * h + e[i])
        # and its residual trace is carried forward unchanged after it stopped
        tail = res.trace[int(want[i]) - 1 :, i]
        assert (tail == tail[0]).all() and tail[0] < tol
    # without stopping, every sample runs to the cap: full traces, iters still first passage
    full = fixed_point_iter(f, e, torch.zeros_like(e), tol=tol, max_iters=60, stop_on_converge=False)
    assert full.nfe == 60 and torch.equal(full.iters[:2].cpu(), want[:2])
    assert full.trace[-1, 1] < full.trace[int(want[1]) - 1, 1]  # kept iterating after converging
    summary = reachability(res)
    frac = summary["converged_fraction_vs_t"]
    assert frac == sorted(frac) and frac[-1] == 1.0
    assert frac[int(want[0]) - 1] == pytest.approx(1 / 3)
    assert summary["per_sample"]["iters"] == want.tolist()
    json.dumps(summary, allow_nan=False)


def test_rotation_is_not_converging() -> None:
    """h -> R h + c with R a rotation (rho = 1): a fixed point exists but iteration orbits it."""
    angles = 1.0 + 0.1 * torch.arange(N // 2, dtype=DT)  # no small rational periods
    R = _block_diag([torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=DT) for t in angles])
    gen = torch.Generator().manual_seed(5)
    e = torch.randn(2, N, generator=gen, dtype=DT)
    f = lambda h, e: h @ R.T + e  # noqa: E731
    res = fixed_point_iter(f, e, torch.randn(2, N, generator=gen, dtype=DT), tol=1e-6, max_iters=300)
    assert not res.converged.any()
    assert not res.diverged.any()
    assert (res.cycle_period == 0).all()
    assert (res.trace[-50:] > 1e-2).all()  # the residual does not decay
    assert reachability(res)["converged_fraction"] == 0.0


def test_period_two_and_three_cycles_are_flagged() -> None:
    gen = torch.Generator().manual_seed(6)
    B = 3
    # h -> -h + c: h, c - h, h, ... (fixed point c/2 is never reached from h0 != c/2)
    e = torch.randn(B, L, D, generator=gen, dtype=DT)
    res = fixed_point_iter(lambda h, e: -h + e, e, torch.randn(B, L, D, generator=gen, dtype=DT), max_iters=50)
    assert not res.converged.any() and not res.diverged.any()
    assert res.cycle_period.tolist() == [2] * B
    # permutation swapping two halves of the state: period 2
    swap = lambda h, e: h.flip(1)  # noqa: E731
    res = fixed_point_iter(swap, e, torch.randn(B, 2, D, generator=gen, dtype=DT), max_iters=50)
    assert res.cycle_period.tolist() == [2] * B
    # cyclic shift of three blocks: period 3 (and not flagged as 2)
    shift = lambda h, e: h.roll(1, dims=1)  # noqa: E731
    res = fixed_point_iter(shift, e, torch.randn(B, 3, D, generator=gen, dtype=DT), max_iters=50)
    assert res.cycle_period.tolist() == [3] * B
    assert reachability(res)["cycle_periods"] == {"3": B}
    # slow monotone convergence that has not finished is not a cycle, even though the orbit
    # barely moves: h -> 0.99 h + e started next to h* = 100 e
    h0 = 100 * e + 1e-2 * torch.randn(B, L, D, generator=gen, dtype=DT)
    res = fixed_point_iter(lambda h, e: 0.99 * h + e, e, h0, tol=1e-12, max_iters=50)
    assert not res.converged.any() and (res.cycle_period == 0).all()
    # a converging sample is never flagged as a cycle, even with oscillation (a = -0.5)
    res = fixed_point_iter(lambda h, e: -0.5 * h + e, e, torch.zeros_like(e), tol=1e-10, max_iters=200)
    assert res.converged.all() and (res.cycle_period == 0).all()


def test_divergence_is_flagged() -> None:
    a = torch.tensor([0.5, 1.5], dtype=DT).reshape(2, 1)
    e = torch.ones(2, 4, dtype=DT)
    res = fixed_point_iter(lambda h, e: a * h + e, e, torch.zeros_like(e), tol=1e-8, max_iters=200)
    assert res.converged.tolist() == [True, False]
    assert res.diverged.tolist() == [False, True]
    # closed form: x_{t+1} = 2 (1.5^{t+1} - 1) * 1, reference scale max(||h0||, ||f(h0)||) = ||e||;
    # flagged (and stopped) at the first evaluation whose next iterate exceeds 1e4 x reference
    t = 0
    while 2 * (1.5 ** (t + 1) - 1) * e[1].norm() <= 1e4 * e[1].norm():
        t += 1
    assert res.iters[1].item() == t + 1 < 200
    assert reachability(res)["diverged_fraction"] == 0.5
    # non-finite values: sqrt of a negative number on the second step
    res = fixed_point_iter(lambda h, e: torch.sqrt(h - 2.0) + 0 * e, e, torch.full_like(e, 3.0), max_iters=20)
    assert res.diverged.all() and not res.converged.any()
    assert (res.iters == 2).all()
    json.dumps(reachability(res), allow_nan=False)  # NaN/inf residuals become null


def test_anderson_beats_plain_iteration() -> None:
    """Symmetric linear contraction with spectrum in [0, 0.95]: plain iteration needs
    ~log(tol)/log(0.95) steps; Anderson should need far fewer and reach the same h*."""
    gen = torch.Generator().manual_seed(8)
    B = 3
    Q = torch.linalg.qr(torch.randn(B, N, N, generator=gen, dtype=DT))[0]
    lam = torch.linspace(0.0, 0.95, N, dtype=DT)
    A = Q @ torch.diag(lam) @ Q.transpose(1, 2)
    e = torch.randn(B, N, generator=gen, dtype=DT)
    f = lambda h, e: torch.einsum("bij,bj->bi", A, h) + e  # noqa: E731
    h0 = torch.zeros(B, N, dtype=DT)
    plain = fixed_point_iter(f, e, h0, tol=1e-8, max_iters=2000)
    acc = anderson(f, e, h0, m=5, tol=1e-8, max_iters=2000)
    assert plain.converged.all() and acc.converged.all()
    assert acc.iters.max() < plain.iters.min() / 2, (acc.iters, plain.iters)
    h_true = torch.linalg.solve(torch.eye(N, dtype=DT) - A, e)
    assert (_rel(acc.h, h_true) < 1e-6).all() and (_rel(plain.h, h_true) < 1e-6).all()


def test_anderson_safeguard_on_degenerate_history() -> None:
    """Scalar state: the Anderson Gram matrix is rank one.  Without regularization the small
    solve is singular, so the safeguard must take plain steps; it still finds cos(h) = h."""
    dottie = 0.7390851332151607
    h0 = torch.tensor([[0.0], [1.0], [3.0]], dtype=DT)
    e = torch.zeros_like(h0)
    res = anderson(lambda h, e: torch.cos(h), e, h0, m=5, lam=0.0, tol=1e-12, max_iters=200)
    assert res.converged.all()
    assert (res.extra["fallbacks"] > 0).all()
    assert torch.allclose(res.h, torch.full_like(h0, dottie), atol=1e-10)
    res = anderson(lambda h, e: torch.cos(h), e, h0, m=5, tol=1e-12, max_iters=200)  # regularized
    assert res.converged.all() and torch.allclose(res.h, torch.full_like(h0, dottie), atol=1e-10)


# ------------------------------------------------------------------------------------------
# Input dependence
# ------------------------------------------------------------------------------------------


def test_map_ignoring_input_has_zero_sensitivity_and_collapses() -> None:
    gen = torch.Generator().manual_seed(9)
    c = torch.randn(1, L, D, generator=gen, dtype=DT)
    f = lambda h, e: 0.5 * torch.tanh(h) + c  # noqa: E731
    e = torch.randn(4, L, D, generator=gen, dtype=DT)
    res = anderson(f, e, torch.randn(4, L, D, generator=gen, dtype=DT), tol=1e-12)
    s = sensitivity(f, res.h, e)
    assert (s.norm == 0).all() and torch.isfinite(s.u).all()
    assert end_state_spread(res.h)["relative_spread"] < 1e-10
    # ...whereas an input-dependent map does spread
    f2 = lambda h, e: 0.5 * torch.tanh(h) + e  # noqa: E731
    res2 = anderson(f2, e, torch.zeros_like(e), tol=1e-12)
    spread = end_state_spread(res2.h)
    assert spread["relative_spread"] > 0.1 and spread["pairwise_relative"] > 0.1
    assert (sensitivity(f2, res2.h, e).norm > 0.1).all()


def test_end_state_spread_closed_form() -> None:
    # two states +x and -x: mean 0, each at distance ||x|| from it, pairwise distance 2||x||
    x = torch.randn(1, 5, dtype=DT)
    s = end_state_spread(torch.cat([x, -x]))
    assert s["relative_spread"] == pytest.approx(1.0)
    assert s["pairwise_relative"] == pytest.approx(2.0)


def test_initial_state_dependence() -> None:
    gen = torch.Generator().manual_seed(10)
    B = 3
    e = torch.randn(B, 6, generator=gen, dtype=DT)
    # contraction: every start reaches the same point
    contr = lambda h, e: 0.5 * torch.tanh(h) + e  # noqa: E731
    dep = initial_state_dependence(contr, e, lambda k: torch.randn(B, 6, generator=gen, dtype=DT) * 3,
                                   n_inits=4, tol=1e-12, max_iters=200)
    assert dep.converged.all() and (dep.spread < 1e-9).all()
    # bistable h -> tanh(3h): starts at +1 and -1 end at +x* and -x*, x* = tanh(3 x*)
    bist = lambda h, e: torch.tanh(3 * h) + 0 * e  # noqa: E731
    ones = torch.ones(B, 6, dtype=DT)
    dep = initial_state_dependence(bist, e, [ones, -ones], tol=1e-12, max_iters=200)
    assert dep.converged.all()
    x_star = dep.h[0, 0, 0].item()
    assert abs(x_star - math.tanh(3 * x_star)) < 1e-10 and x_star > 0.9
    assert torch.allclose(dep.spread, torch.ones(B, dtype=DT))
    assert torch.allclose(dep.max_pairwise, torch.full((B,), 2.0, dtype=DT))
    json.dumps(dep.summary(), allow_nan=False)


# ------------------------------------------------------------------------------------------
# Implicit differentiation
# ------------------------------------------------------------------------------------------


class _Cell(nn.Module):
    """h -> tanh(W h + U e + b) with ||W||_2 = 0.6: a contraction (tanh is 1-Lipschitz)."""

    def __init__(self, d: int, m: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(d, d, generator=g, dtype=DT)
        self.W = nn.Parameter(0.6 * W / torch.linalg.matrix_norm(W, ord=2))
        self.U = nn.Parameter(torch.randn(d, m, generator=g, dtype=DT) / math.sqrt(m))
        self.b = nn.Parameter(0.1 * torch.randn(d, generator=g, dtype=DT))

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.W.T + e @ self.U.T + self.b)


@pytest.mark.parametrize("backward", ["gmres", "neumann"])
def test_implicit_gradients_match_unrolled(backward: str) -> None:
    d, m, B = 12, 5, 4
    cell = _Cell(d, m)
    g = torch.Generator().manual_seed(11)
    e = torch.randn(B, m, generator=g, dtype=DT, requires_grad=True)
    c = torch.randn(B, d, generator=g, dtype=DT)
    params = [e, cell.W, cell.U, cell.b]

    # reference: backprop through 100 unrolled steps (0.6^100 ~ 1e-22: exact to float64)
    h = torch.zeros(B, d, dtype=DT)
    for _ in range(100):
        h = cell(h, e)
    ref = torch.autograd.grad((h * c).sum(), params)

    stats: dict = {}
    h_imp, res = solve_implicit(cell, e, torch.zeros(B, d, dtype=DT), tol=1e-13, max_iters=300, backward=backward,
                                stats=stats)
    assert res.converged.all()
    assert torch.allclose(h_imp, h.detach(), atol=1e-11)
    got = torch.autograd.grad((h_imp * c).sum(), params)
    for name, a, b in zip(["e", "W", "U", "b"], got, ref):
        rel = ((a - b).norm() / b.norm()).item()
        assert rel < 1e-4, (name, rel)
    assert (stats["residual"] < 1e-8).all()


# ------------------------------------------------------------------------------------------
# analyze(): everything at once, JSON-clean
# ------------------------------------------------------------------------------------------


def test_analyze_returns_json_friendly_report() -> None:
    d, m, B = 10, 4, 3
    cell = _Cell(d, m, seed=1)
    g = torch.Generator().manual_seed(12)
    e = torch.randn(B, m, generator=g, dtype=DT)
    with torch.no_grad():
        W = cell.W.detach().clone()
    report = analyze(
        cell, e, torch.zeros(B, d, dtype=DT), tol=1e-10, max_iters=200, refine=True,
        h0s=lambda k: torch.randn(B, d, generator=g, dtype=DT), n_inits=3,
    )  # fmt: skip
    text = json.dumps(report, allow_nan=False)
    for key in ("reachability", "refined", "spread", "init_dependence", "sensitivity", "geometry"):
        assert key in report
    assert report["reachability"]["converged_fraction"] == 1.0
    assert report["init_dependence"]["spread"]["max"] < 1e-8
    geo = report["geometry"]
    # J = diag(1 - h*^2) W, so rho(J) <= ||J|| <= ||W|| = 0.6
    assert geo["stable_fraction"] == 1.0
    assert geo["spectral_norm"]["max"] <= torch.linalg.matrix_norm(W, ord=2).item() + 1e-9
    assert geo["spectral_radius"]["max"] <= geo["spectral_norm"]["max"] + 1e-9
    assert len(geo["per_sample"]["spectral_radius"]) == B
    # the residual of every rho estimate is reported beside it, with the tolerance it was run to
    assert geo["spectral_radius_tol"] == 1e-3
    assert geo["spectral_radius_residual"]["max"] <= 1e-3 and geo["spectral_radius_at_tol_fraction"] == 1.0
    assert len(text) > 0
    # sensitivity matches the dense IFT answer for each sample
    h_star = solve(cell, e, torch.zeros(B, d, dtype=DT), tol=1e-13, max_iters=300).h
    s = sensitivity(cell, h_star, e)
    Dg = 1 - h_star**2
    for i in range(B):
        J = Dg[i].unsqueeze(1) * cell.W.detach()
        u = torch.linalg.solve(torch.eye(d, dtype=DT) - J, Dg[i] * (cell.U.detach() @ s.v[i]))
        assert abs(s.norm[i].item() - u.norm().item()) / u.norm().item() < 1e-2
    assert report["sensitivity"]["per_sample"]["norm"] == pytest.approx(s.norm.tolist(), rel=1e-6)


def test_auto_linearization_falls_back_when_tracing_fails() -> None:
    """A step with data-dependent Python control flow cannot be traced; auto falls back to
    plain forward-mode JVPs and still gives the right product."""

    def f(h, e):
        if h.sum() > 0:  # data-dependent branch: make_fx tracing refuses it
            return 0.5 * h + e
        return 0.25 * h + e

    h, e = torch.ones(2, 3, dtype=DT), torch.zeros(2, 3, dtype=DT)
    lin = Linearization(f, h, e)
    assert lin.mode == "forward"
    assert torch.allclose(lin.jvp(torch.ones_like(h)), 0.5 * torch.ones_like(h))


@pytest.mark.parametrize("kind", ["real", "complex"])
def test_sensitivity_operator_norm_matches_the_dense_ift_answer(kind: str) -> None:
    """||dh*/de||_2 = sigma_max((I - A)^{-1} B) for f = A h + B e: the worst direction, which no
    single random direction reaches."""
    f, A, Bm, e, _, _ = _linear_problem(kind)
    B = e.shape[0]
    eye = torch.eye(N, dtype=DT)
    h = torch.linalg.solve(eye - A, torch.einsum("bij,bj->bi", Bm, e)).reshape(B, L, D)
    S = torch.linalg.solve(eye - A, Bm)
    want = torch.linalg.matrix_norm(S, ord=2)
    got = sensitivity_norm(f, h, e)
    assert ((got.value - want).abs() / want < 1e-3).all(), (got.value, want)
    assert (got.residual < 1e-4).all() and (got.linear_residual < 1e-8).all()
    one_direction = sensitivity(f, h, e).norm
    assert (one_direction < 0.999 * want).all()  # a random direction underestimates the norm


def test_floquet_radius_of_a_two_cycle_against_its_closed_form() -> None:
    """f(h, e) = -e * tanh(h), elementwise, has for gain e_i > 1 the 2-cycle +-x_i with
    x_i = e_i tanh(x_i); around the orbit each coordinate's multiplier is (e_i sech^2 x_i)^2, so
    the monodromy's spectral radius is the largest of those, while rho(J) at one point is not."""
    gen = torch.Generator().manual_seed(3)
    gains = 1.5 + 2 * torch.rand(3, 5, generator=gen, dtype=DT)
    x = gains.clone()
    for _ in range(200):  # the positive root of x = a tanh(x), by fixed-point iteration (a contraction there)
        x = gains * torch.tanh(x)

    def f(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return -e * torch.tanh(h)

    want = ((gains / torch.cosh(x) ** 2) ** 2).max(dim=1).values
    period = torch.tensor([2, 2, 0])  # the third sample is declared not cycling: no answer for it
    got = floquet_radius(f, x, gains, period)
    assert torch.allclose(got.rho[:2], want[:2], rtol=1e-6), (got.rho, want)
    assert math.isnan(got.rho[2].item())
    assert (got.rho[:2] < 1).all()  # attracting cycles
    rho_at_a_point = spectral_radius(f, x, gains).rho[:2]
    assert torch.allclose(rho_at_a_point, (gains / torch.cosh(x) ** 2).max(dim=1).values[:2], rtol=1e-6)
    res = fixed_point_iter(f, gains, x + 0.05, max_iters=400, tol=1e-12)
    assert (res.cycle_period[:2] == 2).all()  # the solver agrees the orbit attracts nearby starts


def test_attractors_class_cycles_and_check_the_readout_along_them() -> None:
    from loopkit.fixedpoint.analyze import attractors

    gains = torch.full((2, 3), 2.0, dtype=DT)
    gains[1] = 0.5  # second sample: a contraction to the fixed point 0

    def f(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return -e * torch.tanh(h)

    res = fixed_point_iter(f, gains, torch.ones(2, 3, dtype=DT), max_iters=300, tol=1e-10)
    rho = spectral_radius(f, res.h, gains).rho
    sign = lambda h: torch.stack([h, -h], dim=-1)  # noqa: E731 - the answer flips with the sign of h
    size = lambda h: torch.stack([h.abs(), -h.abs()], dim=-1)  # noqa: E731 - the answer ignores the sign
    flips = attractors(f, res, gains, rho, readout=sign)
    assert flips["per_sample"]["kind"] == ["cycle", "fixed_point"]
    assert flips["readout_constant_on_cycle_fraction"] == 0.0
    assert attractors(f, res, gains, rho, readout=size)["readout_constant_on_cycle_fraction"] == 1.0


def test_distinct_states_counts_clusters_and_retained_information() -> None:
    from loopkit.fixedpoint import distinct_states

    g = torch.Generator().manual_seed(5)
    centers = 10 * torch.randn(3, L, D, generator=g, dtype=DT)
    h = centers[torch.arange(12) % 3] + 1e-6 * torch.randn(12, L, D, generator=g, dtype=DT)
    three = distinct_states(h)
    assert three["clusters"] == 3 and three["largest_cluster_share"] == pytest.approx(1 / 3)
    assert three["retained_bits"] == pytest.approx(math.log2(3) / math.log2(12))
    assert three["per_sample"] == [i % 3 for i in range(12)]
    spread = distinct_states(torch.randn(12, L, D, generator=g, dtype=DT))
    assert spread["clusters"] == 12 and spread["retained_bits"] == pytest.approx(1.0)
    one = distinct_states(centers[:1].expand(12, L, D))
    assert one["clusters"] == 1 and one["retained_bits"] == 0.0


def test_geometry_restarts_rho_to_its_stated_tolerance() -> None:
    """Nearly tied dominant eigenvalues (0.9 and 0.88 over a dense rest): one short Arnoldi cycle
    leaves a large Ritz residual; restarting to rho_tol must reach it and the true rho."""
    from loopkit.fixedpoint.jacobian import geometry

    gen = torch.Generator().manual_seed(7)
    Dm = torch.diag(torch.cat([torch.tensor([0.9, 0.88], dtype=DT),
                               (torch.rand(N - 2, generator=gen, dtype=DT) * 2 - 1) * 0.86]))
    A = _similar(Dm, gen)

    def f(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return (h.reshape(1, N) @ A.T).reshape(1, L, D) + 0 * e.sum()

    h, e = torch.randn(1, L, D, generator=gen, dtype=DT), torch.zeros(1, M, dtype=DT)
    one = geometry(f, h, e, krylov_dim=4, min_sv=False, rho_tol=1e-6, rho_restarts=0)
    assert one["spectral_radius_residual"].item() > 1e-6  # one cycle is not enough here
    full = geometry(f, h, e, krylov_dim=4, min_sv=False, rho_tol=1e-6, rho_restarts=400)
    assert full["spectral_radius_residual"].item() <= 1e-6
    assert abs(full["spectral_radius"].item() - 0.9) < 1e-3


def test_the_sensitivity_norm_is_skipped_where_the_ift_solve_cannot_converge() -> None:
    """f = h + e has J = I: (I - J) u = b has no solution, the first solve stops at residual 1, and
    the operator norm is abandoned with the reason instead of 32 solves run to their cap. A
    contraction (f = h / 2 + e, ||dh*/de|| = 2) gets its norm."""
    e = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    h0 = torch.zeros(3, 4, dtype=DT)
    stuck = analyze(lambda h, x: h + x, e, h0, max_iters=20, with_geometry=False, with_sensitivity_norm=True,
                    norm_give_up_above=1e-3)
    assert stuck["sensitivity"]["linear_residual_max"] > 0.9
    assert "near-singular" in stuck["sensitivity_norm"]["skipped"]
    assert stuck["sensitivity_norm"]["linear_residual_max"] > 0.9 and "norm" not in stuck["sensitivity_norm"]
    fine = analyze(lambda h, x: 0.5 * h + x, e, h0, max_iters=200, tol=1e-12, with_geometry=False,
                   with_sensitivity_norm=True, norm_give_up_above=1e-3)
    assert "skipped" not in fine["sensitivity_norm"]
    assert fine["sensitivity_norm"]["norm"]["median"] == pytest.approx(2.0, rel=1e-4)
