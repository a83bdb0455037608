"""Cost of the geometry diagnostics against the forward they diagnose, same process.

Times one forward of T iterations (no grad) on a batch, then one estimate of rho(J), of ||J||_2
and of sigma_min(I - J) at the end state of that batch, and prints each as a multiple of the
forward. Uses a trained run when given (its weights shape the Jacobian, hence how fast Arnoldi
converges), else the default prefix-sums config at initialisation.

    python benchmarks/diagnostics_cost.py [RUN_DIR] [--batch 256] [--length 32] [--threads 2] [--baseline]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from loopkit import config, fixedpoint
from loopkit.demo import default_config_path
from loopkit.runs import build_model, load_run
from loopkit.tasks import build_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--iters", type=int, default=0, help="T of the forward (0: the training T)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-sv-budget", type=int, default=400, help="Jacobian products for sigma_min(I - J)")
    ap.add_argument("--baseline", action="store_true", help="also time the earlier defaults (ratio before/now)")
    ap.add_argument("--skip", nargs="*", default=[], help="estimates to leave out, e.g. 'sigma_min(I-J)'")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run_dir:
        cfg, task, model, _ = load_run(args.run_dir)
    else:
        cfg = config.load(default_config_path(), [])
        task = build_task(cfg.task)
        model = build_model(cfg, task)
    model.eval().requires_grad_(False)
    T = args.iters or cfg.train.max_iters
    x = task.sample(args.batch, args.length, torch.Generator().manual_seed(0))[0]

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    with torch.no_grad():
        model(x, 2)  # warm-up
        runs = sorted((timed(lambda: model(x, T)) for _ in range(3)), key=lambda r: r[0])
        t_fwd, out = runs[1]  # the median of three forwards
    print(f"batch {args.batch} x length {args.length}, width {cfg.model.width}, {args.threads} threads; "
          f"forward of T={T}: {t_fwd * 1000:.0f} ms", flush=True)
    f, e, _ = model.fixed_point_map(x)
    h = out.state
    # The first torch.func.linearize in a process pays one-off FX/tracing warm-up: time it on two
    # samples and report it apart, so the figures below are what every further estimate costs.
    t_warm, _ = timed(lambda: fixedpoint.spectral_radius(f, h[:2], e[:2]))
    print(f"  one-off warm-up (first traced linearization, 2 samples): {t_warm * 1000:.0f} ms", flush=True)
    # Current defaults (traced JVPs, one Krylov cycle for rho) and, with --baseline, the earlier
    # defaults (a fresh torch.func.jvp per product, up to 11 cycles) measured in the same process.
    before = {"mode": "forward", "restarts": 10}
    settings = [("now", {}, {})] + ([("before", {**before, "tol": 1e-6, "converged_share": 1.0}, before)]
                                     if args.baseline else [])
    for label, kw_rho, kw in settings:
        # partial binds this setting's keywords now, so no closure sees a later iteration's kw
        for name, fn in (("rho(J)", partial(fixedpoint.spectral_radius, f, h, e, **kw_rho)),
                         ("||J||_2", partial(fixedpoint.spectral_norm, f, h, e, **kw)),
                         ("sigma_min(I-J)", partial(
                             fixedpoint.min_singular_value,
                             f, h, e, max_matvecs=args.min_sv_budget, mode=kw.get("mode", "auto")))):
            if name in args.skip:
                continue
            t, est = timed(fn)
            value = est.rho if name == "rho(J)" else est.value
            print(f"  [{label:6s}] {name:15s} {t * 1000:8.0f} ms = {t / t_fwd:5.2f} x forward   "
                  f"median {value.median().item():.4f}   median residual {est.residual.median().item():.1e}",
                  flush=True)

if __name__ == "__main__":
    main()
