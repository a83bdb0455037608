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
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import atomic
from .config import POSITION_ALIASES, Config
from .errors import ConfigError, LoopkitError
from .runfolder import check_no_links


class CheckpointError(LoopkitError):
    """A checkpoint that is missing, incomplete or does not fit the model asked for."""


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
    """Write checkpoint `step` (then point `latest` at it and prune to the newest `keep`). A write
    the system refuses (disk full) leaves the earlier checkpoints and `latest` as they were and
    raises a CheckpointError naming the folder."""
    check_no_links(run_dir, "checkpoints")
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
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
    except Exception as err:  # OSError, or safetensors' own error around one (disk full, quota)
        shutil.rmtree(tmp, ignore_errors=True)
        reason = atomic.describe(err) if isinstance(err, OSError) else str(err).splitlines()[0]
        kept = latest(run_dir) if (root / "latest").exists() else None
        raise CheckpointError(f"cannot write checkpoint {final}: {reason}; "
                              + (f"the last checkpoint, {kept.name}, is as it was" if kept else
                                 "no checkpoint had been written yet")) from None
    if final.exists():  # only when re-saving the step we resumed from: identical content
        shutil.rmtree(final)
    os.rename(tmp, final)
    atomic.write_text(root / "latest", final.name, fsync=True)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def set_latest(run_dir: Path, path: Path) -> None:
    """Make checkpoint `path` of the run the one checkpoints/latest names (atomically)."""
    atomic.write_text(Path(run_dir) / "checkpoints" / "latest", Path(path).name, fsync=True)


def latest(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists() and not pointer.is_symlink():
        return None
    check_no_links(run_dir, "checkpoints/latest")
    try:
        name = pointer.read_text().strip()
    except (UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{pointer} is damaged: {_fault(err)}") from None
    if not re.fullmatch(r"step_\d{8}", name):  # a run folder is data: never follow it elsewhere
        raise CheckpointError(f"{pointer} names {name!r}, not a checkpoint of this run (step_NNNNNNNN)")
    path = pointer.parent / name
    if not (path / "state.json").exists():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def _fault(err: Exception) -> str:
    """What is wrong with a file, in a few words, from the error reading it raised."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON ({err.msg}: line {err.lineno} column {err.colno})"
    if isinstance(err, FileNotFoundError):
        return "the file is missing"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json, or a CheckpointError naming the file and what is wrong with it."""
    file = Path(path) / "state.json"
    try:
        state = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file} is damaged: {_fault(err)}") from None
    if not (isinstance(state, dict) and isinstance(state.get("step"), int) and isinstance(state.get("config"), dict)):
        raise CheckpointError(f"{file} is damaged: it lacks the step number or the run's config")
    folder = Path(path).name
    if re.fullmatch(r"step_\d{8}", folder) and int(folder[5:]) != state["step"]:
        raise CheckpointError(f"{file} is damaged: it says step {state['step']} in the folder of step "
                              f"{int(folder[5:])}")
    return state


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or a CheckpointError naming the file and what is wrong with it."""
    try:
        return load_file(file)
    except FileNotFoundError:
        raise CheckpointError(f"{file} is damaged: the file is missing") from None
    except Exception as err:  # SafetensorError (truncated file, garbage header), OSError
        raise CheckpointError(f"{file} is damaged: not a complete safetensors file ({_fault(err)})") from None


# weights saved under an earlier name: the sudoku and chess position tables became the task-declared
# axes table (same shape, same place in the parameter order, so optimizer states still line up)
LEGACY_NAMES = {"grid_pos": "axis_pos", "board_pos": "axis_pos"}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint, refused when any is NaN or infinite (a diverged run
    stops before it saves, so such a file is damaged, and would only print meaningless numbers)."""
    file = Path(path) / "model.safetensors"
    weights = {LEGACY_NAMES.get(k, k): v for k, v in _tensors(file).items()}
    broken = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{file} holds non-finite weights (NaN or inf in {len(broken)} of {len(weights)} "
                              f"tensors, first {broken[0]}): the model is broken and gives no meaningful numbers")
    return weights


def verify(path: Path, full: bool = False) -> dict[str, Any]:
    """Read a checkpoint through: state.json and the weights, and with `full` (what a resume needs)
    the optimizer moments and RNG states too. Raises CheckpointError naming the first damaged file;
    returns the state."""
    path = Path(path)
    check_no_links(path.parent.parent, Path(path.parent.name, path.name), *(Path(path.parent.name, path.name, f)
                   for f in ("state.json", "model.safetensors", "optimizer.safetensors", "rng.safetensors")))
    state = read_state(path)
    _weights(path)
    if full:
        if not (path / "optimizer.safetensors").exists() and not (path / "rng.safetensors").exists():
            raise CheckpointError(f"{path} holds the weights only (published runs keep no optimizer or random "
                                  "state): it evaluates and analyses, but a resume needs the run's own full checkpoint")
        moments = _tensors(path / "optimizer.safetensors")
        broken = [k for k, v in moments.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if broken:  # resuming from them diverges at once whatever the learning rate: the checkpoint is broken
            raise CheckpointError(f"{path / 'optimizer.safetensors'} holds non-finite optimizer moments (NaN or inf in "
                                  f"{len(broken)} of {len(moments)} tensors, first {broken[0]})")
        if "cpu" not in _tensors(Path(path) / "rng.safetensors"):
            raise CheckpointError(f"{Path(path) / 'rng.safetensors'} is damaged: it holds no CPU random state")
        if not isinstance(state.get("optimizer"), dict):
            raise CheckpointError(f"{Path(path) / 'state.json'} is damaged: it holds no optimizer settings")
    return state


def steps(run_dir: Path) -> list[Path]:
    """The run's complete-looking checkpoint folders, oldest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if re.fullmatch(r"step_\d{8}", p.name) and p.is_dir())


def named(run_dir: Path, name: str) -> Path:
    """The checkpoint folder `name` (step_NNNNNNNN, or its step number) of a run."""
    text = str(name).strip()
    if text.isdigit():
        text = f"step_{int(text):08d}"
    if not re.fullmatch(r"step_\d{8}", text):
        raise CheckpointError(f"--checkpoint {name!r}: name a checkpoint as step_NNNNNNNN or by its step number")
    path = Path(run_dir) / "checkpoints" / text
    if not path.is_dir():
        have = ", ".join(p.name for p in steps(run_dir)) or "none"
        raise CheckpointError(f"--checkpoint {name}: {path} does not exist (checkpoints of this run: {have})")
    return path


def find(run_dir: Path, name: str | None = None, full: bool = False, use: str = "to use it") -> Path | None:
    """The checkpoint to load, read through (`verify`): the one named (`--checkpoint`), else the
    one checkpoints/latest names; None when the run has none yet. A damaged one is refused with the
    file and the fault named, and the message offers the newest intact earlier checkpoint: taking
    it unasked would silently lose the steps after it, so it is used only when the user names it."""
    path = named(run_dir, name) if name is not None else None
    try:
        if path is None:
            path = latest(run_dir)
            if path is None:
                if not steps(run_dir):
                    return None
                # a run killed between renaming a checkpoint into place and writing the pointer (the
                # first save has no earlier pointer): the newest folder is the one `latest` would
                # name, so it is taken when it is intact; a damaged one is refused as below
                newest = steps(run_dir)[-1]
                try:
                    verify(newest, full)
                except CheckpointError:
                    raise CheckpointError(f"{Path(run_dir) / 'checkpoints' / 'latest'} is missing, and the newest "
                                          f"checkpoint {newest.name} is damaged") from None
                print(f"loopkit: {Path(run_dir) / 'checkpoints' / 'latest'} is missing; using the newest checkpoint, "
                      f"{newest.name} (a run stopped while saving it)", file=sys.stderr)
                return newest
        verify(path, full)
        return path
    except CheckpointError as err:
        for earlier in reversed(steps(run_dir)):
            if path is not None and earlier.name >= path.name:
                continue
            try:
                state = verify(earlier, full)
            except CheckpointError:
                continue
            n = state["step"]
            offer = (f"the earlier checkpoint {earlier.name} (step {n}) is intact" if path is not None
                     else f"the newest intact checkpoint is {earlier.name} (step {n})")
            raise CheckpointError(f"{err}; {offer}: add --checkpoint {earlier.name} {use}") from None
        raise


def _meaning(key: str, value: Any) -> Any:
    """What a model switch's value builds: an older name of a position means its current one."""
    return POSITION_ALIASES.get(value, value) if key == "position" else value


def check_same_model(stored: dict[str, Any], cfg: Config, where: Path) -> None:
    """Refuse a checkpoint whose architecture differs from the config, naming every difference."""
    model, task = stored.get("model"), stored.get("task")
    if not isinstance(model, dict) or not isinstance(task, dict):
        raise CheckpointError(f"{Path(where) / 'state.json'} is damaged: its config lacks the model or task section")
    diffs = [
        f"model.{k}: checkpoint has {model.get(k)!r}, config has {v!r}"
        for k, v in cfg.to_dict()["model"].items()
        if _meaning(k, model.get(k)) != _meaning(k, v)
    ]
    if task.get("name") != cfg.task.get("name"):
        diffs.append(f"task.name: checkpoint has {task.get('name')!r}, config has {cfg.task.get('name')!r}")
    if diffs:
        raise CheckpointError(f"checkpoint {where} is from another architecture: " + "; ".join(diffs))


def load_weights(path: Path, model: nn.Module) -> None:
    weights = _weights(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items()
             if k in own and own[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: missing {missing}, unexpected {unexpected}, "
            f"wrong shape {wrong}"
        )
    model.load_state_dict(weights)


def load_training_state(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer moments and RNG states; return the JSON state (step, counters...)."""
    state = read_state(path)
    opt_file = Path(path) / "optimizer.safetensors"
    try:
        optimizer.load_state_dict(_optimizer_from_files(_tensors(opt_file), state["optimizer"]))
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{opt_file} is damaged: it does not fit its state.json or this model ({err})") from None
    rng = _tensors(Path(path) / "rng.safetensors")
    try:
        torch.set_rng_state(rng["cpu"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{Path(path) / 'rng.safetensors'} is damaged: no usable CPU random state "
                              f"({err})") from None
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
