"""How much packing seeds into one process could buy: the upper bound, before building it.

N copies of a shipped model (its own init per seed) take one training step together through
`torch.func` (stack_module_state + vmap over functional_call), against N single-model steps. Every
member gets the same step plan here (T, and the progressive loss's n, k), which a real pack cannot
assume (each seed draws its own), so the packed figure is an upper bound on what packing gains.
A third variant is the ceiling of any packing, however written: one model at an N times larger
batch (the same matrix sizes a pack multiplies, with none of vmap's overhead). Interleaved timing;
prints per-member step time and runs/hour relative to one model per process.

    python benchmarks/pack_scaling.py --task prefix_sums --packs 1,4,8 --threads 1
    python benchmarks/pack_scaling.py --task sudoku --device cuda --packs 1,8,16 model.width=256 train.batch_size=256
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopkit import config, precision  # noqa: E402
from loopkit.runs import build_model  # noqa: E402
from loopkit.tasks import build_task  # noqa: E402
from loopkit.train import plan_step, step_generator  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(n: int, cfg, task, prec: str, steps: int, device: torch.device) -> tuple[float, float, float]:
    """Median seconds per member-step: packed (N members in one vmapped step), one at a time, and
    one model at an N x batch (per N-th of it)."""
    tc = cfg.train
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(build_model(cfg, task).to(device))
    params, buffers = stack_module_state(models)
    opt = torch.optim.AdamW(params.values(), lr=tc.lr)
    singles = [torch.optim.AdamW(m.parameters(), lr=tc.lr) for m in models]
    skeleton = copy.deepcopy(models[0]).to("meta")

    def packed_step(s: int) -> None:
        plan = plan_step(tc, step_generator(0, s))

        def member_loss(p, b, x, y):
            out = functional_call(skeleton, (p, b), (x, plan.n + plan.k), kwargs={"grad_iters": plan.k})
            return task.loss(out.logits, y)

        batches = [task.train_batch(tc.batch_size, step_generator(seed, s)) for seed in range(n)]
        x, y = (torch.stack([b[i] for b in batches]).to(device) for i in (0, 1))
        # SDPA's fused kernels refuse an attention bias that needs a gradient under vmap
        with sdpa_kernel(SDPBackend.MATH), precision.autocast(device, prec):
            loss = vmap(member_loss)(params, buffers, x, y).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def single_steps(s: int) -> None:
        plan = plan_step(tc, step_generator(0, s))
        for seed, (m, o) in enumerate(zip(models, singles)):
            x, y = (t.to(device) for t in task.train_batch(tc.batch_size, step_generator(seed, s)))
            with precision.autocast(device, prec):
                loss = task.loss(m(x, plan.n + plan.k, grad_iters=plan.k).logits, y)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    def wide_step(s: int) -> None:
        plan = plan_step(tc, step_generator(0, s))
        x, y = (t.to(device) for t in task.train_batch(n * tc.batch_size, step_generator(0, s)))
        with precision.autocast(device, prec):
            loss = task.loss(models[0](x, plan.n + plan.k, grad_iters=plan.k).logits, y)
        singles[0].zero_grad(set_to_none=True)
        loss.backward()
        singles[0].step()

    times: dict[str, list[float]] = {"packed": [], "single": [], "wide": []}
    for s in range(steps + 1):  # the first round is warm-up
        for name, fn in (("packed", packed_step), ("single", single_steps), ("wide", wide_step)):
            sync(device)
            started = time.perf_counter()
            fn(s)
            sync(device)
            if s:
                times[name].append(time.perf_counter() - started)
    return tuple(statistics.median(times[k]) / n for k in ("packed", "single", "wide"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="prefix_sums", help="a shipped config: prefix_sums or sudoku")
    ap.add_argument("--packs", default="1,4,8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("overrides", nargs="*", help="section.key=value for the config (e.g. model.width=128)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(ROOT / "loopkit" / "configs" / f"{args.task}.yaml", args.overrides)
    task = build_task(cfg.task)
    tc = cfg.train
    device = torch.device(args.device)
    prec = precision.resolve(tc.precision, device)[0]
    print(f"{args.task}: width {cfg.model.width}, batch {tc.batch_size}, T {tc.max_iters}, {prec}, "
          f"{args.threads} thread(s), {device}, torch {torch.__version__}")
    for n in map(int, args.packs.split(",")):
        packed, single, wide = measure(n, cfg, task, prec, args.steps, device)
        print(f"pack {n}: per member-step {1000 * single:6.1f} ms one model at a time, {1000 * packed:6.1f} packed "
              f"(runs/hour x {single / packed:.2f}), {1000 * wide:6.1f} as one {n} x batch (the ceiling: x "
              f"{single / wide:.2f})")


if __name__ == "__main__":
    main()
