"""Forward + backward time of one attention call: SDPA in fp32, SDPA in bf16 (the fused CPU
kernel), and loopkit's attention in bf16 (on a CPU: two matmuls with the softmax in fp32).

    python benchmarks/attention_kernels.py [--threads 2] [--device cpu] [--shapes 32x4x81x32,32x8x81x32,64x4x32x32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from loopkit.model import attention


def timed(fn, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, reps: int = 20) -> float:
    q, k, v = (torch.randn(*shape, dtype=dtype, device=device, requires_grad=True) for _ in range(3))

    def once() -> None:
        fn(q, k, v).float().sum().backward()

    for _ in range(3):
        once()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="32x4x81x32,32x8x81x32,64x4x32x32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    ours = lambda q, k, v: attention(q, k, v, None)  # noqa: E731
    print(f"{args.device}, {args.threads} thread(s), forward + backward, median of 20 (ms)")
    print("| batch x heads x L x head dim | SDPA fp32 | SDPA bf16 | loopkit bf16 |")
    print("| --- | --- | --- | --- |")
    for text in args.shapes.split(","):
        shape = tuple(int(n) for n in text.split("x"))
        row = [timed(sdpa, shape, torch.float32, device), timed(sdpa, shape, torch.bfloat16, device),
               timed(ours, shape, torch.bfloat16, device)]
        print(f"| {' x '.join(map(str, shape))} | " + " | ".join(f"{t:.1f}" for t in row) + " |", flush=True)


if __name__ == "__main__":
    main()
