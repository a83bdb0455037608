"""Which number format the training step multiplies in, and the autocast context that applies it.

`precision: auto` picks bf16 only where the hardware multiplies bf16 natively — a CPU with AVX-512
BF16 or AMX, an NVIDIA GPU of compute capability 8.0 (Ampere) or newer — and fp32 elsewhere, where
emulated bf16 would be slower than fp32. Weights, optimizer moments, norms, the softmax and the
loss stay in fp32 under autocast; only the matrix products run in bf16.
"""

from __future__ import annotations

import contextlib
from functools import cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no cheap way to ask, so assume no native bf16
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` multiplies bf16 in hardware, the evidence in words)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}"
    if device.type == "cpu":
        found = sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
        return bool(found), f"CPU flags: {', '.join(found) if found else 'no avx512_bf16 / amx_bf16'}"
    return False, f"{device.type}: bf16 support unknown"


def resolve(requested: str, device: torch.device) -> tuple[str, str]:
    """(fp32 or bf16, why): `auto` becomes bf16 where it is native; an explicit choice is kept."""
    if requested != "auto":
        return requested, "as configured"
    native, evidence = native_bf16(device)
    return ("bf16" if native else "fp32"), f"auto: {evidence}"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward runs in: bf16 matrix products under torch.autocast, or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
