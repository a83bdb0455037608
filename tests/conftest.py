"""Shared test settings. DEVICES lists where the device-dependent tests run: the CPU always, and
CUDA when a GPU is present (benchmarks/gpu_check.sh runs the suite there)."""

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
