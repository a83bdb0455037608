"""Which device a command may run on, checked before anything is loaded or written.

torch accepts many device strings that loopkit cannot use (`meta` holds no data, `mps` exists only
on Apple GPUs, `cuda:3` on a one-GPU machine): each is refused here with one line naming the
option and what this machine offers, instead of a traceback from deep inside the first kernel.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def available() -> list[str]:
    """The device names this machine can run loopkit on."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve(text: str, option: str = "--device", auto: bool = False) -> torch.device:
    """The torch device `text` names, refused unless this machine can run on it. `option` is how
    the user gave it (`--device`, `train.device`); `auto` allows 'auto' (a GPU when there is one)."""
    if auto and text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = ", ".join((["auto"] if auto else []) + available())
    try:
        device = text if isinstance(text, torch.device) else torch.device(text) if isinstance(text, str) else None
    except RuntimeError:
        device = None
    if device is None:
        raise ConfigError(f"{option}={text!r} is not a device; allowed here: {allowed}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}={text}: no CUDA GPU is available here; allowed here: {allowed}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{option}={text}: this machine has {torch.cuda.device_count()} GPU(s); allowed here: "
                          f"{allowed}")
    if device.type not in ("cpu", "cuda") and str(device) not in available():
        raise ConfigError(f"{option}={text}: loopkit cannot run on {device.type} here; allowed here: {allowed}")
    return device
