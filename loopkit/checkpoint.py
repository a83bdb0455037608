"""Checkpoints: safetensors weights and optimizer moments, JSON for everything else.

Nothing here unpickles, so loading a checkpoint never executes code. A checkpoint is a folder
`checkpoints/step_XXXXXXXX/` written under a temporary name and renamed into place; the file
`checkpoints/latest` (replaced atomically) names the newest complete one. A run killed at any
moment therefore leaves either the old or the new checkpoint as `latest`, never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import Config, ConfigError


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not fit the model asked for."""


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    extra: dict[str, Any],
    keep: int = 2,
) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    opt_tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, tmp / "rng.safetensors")
    state = {"step": step, "config": cfg.to_dict(), "optimizer": opt_meta, **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():  # only when re-saving the step we resumed from: identical content
        shutil.rmtree(final)
    os.rename(tmp, final)
    _write_text_atomic(root / "latest", final.name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    if not re.fullmatch(r"step_\d{8}", name):  # a run folder is data: never follow it elsewhere
        raise CheckpointError(f"{pointer} names {name!r}, not a checkpoint of this run (step_NNNNNNNN)")
    path = pointer.parent / name
    if not (path / "state.json").exists():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "state.json").read_text())


def check_same_model(stored: dict[str, Any], cfg: Config, where: Path) -> None:
    """Refuse a checkpoint whose architecture differs from the config, naming every difference."""
    diffs = [
        f"model.{k}: checkpoint has {stored['model'].get(k)!r}, config has {v!r}"
        for k, v in cfg.to_dict()["model"].items()
        if stored["model"].get(k) != v
    ]
    if stored["task"].get("name") != cfg.task.get("name"):
        diffs.append(f"task.name: checkpoint has {stored['task'].get('name')!r}, config has {cfg.task.get('name')!r}")
    if diffs:
        raise CheckpointError(f"checkpoint {where} is from another architecture:\n  " + "\n  ".join(diffs))


def load_weights(path: Path, model: nn.Module) -> None:
    weights = load_file(Path(path) / "model.safetensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: missing {missing}, unexpected {unexpected}, wrong shape {wrong}"
        )
    model.load_state_dict(weights)


def load_training_state(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer moments and RNG states; return the JSON state (step, counters...)."""
    state = read_state(path)
    optimizer.load_state_dict(_optimizer_from_files(load_file(Path(path) / "optimizer.safetensors"), state["optimizer"]))
    rng = load_file(Path(path) / "rng.safetensors")
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return state


def config_from_checkpoint(path: Path) -> Config:
    from .config import from_dict

    try:
        return from_dict(read_state(path)["config"])
    except (KeyError, ConfigError) as err:
        raise CheckpointError(f"checkpoint {path} holds no usable config: {err}") from None
