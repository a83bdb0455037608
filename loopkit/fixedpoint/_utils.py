"""Batched vector helpers shared by the fixed-point diagnostics.

Every state in this package is a tensor of shape (B, *state_shape) holding B *independent*
samples.  All reductions here are therefore per sample (over all non-batch dims) and return
tensors of shape (B,), so that every algorithm runs vectorized over the batch while still
treating each sample as its own problem.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for reductions: half precisions overflow/lose too much in norms, so upcast them."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def bnorm(x: Tensor) -> Tensor:
    """Per-sample 2-norm over all non-batch dims, shape (B,)."""
    flat = x.reshape(x.shape[0], -1)
    return torch.linalg.vector_norm(flat.to(acc_dtype(x.dtype)), dim=1)


def bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product over all non-batch dims, shape (B,)."""
    dt = acc_dtype(a.dtype)
    return (a.reshape(a.shape[0], -1).to(dt) * b.reshape(b.shape[0], -1).to(dt)).sum(1)


def bview(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample (B,) tensor so it broadcasts against ``like`` of shape (B, ...)."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def bwhere(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample select: sample i of the result is a[i] where mask[i] else b[i]."""
    return torch.where(bview(mask, a), a, b)


def bfinite(x: Tensor) -> Tensor:
    """Per-sample flag: every entry of the sample is finite."""
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)


def random_unit(like: Tensor, seed: int = 0) -> Tensor:
    """Random direction with unit per-sample norm, shaped/typed/placed like ``like``.

    Drawn on the CPU with a seeded generator and then moved, so results are reproducible
    across devices (a CUDA generator would give different numbers).
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(like.shape, generator=g, dtype=torch.float64)
    v = v / bview(bnorm(v), v)
    return v.to(device=like.device, dtype=like.dtype)


def to_jsonable(obj: Any) -> Any:
    """Convert tensors/dataclass-ish containers to plain Python (non-finite floats -> None).

    Strict JSON has no NaN/Infinity, and diagnostics legitimately produce them (a diverged
    sample's residual), so they become ``None`` rather than breaking ``json.dumps``.
    """
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        if obj.is_complex():
            return to_jsonable({"real": obj.real, "imag": obj.imag})
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, complex):
        return {"real": to_jsonable(obj.real), "imag": to_jsonable(obj.imag)}
    return obj
