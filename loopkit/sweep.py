"""`loopkit sweep SWEEP.yaml`: a grid of runs (a base config, axes of `section.key` values, seeds),
each trained, evaluated and analysed in its own run directory, resumably and in parallel.

A sweep file:

    base: loopkit/configs/prefix_sums.yaml     # relative to the sweep file, or a shipped config name
    overrides: [train.steps=400]               # applied to every run (optional)
    axes:                                      # the grid: every combination of these values
      model.recall: [none, standard, internal]
      model.norm: [pre, outer]
    variants:                                  # named override sets, crossed with the axes (optional):
      internal: [model.recall=internal]        #   for controls that are not a full grid
      internal_h0input: [model.recall=internal, model.init_state=input]
    seeds: [0, 1, 2]                           # train.seed of each run (default [0])
    stages: [train, eval, analyze]             # default: all three
    eval_args: [--max-iters, "160"]                # extra `loopkit eval` arguments (optional)
    analyze_args: [--samples, "16"]            # extra `loopkit analyze` arguments (optional)

Each run lives in `<out>/<switches>` (e.g. `recall-none_norm-pre_seed-0`) and every stage is a
`loopkit` command run as its own process, its output kept in `<run>/sweep.log`. A stage counts as
done when its result exists (the final checkpoint; eval/results.json; analysis/results.json), so
running the same command again skips finished work, resumes a killed training from its last
checkpoint, and redoes nothing else. One failing run does not stop the others (nor does a run whose
checkpoint cannot be read: it counts as pending, and its train stage fails with the reason); the
sweep lists the failures, each with its stage's error line, at the end and exits non-zero.

Every run's folder name is checked before anything runs: one safe name inside `--out` (a value
with `/` or `..` is refused), and no two runs share one (a repeated seed or axis value is refused).
The stages die with the sweep: on Linux each is asked of the kernel to be killed when the sweep is
(PR_SET_PDEATHSIG, which holds even for `kill -9`), so a rerun never meets an orphan still training;
an interrupted sweep (Ctrl-C) kills its running stages and starts no more.

Runs go to local threads that each wait on `loopkit` processes (`--workers N`), or, with
`--backend ray [--address HOST:PORT]`, to Ray tasks: Ray, not a home-made scheduler, spreads many
runs over many machines (an address is probed first: Ray would wait for ever on one where nothing
answers). One run over several GPUs stays `torchrun` (DDP).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from . import checkpoint, config
from .config import ConfigError

STAGES = ("train", "eval", "analyze")
KEYS = {"base", "overrides", "axes", "variants", "seeds", "stages", "eval_args", "analyze_args"}
PROBE_TIMEOUT_S = 5.0  # how long a Ray --address may take to accept a connection

# Each stage starts as this little program (Linux): it asks the kernel to SIGKILL it when the sweep
# thread that started it dies, even by SIGKILL, then becomes the stage itself (exec: same process).
_GUARD = """import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):  # the sweep died before the kernel was asked
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""
_live: set[subprocess.Popen] = set()  # the stages running now, killed when the sweep is interrupted
_live_lock = threading.Lock()
_stopping = threading.Event()


@dataclass
class Point:
    """One run of the grid: its name, directory and the overrides that make its config."""

    name: str
    run_dir: Path
    overrides: list[str]


@dataclass
class Sweep:
    base: Path
    points: list[Point]
    stages: list[str]
    eval_args: list[str] = field(default_factory=list)
    analyze_args: list[str] = field(default_factory=list)


def _value_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _leaves_folder(text: str) -> bool:
    """Whether text, as part of a run folder's name, could make it a path out of `--out`."""
    return ".." in text or any(c in text for c in "/\\\0")


def _check_unique(values: list[Any], what: str, path: Path) -> None:
    seen = set()
    for text in map(_value_text, values):
        if text in seen:
            raise ConfigError(f"{path}: {what} lists {text} twice; two runs would share one folder (give each "
                              f"value once)")
        seen.add(text)


def _string_list(raw: dict[str, Any], key: str, path: Path) -> list[str]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"{path}: '{key}' must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def _resolve_base(text: Any, path: Path) -> Path:
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{path}: 'base' must name a config file (e.g. loopkit/configs/prefix_sums.yaml)")
    for candidate in (path.parent / text, Path(text), Path(str(resources.files("loopkit") / "configs" / text))):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: base config {text!r} not found (relative to the sweep file, the current folder, "
                      f"or a shipped config name such as prefix_sums.yaml)")


def load_sweep(path: str | Path, out: str | Path) -> Sweep:
    """Read and check a sweep file; every run's config is built (and so validated) here, before
    anything is written."""
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    raw = config.read_yaml(path) or {}  # non-UTF-8 text or bad YAML: one line naming file and place
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file holds a mapping with keys {', '.join(sorted(KEYS))}")
    unknown = set(raw) - KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(KEYS))}")
    base = _resolve_base(raw.get("base"), path)
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError(f"{path}: 'axes' maps section.key to a non-empty list of values, got {axes!r}")
    if "train.seed" in axes:
        raise ConfigError(f"{path}: give seeds with 'seeds: [...]', not as an axis")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    _check_unique(seeds, "'seeds'", path)
    for key, values in axes.items():
        _check_unique(values, f"axis {key}", path)
    stages = raw.get("stages", list(STAGES))
    if not isinstance(stages, list) or not stages or any(s not in STAGES for s in stages):
        raise ConfigError(f"{path}: 'stages' must be a list drawn from {', '.join(STAGES)}, got {stages!r}")
    common = _string_list(raw, "overrides", path)
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(k, str) and k.replace("_", "").isalnum()
                                                 for k in variants):
        raise ConfigError(f"{path}: 'variants' maps a name (letters, digits, _) to a list of overrides, "
                          f"got {variants!r}")
    variants = {name: _string_list(variants, name, path) for name in variants} or {"": []}
    points, switches_of = [], {}
    # seed-major order: a sweep stopped part-way has every configuration at the first seeds
    for seed in seeds:
        for (variant, extra), values in itertools.product(variants.items(), itertools.product(*axes.values())):
            switches = [f"{key}={_value_text(v)}" for key, v in zip(axes, values)] + [f"train.seed={seed}"]
            parts = [variant] * bool(variant) + [f"{key.split('.')[-1]}-{_value_text(v)}"
                                                 for key, v in zip(axes, values)]
            name = "_".join([*parts, f"seed-{seed}"])
            # the name is a folder of `out`: checked for every run first, whether or not the config takes the value
            for key, v in zip(axes, values):
                if _leaves_folder(f"{key.split('.')[-1]}-{_value_text(v)}"):
                    raise ConfigError(f"{path}: run {name}: axis {key} value {_value_text(v)!r} would put the run "
                                      f"outside {out}; a value in a run folder's name may not hold '/', '\\' or '..'")
            if not name or name.startswith(".") or _leaves_folder(name):
                raise ConfigError(f"{path}: run {name!r} is not a safe folder name inside {out} (no '/', '\\', "
                                  f"'..', not starting with '.')")
            described = " ".join([f"variant={variant}"] * bool(variant) + switches)
            if name in switches_of:
                raise ConfigError(f"{path}: the runs {switches_of[name]} and {described} would share the folder "
                                  f"{name}; make their values distinct")
            switches_of[name] = described
            points.append(Point(name, out / name, common + extra + switches))
    for point in points:
        try:
            config.load(base, point.overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: run {point.name}: {err}") from None
    return Sweep(base, points, [s for s in STAGES if s in stages],
                 _string_list(raw, "eval_args", path), _string_list(raw, "analyze_args", path))


def stage_done(point: Point, stage: str, base: Path) -> bool:
    """Whether a stage's result is on disk (what makes a rerun skip it). A checkpoint that cannot be
    read counts as not done: the run's train stage then fails with the reason, for that run alone."""
    if stage == "eval":
        return (point.run_dir / "eval" / "results.json").is_file()
    if stage == "analyze":
        return (point.run_dir / "analysis" / "results.json").is_file()
    try:
        ckpt = checkpoint.latest(point.run_dir) if (point.run_dir / "checkpoints").exists() else None
        step = checkpoint.read_state(ckpt)["step"] if ckpt is not None else -1
    except checkpoint.CheckpointError:
        return False
    return step >= config.load(base, point.overrides).train.steps


def _run_stage(command: list[str], log, env: dict[str, str]) -> tuple[int, str | None]:
    """One stage as a child process that dies with the sweep; its exit code and its error line."""
    start = log.tell()
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", _GUARD, str(os.getpid()), *command]
    with _live_lock:
        if _stopping.is_set():
            return -1, "the sweep was interrupted"
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _live.add(child)
    try:
        code = child.wait()
    finally:
        with _live_lock:
            _live.discard(child)
    with open(log.name, errors="replace") as out:
        out.seek(start)
        errors = [line[len("loopkit: error: "):].strip() for line in out if line.startswith("loopkit: error: ")]
    return code, errors[-1] if errors else None


def _stop_stages() -> None:
    """The sweep is interrupted: start no more stages and kill the running ones."""
    with _live_lock:
        _stopping.set()
        for child in _live:
            child.kill()


def run_point(point: Point, sweep: Sweep, threads: int) -> tuple[str, str | None]:
    """All pending stages of one run, each as a `loopkit` process; (name, error or None)."""
    point.run_dir.mkdir(parents=True, exist_ok=True)
    # the stages run the very loopkit this sweep imported, whatever the worker's folder or installs
    here = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    cli = [sys.executable, "-m", "loopkit.cli"]
    commands = {
        "train": cli + ["train", str(sweep.base), *point.overrides, f"train.threads={threads}",
                        "--run-dir", str(point.run_dir)]
                 + (["--resume"] if (point.run_dir / "config.yaml").exists() else []),
        "eval": cli + ["eval", str(point.run_dir), *sweep.eval_args],
        "analyze": cli + ["analyze", str(point.run_dir), *sweep.analyze_args],
    }
    with open(point.run_dir / "sweep.log", "a") as log:
        for stage in sweep.stages:
            if stage_done(point, stage, sweep.base):
                continue
            log.write(f"\n$ {' '.join(commands[stage])}\n")
            log.flush()
            started = time.perf_counter()
            code, error = _run_stage(commands[stage], log, env)
            log.write(f"[sweep] {stage} exit {code} after {time.perf_counter() - started:.0f} s\n")
            if code:
                why = f": {error}" if error else ""
                return point.name, f"{stage} failed (exit {code}){why}; see {point.run_dir / 'sweep.log'}"
    return point.name, None


def _run_local(sweep: Sweep, pending: list[Point], workers: int, threads: int, report) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each worker waits on `loopkit` processes
        running: set[Future] = {pool.submit(run_point, p, sweep, threads) for p in pending}
        try:
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    report(*future.result(), len(running))
        except BaseException:  # Ctrl-C, SIGTERM (cli): leave no stage running, start no more
            _stop_stages()
            pool.shutdown(cancel_futures=True)
            raise


def _run_ray(sweep: Sweep, pending: list[Point], workers: int, threads: int, address: str | None, report) -> None:
    """The same runs as Ray tasks, one CPU-thread share each: on a local Ray instance, or on a
    cluster (`address`) whose nodes have loopkit installed and see the sweep folder (shared disk)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'loopkit[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else workers * threads,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    running = []
    try:
        remote = ray.remote(num_cpus=threads)(run_point)
        running = [remote.remote(p, sweep, threads) for p in pending]
        while running:
            finished, running = ray.wait(running, num_returns=1)
            report(*ray.get(finished[0]), len(running))
    except BaseException:  # interrupted: end the tasks' workers, and with them their stages
        for task in running:
            ray.cancel(task, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def check_address(address: str) -> None:
    """A Ray address that names a host and port must answer there: `ray.init` would otherwise wait
    for ever. `auto`, `local` and other URL schemes go to Ray as given."""
    if address in ("auto", "local") or ("://" in address and not address.startswith("ray://")):
        return
    found = re.fullmatch(r"(?:ray://)?(\[[^]]+\]|[^:/\[\]]+):(\d+)", address)
    if not found or not 0 < int(found[2]) < 65536:
        raise ConfigError(f"--address {address!r} is not a Ray address; give HOST:PORT (e.g. 10.0.0.5:6379), "
                          f"ray://HOST:PORT, or auto")
    try:
        socket.create_connection((found[1].strip("[]"), int(found[2])), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        why = f"no answer in {PROBE_TIMEOUT_S:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ConfigError(f"--backend ray --address {address}: no Ray cluster answers there ({why.lower()}); "
                          f"start one with `ray start --head`, or correct the address") from None


def run_sweep(path: str | Path, out: str | Path, workers: int = 1, progress: bool = True,
              backend: str = "local", address: str | None = None, threads: int = 0) -> list[tuple[str, str]]:
    """Run every pending stage of every point; returns the failures as (run, reason). `threads`
    per run (0: the machine's cores split between the workers)."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend: {backend!r} is not allowed; choose one of local, ray")
    if backend == "ray" and address:
        check_address(address)
    sweep = load_sweep(path, out)
    _stopping.clear()
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    pending = [p for p in sweep.points if not all(stage_done(p, s, sweep.base) for s in sweep.stages)]
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=len(sweep.points), initial=len(sweep.points) - len(pending), desc="sweep", unit="run",
               disable=not progress, dynamic_ncols=True)
    bar.set_postfix(running=min(workers, len(pending)), failed=0)

    def report(name: str, error: str | None, still_running: int) -> None:
        if error:
            failures.append((name, error))
        bar.update(1)
        bar.set_postfix(running=min(workers, still_running), failed=len(failures))

    if backend == "ray":
        _run_ray(sweep, pending, workers, threads, address, report)
    else:
        _run_local(sweep, pending, workers, threads, report)
    bar.close()
    return sorted(failures)
