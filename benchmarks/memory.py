"""Peak memory of one training step against T: full backprop grows with T, truncated backprop
(`train.bptt=k`) and the progressive loss with a fixed k (`train.progressive_k=k`) stay flat,
because the iterations before the last k run under no_grad and keep no activations.

Each measurement runs in a fresh process (peak RSS is a per-process high-water mark); on CUDA the
figure that matters is `torch.cuda.max_memory_allocated` (RSS is then the host side only).

    python benchmarks/memory.py [--config sudoku] [--iters 16,64,256] [--k 8] [--device cpu] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

RECIPES = ("full", "bptt", "progressive")


def one(args: argparse.Namespace) -> None:
    """Measure one (T, recipe) point in this process and print it as JSON."""
    import synthetic

    from loopkit import precision
    from loopkit.train import LoopObjective, StepPlan, step_generator

    torch.set_num_threads(args.threads)
    recipe = {"full": ["train.alpha=0"], "bptt": ["train.alpha=0", f"train.bptt={args.k}"],
              "progressive": ["train.alpha=1", f"train.progressive_k={args.k}"]}[args.recipe]
    cfg, task = synthetic.load(args.config, [f"train.max_iters={args.T}", *recipe, *args.overrides])
    device = torch.device(args.device)
    prec, _ = precision.resolve(cfg.train.precision, device)
    model = synthetic.build(cfg, task).to(device)
    x, y = task.batch(cfg.train.batch_size, step_generator(0, 0))
    x, y = x.to(device), y.to(device)
    # the progressive loss's worst case for time, n = T - k iterations without gradient
    plan = StepPlan(args.T, args.T - args.k, args.k)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        with precision.autocast(device, prec):
            loss = LoopObjective(model, task, cfg.train)(x, y, plan)
        loss.backward()
        model.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {"T": args.T, "recipe": args.recipe, "precision": prec, "rss_peak_mib": peak / 1024,
           "rss_step_mib": (peak - before) / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sudoku", help="a config shipped in loopkit/configs")
    ap.add_argument("--iters", default="16,64,256")
    ap.add_argument("--k", type=int, default=8, help="iterations with gradient (bptt / progressive_k)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", nargs=2, metavar=("T", "RECIPE"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="section.key=value for the config")
    args = ap.parse_args()
    if args.one:
        args.T, args.recipe = int(args.one[0]), args.one[1]
        return one(args)
    print(f"{args.config}, device {args.device}, k = {args.k}; peak memory of a process that runs two training steps")
    print("| T | recipe | precision | peak RSS (MiB) | growth during the steps (MiB) | CUDA max allocated (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for T in map(int, args.iters.split(",")):
        for recipe in RECIPES:
            cmd = [sys.executable, __file__, "--config", args.config, "--k", str(args.k), "--device", args.device,
                   "--threads", str(args.threads), "--one", str(T), recipe, *args.overrides]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                print(f"| {T} | {recipe} | failed: {why} |", flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            cuda = f"{r['cuda_max_allocated_mib']:.0f}" if "cuda_max_allocated_mib" in r else "-"
            print(f"| {T} | {recipe} | {r['precision']} | {r['rss_peak_mib']:.0f} | {r['rss_step_mib']:.0f} | {cuda} |",
                  flush=True)


if __name__ == "__main__":
    main()
