"""Typed config sections from plain mappings: each section is a dataclass, and a value is checked
against its field's annotation, so an unknown key or a bad value is one error naming the key and
what is allowed (before anything touches a run folder). Shared by the run config and the tasks'
options."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from .errors import ConfigError


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a dataclass field annotation and convert ints to floats etc."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build dataclass `cls` from a dict, naming any unknown key and the keys that exist."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{section}.{key}'; known keys in '{section}': {', '.join(names)}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)
