"""Run configuration: typed dataclasses, YAML files and `key=value` overrides.

Every section is a dataclass so that an unknown key or a bad value is caught before anything
touches a run directory, with an error that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .sections import build_section

# older names of a model.position, each the same architecture as the name it maps to
POSITION_ALIASES = {"grid": "axes", "board": "axes"}


@dataclass
class ModelConfig:
    width: int = 64
    heads: int = 4
    mlp_ratio: float = 4.0
    layers: int = 1  # layers per loop iteration ("K" in docs/design.md, "The model")
    # both: at the block's entry and between attention and MLP (internal recall whose attention
    # also sees the input and positions: the control for internal recall's empty first attention)
    recall: Literal["none", "standard", "internal", "both"] = "standard"
    recall_op: Literal["add", "concat"] = "add"
    norm: Literal["pre", "post", "outer", "peri"] = "outer"
    # layernorm: on prefix sums, rmsnorm with outer/post norm diverged at lr >= 1e-3 where layernorm trained
    norm_type: Literal["rmsnorm", "layernorm"] = "layernorm"
    # auto: the input itself when recall is none (forced: docs/design.md, "Recall"), zeros otherwise
    init_state: Literal["auto", "zeros", "input", "random"] = "auto"
    # relative: learned per-head bias on the clipped relative offset (length-free, extrapolates);
    # learned: absolute embeddings (fixed-size boards only); axes: a learned embedding per axis the
    # task's layout declares (sudoku: row, column, box -- the structure the rules are written in;
    # chess: rank, file, diagonal, anti-diagonal -- the lines pieces move along); none: nothing.
    # grid and board are older names of axes (runs made before tasks declared their axes): the same
    # architecture, so their checkpoints resume under axes (POSITION_ALIASES)
    position: Literal["relative", "learned", "axes", "grid", "board", "none"] = "relative"
    max_distance: int = 8  # relative offsets beyond this share one bias
    window: int = 0  # >0: attend only to |i - j| <= window (a local operator, like a conv kernel)
    causal: bool = False
    max_len: int = 1024  # only for position=learned
    tied: bool = True  # False: an untied stack of `max_iters` blocks (the non-looped baseline)
    untied_depth: int = 0  # blocks in the untied stack (0: train.max_iters)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # AdamW's second-moment decay: lower forgets calm stretches faster, so a gradient spike after
    # them (backprop through an expansive loop) is not divided by a stale, tiny running scale
    adam_beta2: float = 0.99
    max_iters: int = 32  # T at training time (the maximum when randomized)
    min_iters: int = 0  # >0: T ~ U[min_iters, max_iters] per batch (randomized T)
    alpha: float = 1.0  # weight of the progressive loss; 1 - alpha on the full-T loss
    progressive_k: int = 0  # iterations with gradient in the progressive loss; 0: k ~ U[1, T - n]
    bptt: int = 0  # >0: the full-T loss backpropagates through the last `bptt` iterations only
    # the full-T loss backpropagates by implicit differentiation at h_T (one adjoint GMRES solve,
    # DEQ style) instead of through the iterations; needs alpha < 1
    implicit: bool = False
    implicit_tol: float = 1e-4  # relative residual of the adjoint solve
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast where the hardware multiplies bf16 natively (AVX-512 BF16 / AMX CPUs,
    # Ampere+ GPUs), fp32 elsewhere; the run's config.yaml records what was picked
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # torch.compile of the looped block: off, or a torch.compile mode (reduce-overhead = CUDA graphs)
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    log_every: int = 50
    eval_every: int = 500  # quick validation on the task's first two eval sets; 0: never
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    threads: int = 0  # torch CPU threads; 0: torch's default


@dataclass
class EvalConfig:
    max_iters: int = 0  # largest T evaluated (0: 4 x train.max_iters)
    batch_size: int = 250
    tol: float = 1e-3  # --until-converged stopping tolerance on the relative residual
    # --until-converged stopping rule (loopkit/early_exit.py): residual (r_t < tol), stable (the
    # argmax answer unchanged for stable_k iterations, and every output probability moved by less
    # than prob_tol when prob_tol > 0), either (whichever fires first)
    halt: Literal["residual", "stable", "either"] = "residual"
    stable_k: int = 8  # smaller k stopped some prefix-sums answers mid-pause (benchmarks/README.md, "Design notes")
    prob_tol: float = 0.0  # 0: off

    def __post_init__(self) -> None:
        """Range checks of this section's own keys (a Literal already limits `halt`)."""
        if self.stable_k < 1:
            raise ConfigError(f"eval.stable_k must be >= 1 (iterations the answer must hold), got {self.stable_k}")
        if self.prob_tol < 0:
            raise ConfigError(f"eval.prob_tol must be >= 0 (0: off), got {self.prob_tol}")


@dataclass
class Config:
    task: dict[str, Any] = field(default_factory=lambda: {"name": "prefix_sums"})
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def eval_max_iters(self) -> int:
        return self.eval.max_iters or 4 * self.train.max_iters


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


# keys read under an older name (run folders, sweeps and notes written before the rename): one name
# per concept now, max_iters for every cap on the loop's iterations
OLDER_NAMES = {("train", "iters"): "max_iters", ("train", "iters_min"): "min_iters", ("eval", "iters"): "max_iters"}


def current_names(section: str, values: Any) -> Any:
    """A section's mapping with older key names replaced by the current ones (both given: an error)."""
    if not isinstance(values, dict):
        return values
    out = dict(values)
    for (sec, old), new in OLDER_NAMES.items():
        if sec == section and old in out:
            if new in out:
                raise ConfigError(f"{section}.{old} and {section}.{new} are one key ({old} is its older name); "
                                  f"give only {section}.{new}")
            out[new] = out.pop(old)
    return out


def as_recorded(section: str, values: Any) -> dict[str, Any]:
    """A section of a run's recorded config read as loopkit reads it now, so that runs made before a
    rename or a new key compare equal to runs made after: older key names under their current ones,
    keys added since at their defaults (which they had then too), an older position name as its
    current one."""
    out = current_names(section, values if isinstance(values, dict) else {})
    if section in SECTIONS:
        out = {**dataclasses.asdict(SECTIONS[section]()), **out}
    if section == "model" and out.get("position") in POSITION_ALIASES:
        out["position"] = POSITION_ALIASES[out["position"]]
    return out


def from_dict(raw: dict[str, Any]) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("a config file must hold a mapping with sections task, model, train, eval")
    unknown = set(raw) - {"task", *SECTIONS}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; known: task, {', '.join(SECTIONS)}")
    cfg = Config(**{name: build_section(cls, current_names(name, raw.get(name, {}) or {}), name)
                    for name, cls in SECTIONS.items()})
    task = raw.get("task") or {}
    if not isinstance(task, dict):
        raise ConfigError(f"task: expected a mapping with at least task.name, got {task!r}")
    cfg.task = {"name": "prefix_sums", **task}
    validate(cfg)
    return cfg


# (section.key, check, what is allowed): every numeric key's range, checked before a run folder exists
RANGES: list[tuple[str, Any, str]] = [
    ("model.mlp_ratio", lambda v: v > 0, "> 0"),
    ("model.max_distance", lambda v: v >= 1, ">= 1"),
    ("model.window", lambda v: v >= 0, ">= 0 (0: global attention)"),
    ("model.max_len", lambda v: v >= 1, ">= 1"),
    ("model.untied_depth", lambda v: v >= 0, ">= 0 (0: train.max_iters)"),
    ("train.lr", lambda v: 0 < v < float("inf"), "a finite number > 0"),
    ("train.min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("train.weight_decay", lambda v: 0 <= v < float("inf"), "a finite number >= 0"),
    ("train.grad_clip", lambda v: 0 < v < float("inf"), "a finite number > 0"),
    ("train.adam_beta2", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("train.min_iters", lambda v: v >= 0, ">= 0 (0: fixed T)"),
    ("train.progressive_k", lambda v: v >= 0, ">= 0 (0: k drawn per step)"),
    ("train.bptt", lambda v: v >= 0, ">= 0 (0: full backprop)"),
    ("train.implicit_tol", lambda v: 0 < v < 1, "in (0, 1)"),
    ("train.seed", lambda v: v >= 0, ">= 0"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
    ("train.eval_every", lambda v: v >= 0, ">= 0 (0: never)"),
    ("train.ckpt_every", lambda v: v >= 1, ">= 1"),
    ("train.keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("train.threads", lambda v: v >= 0, ">= 0 (0: torch's default)"),
    ("eval.max_iters", lambda v: v >= 0, ">= 0 (0: 4 x train.max_iters)"),
    ("eval.batch_size", lambda v: v >= 1, ">= 1"),
    ("eval.tol", lambda v: 0 <= v < float("inf"), "a finite number >= 0"),
]


def validate(cfg: Config) -> None:
    """Every key's range, then the cross-field checks that a single field's type cannot express."""
    for name, ok, allowed in RANGES:
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if not ok(value):
            raise ConfigError(f"{name}={value!r} is out of range: allowed {allowed}")
    m, t = cfg.model, cfg.train
    for key in ("width", "heads", "layers"):
        if getattr(m, key) < 1:
            raise ConfigError(f"model.{key} must be >= 1, got {getattr(m, key)}")
    if m.width % m.heads:
        raise ConfigError(f"model.width={m.width} must be divisible by model.heads={m.heads}")
    if m.recall == "none" and m.init_state not in ("auto", "input"):
        raise ConfigError(
            f"model.init_state={m.init_state!r} with model.recall=none would make the output independent of "
            "the input; recall none forces init_state=input (use auto or input)"
        )
    if t.max_iters < 1 or t.steps < 0 or t.batch_size < 1:
        raise ConfigError("train.max_iters and train.batch_size must be >= 1 and train.steps >= 0")
    if t.min_iters > t.max_iters:
        raise ConfigError(f"train.min_iters={t.min_iters} exceeds train.max_iters={t.max_iters}")
    if not 0.0 <= t.alpha <= 1.0:
        raise ConfigError(f"train.alpha must lie in [0, 1], got {t.alpha}")
    if t.progressive_k > t.max_iters:
        raise ConfigError(f"train.progressive_k={t.progressive_k} exceeds train.max_iters={t.max_iters}")
    if t.implicit and (t.alpha >= 1 or t.bptt or not m.tied):
        raise ConfigError("train.implicit replaces the backprop of the full-T loss of a looped model: "
                          "it needs train.alpha < 1, train.bptt=0 and model.tied=true")
    if not m.tied and (t.min_iters or t.alpha > 0):
        raise ConfigError("an untied stack (model.tied=false) has a fixed depth: "
                          "set train.alpha=0 and train.min_iters=0")
    from .tasks import TASKS, check_options  # the task section's keys and ranges (imported here: tasks import config)

    check_options(cfg.task)
    if m.position in ("axes", "grid", "board") and not TASKS[cfg.task["name"]].layout.axes:
        raise ConfigError(f"model.position={m.position} embeds the axes of a grid task's layout, and task "
                          f"{cfg.task['name']} declares none; allowed here: relative, learned, none")
    if m.causal and TASKS[cfg.task["name"]].layout.grid:
        raise ConfigError(f"model.causal=true orders positions as a sequence, and task {cfg.task['name']} lays its "
                          "positions out on a grid; use model.causal=false")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 0.0003); values are read as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, _, value = text.partition("=")
    path = key.strip().split(".")
    if len(path) != 2 or not all(path):
        raise ConfigError(f"override key {key!r} must be section.key (e.g. model.width=128)")
    path[1] = OLDER_NAMES.get(tuple(path), path[1])
    try:
        return path, yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "unreadable"
        raise ConfigError(f"override {text!r}: the value is not a YAML scalar or list ({problem})") from None


def read_text(path: str | Path) -> str:
    """A text file the user or a run folder gave, read as UTF-8 (a BOM dropped); anything else is a
    ConfigError naming the file and the fault, never a traceback from the decoder."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                          "save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path} cannot be read: {err.strerror or err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one
    silently, so `lr: 1e-3` near the top and `lr: 1e-2` further down would train at 1e-2 unnoticed."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` brings keys in that the mapping's own keys may override
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the base loader says what is wrong with it
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content (None when empty); a fault, a key given twice included, is one line
    naming the file and the place."""
    try:
        return yaml.load(read_text(path), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML: {getattr(err, 'problem', None) or 'unreadable'}{where}") from None


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = read_yaml(path)
        if raw is None:  # an empty file would silently train the defaults: not what anyone meant
            raise ConfigError(f"config file {path} is empty; it needs the sections task, model, train, eval")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping with sections task, model, train, eval")
    return from_dict(apply_overrides(raw, overrides))


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...],
                    sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Set `section.key=value` overrides into a raw config dict (optionally only in `sections`)."""
    for text in overrides:
        (section, key), value = parse_override(text)
        if sections is not None and section not in sections:
            raise ConfigError(f"override {text!r}: only {', '.join(s + '.*' for s in sections)} can be changed here")
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        for (sec, older), current in OLDER_NAMES.items():  # the override replaces the key under any name
            if sec == section and current == key:
                raw[section].pop(older, None)
        raw[section][key] = value
    return raw


def override_for_eval(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A trained run's config with `task.*` / `eval.*` overrides (new test files, more samples,
    other levels); the model and its task name stay as trained."""
    raw = apply_overrides(cfg.to_dict(), overrides, sections=("task", "eval"))
    if raw["task"].get("name") != cfg.task.get("name"):
        raise ConfigError(f"task.name cannot change at evaluation: the model was trained on {cfg.task.get('name')!r}")
    return from_dict(raw)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
