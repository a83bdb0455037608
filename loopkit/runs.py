"""A run folder -> the model, task and config it holds: built from the config stored in the
checkpoint and loaded with its weights. Training builds its model here too, so a run is always
rebuilt by the code that built it."""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint
from .config import Config
from .model import LoopedTransformer
from .runfolder import load_stored
from .tasks import Task, build_task


def build_model(cfg: Config, task: Task) -> LoopedTransformer:
    """The model a config describes, for this task's vocabulary, classes and layout."""
    depth = cfg.model.untied_depth or cfg.train.max_iters
    return LoopedTransformer(cfg.model, task.vocab_size, task.num_classes, depth=depth, layout=task.layout)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             overrides: list[str] | tuple[str, ...] = (),
             ckpt_name: str | None = None) -> tuple[Config, Task, LoopedTransformer, int]:
    """The latest checkpoint of a run (or the one `ckpt_name` names), rebuilt from the config stored
    inside it (with `task.*` / `eval.*` overrides for evaluation). The stored config is data: it
    runs no program and writes nowhere outside the run (`loopkit.runfolder`)."""
    if not Path(run_dir).is_dir():
        raise checkpoint.CheckpointError(f"{run_dir} is not a run folder (no such folder)")
    ckpt = checkpoint.find(Path(run_dir), ckpt_name)
    if ckpt is None:
        raise checkpoint.CheckpointError(f"{run_dir} has no checkpoint (checkpoints/latest is missing)")
    cfg, read_only = load_stored(checkpoint.config_from_checkpoint(ckpt), run_dir, overrides)
    task = build_task(cfg.task)
    task.cache_read_only = read_only
    model = build_model(cfg, task)
    checkpoint.load_weights(ckpt, model)
    return cfg, task, model.to(device), checkpoint.read_state(ckpt)["step"]
