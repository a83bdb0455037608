"""Reliability corpus (issue 24, "Reliability, second round"): how loopkit meets bad inputs.

Each case crafts some damage in a fresh temporary folder (a run folder whose config names an
engine, a symbolic link in a run, NaN in a checkpoint, a sweep value that climbs out of --out, a
disk that refuses writes, ...), runs one loopkit command as its own process (or two at once, or a
short `python -c` for the Python API), and classifies what happened:

  clear      refused: a non-zero exit, stderr's last line `loopkit: error: ...`, no traceback,
             nothing lost (or, in the few cases where going on is right -- a stored cache folder
             dropped, a sweep's other runs finished, a stage that dies with its killed sweep --
             done without the harm the case looks for)
  traceback  a Python traceback in the output
  silent     no refusal where there should be one: exit 0, a hang (the time limit), a result
             written where it must not be (outside the run folder, outside --out), a wrong
             diagnosis, a program named in a run folder run
  lost       a file that existed was changed or removed (a good checkpoint pruned, an outside file
             appended to, a user's file replaced), or a half-written file left behind
  other      refused without a traceback but not in a `loopkit: error:` line (a column of its own,
             shown only when some case ends so)

A file counts as lost by hashing the case folder before and after the command (a case names the
files it guards when the command may rightly change others). The findings are numbered as in
issue 24; the table gives, per finding, how many cases ended each way.

It runs against any loopkit source tree: every command is `python -m loopkit.cli ...` with
PYTHONPATH=TREE (and the case folder as the current folder); loopkit is never imported here, so
one corpus gives before/after figures for two revisions:

    python benchmarks/reliability_corpus.py --tree . --json /tmp/after.json
    git worktree add /tmp/base24 30a23c6
    python benchmarks/reliability_corpus.py --tree /tmp/base24 --json /tmp/before.json

One tiny prefix-sums run (4 steps, evaluated, analysed), a chess run folder whose config names an
engine script that leaves a mark when run, and an evaluated sudoku run (whose stored cache folder
some cases move outside it) are made first with the
tree under test and copied into each case's folder. Every command has a time limit (120 s; 60 s
for the Ray and chess cases). No Stockfish runs: LOOPKIT_STOCKFISH names a missing file.
`--only 5,7` runs the cases of some findings; the whole corpus takes a few minutes on one core.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = ("clear", "traceback", "silent", "lost", "other")
TIMEOUT_S = 120
TINY = ["task.train_length=8", "task.eval_lengths=[8, 16]", "task.eval_samples=16", "model.width=16",
        "model.heads=2", "model.window=1", "model.causal=true", "train.steps=4", "train.max_iters=3",
        "train.batch_size=8", "train.warmup_steps=1", "train.log_every=2", "train.eval_every=0",
        "train.ckpt_every=2", "train.threads=1", "eval.max_iters=6", "eval.batch_size=16"]
TINY_YAML = "task:\n  name: prefix_sums\ntrain:\n  precision: fp32\n"
STEP2, STEP4 = "checkpoints/step_00000002", "checkpoints/step_00000004"
CHESS = ["task.name=chess", "task.engine={engine}", "task.cache_dir=cache", "task.max_depth=4",
         "task.train_grades=1-2", "task.eval_levels=[1-4]", "task.eval_samples=4", "model.width=8", "model.heads=2",
         "model.position=axes", "train.max_iters=2"]
ONE_STEP = ["train.steps=1", "task.train_size=4", "task.workers=1", "train.threads=1"]  # chess, sudoku: 4 puzzles
SUDOKU = ["task.name=sudoku", "task.eval_levels=[easy]", "task.eval_samples=2", "task.workers=1",
          "task.cache_dir=cache", "model.width=8", "model.heads=2", "model.position=axes", "train.max_iters=2"]
QUIET = {"train", "eval", "analyze", "claims", "report", "demo"}  # the commands that take --quiet
FINDINGS = {
    1: "a run's config.yaml as a recipe (engine, cache)",
    2: "report --out onto a pipe, link, user file",
    3: "divergence: good checkpoint kept",
    4: "two eval / analyze at once",
    5: "symbolic links in a run folder",
    6: "sweep names that leave --out",
    7: "sweeps: duplicates, damage, Ray, kill",
    8: "NaN in the optimizer state",
    9: "claims / report inputs",
    10: "disk full (file-size limit)",
    11: "Python API arguments",
    12: "devices torch knows (meta, mps)",
    13: "run folders, YAML keys twice, lr=100",
}

# an untrained run folder of any task (config.yaml and a step-0 checkpoint holding what a training
# saves with it, so that any revision can resume it): no data needed
MAKE_CHECKPOINT = """import sys
from pathlib import Path
import torch
from loopkit import checkpoint, config
from loopkit.runs import build_model
from loopkit.tasks import TASKS
run = Path(sys.argv[1])
cfg = config.load(None, sys.argv[2:])
model = build_model(cfg, TASKS[cfg.task["name"]])
run.mkdir(parents=True)
(run / "config.yaml").write_text(config.dump(cfg))
checkpoint.save(run, 0, model, torch.optim.AdamW(model.parameters()), cfg,
                {"metrics": {}, "window_loss": 0.0, "window_steps": 0})
"""

# one call of the Python API on the run argv[1]: a ValueError is the refusal asked for
API_CALL = """import sys
import torch
import loopkit
try:
    run = loopkit.load(sys.argv[1])
    {call}
except ValueError as err:
    print(f"CLEAR: {{type(err).__name__}}: {{err}}")
else:
    print("NO ERROR")
"""


# -- running commands ------------------------------------------------------------------------------
@dataclass
class Done:
    """What a command did: exit code (None: killed at its time limit), output, time."""

    code: int | None
    out: str
    err: str
    seconds: float
    logs: str = ""  # a sweep's per-run sweep.log files (its stages' output)

    @property
    def text(self) -> str:
        return self.out + self.err + self.logs

    @property
    def last_line(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


class Bench:
    """The loopkit tree under test and the scratch folder its commands run in."""

    def __init__(self, tree: Path, scratch: Path):
        self.tree, self.scratch, self.made = tree, scratch, scratch / "made"
        (scratch / "home").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOOPKIT_STOCKFISH")}
        self.env = {**env, "PYTHONPATH": str(tree), "LOOPKIT_STOCKFISH": str(scratch / "no-stockfish"),
                    "HOME": str(scratch / "home"), "MPLCONFIGDIR": str(scratch / "mpl"), "OMP_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}

    def start(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None,
              fsize: int | None = None) -> subprocess.Popen:
        """A process in a session of its own (so that a time limit kills all it started)."""
        limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None
        return subprocess.Popen(argv, cwd=cwd, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True, preexec_fn=limit)

    @staticmethod
    def wait(proc: subprocess.Popen, timeout: float, started: float) -> Done:
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - started)))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            out, err = proc.communicate()
            code = None
        return Done(code, out, err, time.perf_counter() - started)

    def run(self, argv: list[str], cwd: Path, timeout: float = TIMEOUT_S, **how) -> Done:
        started = time.perf_counter()
        return self.wait(self.start(argv, cwd, **how), timeout, started)

    def loopkit(self, *argv: str, cwd: Path, **how) -> Done:
        quiet = ["--quiet"] if argv and argv[0] in QUIET else []
        return self.run([sys.executable, "-m", "loopkit.cli", *argv, *quiet], cwd, **how)

    def python(self, code: str, *argv: str, cwd: Path, **how) -> Done:
        return self.run([sys.executable, "-c", code, *argv], cwd, **how)


def kill_group(pgid: int) -> None:
    """Kill a process group this script started (start_new_session: the group is the child's pid)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def live_in_group(pgid: int) -> list[int]:
    """Processes of a group still running (zombies left out)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def tree_hash(root: Path) -> dict[str, str]:
    """Every entry under root: a file's hash, a link's target, 'dir', 'fifo' (no link followed, no
    pipe opened). The empty lock files a command opens (`.lock*`) are left out."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if name.startswith(".lock"):
                continue
            mode = os.lstat(path).st_mode
            found[str(path.relative_to(root))] = (
                f"link to {os.readlink(path)}" if stat.S_ISLNK(mode) else
                hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode) else
                "dir" if stat.S_ISDIR(mode) else "fifo" if stat.S_ISFIFO(mode) else "special")
    return found


# -- a case ----------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """One case's folder (`tmp`, holding `run` and `evaluated` copies) and its commands."""

    bench: Bench
    tmp: Path
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def run(self) -> Path:
        return self.tmp / "run"

    def fill(self, arg: str) -> str:
        made = self.bench.made
        return arg.format(tmp=self.tmp, run=self.run, ev=self.tmp / "evaluated", chess=self.tmp / "chess",
                          sudoku=self.tmp / "sudoku", cfg=made / "tiny.yaml")

    def loopkit(self, *argv: str, timeout: float = TIMEOUT_S, fsize: int | None = None) -> Done:
        done = self.bench.loopkit(*map(self.fill, argv), cwd=self.tmp, timeout=timeout, fsize=fsize, env=self.env)
        if argv[0] == "sweep":
            logs = sorted(self.tmp.rglob("sweep.log"))  # wherever the runs went
            done.logs = "".join(f"\n--- {p}\n{p.read_text(errors='replace')}" for p in logs)
        return done

    @property
    def env(self) -> dict[str, str]:
        return {"LOOPKIT_TEST_MARK": str(self.tmp / "engine-ran")}


Verdict = tuple[str, str] | None  # (outcome, note), or None: the default classification decides


@dataclass
class Case:
    name: str
    finding: int
    command: list[str] | Callable[[Ctx], Done]  # argv with {tmp} {run} {ev} {cfg} {chess} {sudoku}, or a runner
    setup: Callable[[Ctx], None] | None = None
    judge: Callable[[Ctx, Done], Verdict] | None = None  # what this case must not do, checked first
    keep: tuple[str, ...] = ("*",)  # patterns of the files that existed and must be left as they were
    timeout: float = TIMEOUT_S
    fsize: int | None = None  # a file-size limit (a full disk)
    skip: Callable[[], str | None] | None = None  # a reason not to run it here

    def argv(self, ctx: Ctx) -> list[str]:
        shown = self.command if isinstance(self.command, list) else getattr(self.command, "argv", ["?"])
        return [ctx.fill(a) for a in shown]


def classify(case: Case, ctx: Ctx, done: Done) -> tuple[str, str]:
    before, after = ctx.before, ctx.after
    changed = [k for k, v in before.items() if any(fnmatch.fnmatch(k, p) for p in case.keep) and after.get(k) != v]
    if changed:
        return "lost", f"changed or removed: {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}"
    half = half_written(ctx, case.fsize) if case.fsize else []
    if half:
        return "lost", f"half-written file(s) left: {', '.join(half[:4])}"
    if done.code is None:
        return "silent", f"no answer within {case.timeout:.0f} s (hang)"
    verdict = case.judge(ctx, done) if case.judge else None
    if verdict:
        return verdict
    if "Traceback" in done.text:
        return "traceback", exception_line(done.text)
    if done.code == 0:
        return "silent", "exit 0"
    if done.last_line.startswith("loopkit: error:"):
        return "clear", ""
    return "other", f"exit {done.code}"


def half_written(ctx: Ctx, limit: int) -> list[str]:
    """New files a full disk left behind: temporary files, or files cut at the size limit."""
    return [k for k in ctx.after if k not in ctx.before
            and (".tmp" in k or (ctx.tmp / k).is_file() and (ctx.tmp / k).stat().st_size >= limit)]


def exception_line(text: str) -> str:
    """The exception a traceback ends in (its first unindented line after 'Traceback')."""
    lines = [line for line in text.splitlines() if line.strip()]
    at = max(i for i, line in enumerate(lines) if "Traceback" in line)
    after = [line for line in lines[at:] if not line.startswith((" ", "Traceback"))]
    return after[0] if after else lines[-1]


# -- setups: the damage done before a case ---------------------------------------------------------
def write(rel: str, data: str | bytes):
    def setup(ctx: Ctx) -> None:
        path = ctx.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def cut(rel: str):
    def setup(ctx: Ctx) -> None:
        path = ctx.tmp / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def remove(rel: str):
    def setup(ctx: Ctx) -> None:
        path = ctx.tmp / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return setup


def fifo(rel: str):
    def setup(ctx: Ctx) -> None:
        os.mkfifo(ctx.tmp / rel)
    return setup


def link(rel: str, target: str, empty: bool = False):
    """`rel` replaced by a symbolic link to `target`: an empty folder, `target` itself when it exists,
    else a copy of `rel` made there."""
    def setup(ctx: Ctx) -> None:
        path, to = ctx.tmp / rel, ctx.tmp / target
        if to.exists():
            pass
        elif empty:
            to.mkdir(parents=True)
        elif path.is_dir():
            shutil.copytree(path, to)
        else:
            shutil.copyfile(path, to)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.symlink_to(to)
    return setup


def copy_made(name: str, dest: str | None = None):
    def setup(ctx: Ctx) -> None:
        shutil.copytree(ctx.bench.made / name, ctx.tmp / (dest or name), symlinks=True)
    return setup


def edit(rel: str, old: str, new: str):
    def setup(ctx: Ctx) -> None:
        path = ctx.tmp / rel
        path.write_text(path.read_text().replace(old, ctx.fill(new)))
    return setup


def non_finite(rel: str, value: float = float("nan")):
    """The first tensor (by name) of a safetensors file set to NaN or inf."""
    def setup(ctx: Ctx) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(ctx.tmp / rel)
        name = sorted(tensors)[0]
        tensors[name] = torch.full_like(tensors[name], value)
        save_file(tensors, ctx.tmp / rel)
    return setup


def sweep_file(**keys):
    """tmp/sweep.yaml (JSON is YAML): base is the tiny config and TINY the overrides unless given."""
    def setup(ctx: Ctx) -> None:
        raw = {"base": str(ctx.bench.made / "tiny.yaml"), "overrides": TINY, "stages": ["train"], **keys}
        raw = {k: ctx.fill(v) if isinstance(v, str) else v for k, v in raw.items()}
        (ctx.tmp / "sweep.yaml").write_text(json.dumps(raw, indent=1) + "\n")
    return setup


def both(*setups):
    def setup(ctx: Ctx) -> None:
        for one in setups:
            one(ctx)
    return setup


SWEEP = ["sweep", "{tmp}/sweep.yaml", "--out", "{tmp}/runs", "--workers", "1", "--threads", "1"]
RESUME_MORE = ["train", "{cfg}", "--run-dir", "{run}", "--resume", "--allow-changes", *TINY, "train.steps=8"]


def train_new(*bad: str) -> list[str]:
    return ["train", "{cfg}", "--run-dir", "{tmp}/new", *TINY, *bad]


# -- judges: what a case must not do ---------------------------------------------------------------
def first(*judges):
    def judge(ctx: Ctx, done: Done) -> Verdict:
        return next((v for v in (j(ctx, done) for j in judges) if v), None)
    return judge


def nothing_at(rel: str, what: str):
    def judge(ctx: Ctx, done: Done) -> Verdict:
        return ("silent", f"{what} ({rel})") if os.path.lexists(ctx.tmp / rel) else None
    return judge


stored_engine_ran = nothing_at("engine-ran", "the engine named in the run's config.yaml ran")
outside_cache_made = nothing_at("outside-cache", "the run's stored cache folder outside it was written")


def cache_left_alone(ctx: Ctx, done: Done) -> Verdict:
    """A sudoku run whose config.yaml names a cache folder outside it, used as a recipe: training may
    go on (the cache is only a cache), but nothing may be written there."""
    if os.path.lexists(ctx.tmp / "outside-cache"):
        return "silent", "the run's stored cache folder outside it was made (outside-cache)"
    if done.code == 0 and "Traceback" not in done.text:
        notice = "cache_dir" in done.err
        return "clear", "trained, nothing written outside" + ("; a notice names the dropped cache_dir" * notice)
    return None


def stays_empty(rel: str):
    def judge(ctx: Ctx, done: Done) -> Verdict:
        made = [k for k in ctx.after if k.startswith(rel + "/")]
        return ("silent", f"results written outside the run: {made[0]}") if made else None
    return judge


def weights_sane(run_rel: str, outcome: str):
    """checkpoints/latest must not name weights that are non-finite or huge (> 1e6)."""
    def judge(ctx: Ctx, done: Done) -> Verdict:
        import torch
        from safetensors.torch import load_file

        latest = ctx.tmp / run_rel / "checkpoints" / "latest"
        if not latest.is_file():
            return None
        name = latest.read_text().strip()
        try:
            weights = load_file(latest.parent / name / "model.safetensors")
        except Exception as err:  # noqa: BLE001 (any damage counts)
            return outcome, f"latest names {name}, unreadable: {err}"
        worst = max(float(t.abs().max()) if t.numel() and t.is_floating_point() else 0.0 for t in weights.values())
        bad = any(not bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())
        return (outcome, f"latest is {name}, weights {'non-finite' if bad else f'max |w| {worst:.3g}'}") \
            if bad or worst > 1e6 else None
    return judge


def blames(word: str):
    """A refusal must name `word` (the damaged file), not another cause (a learning rate)."""
    def judge(ctx: Ctx, done: Done) -> Verdict:
        line = done.last_line
        if "Traceback" not in done.text and done.code and line.startswith("loopkit: error:") and word not in line:
            return "silent", f"wrong diagnosis: {line[:140]}"
        return None
    return judge


def sweep_run_refused(run_name: str):
    """A sweep that ran: the stage of `run_name` failed, its log ending in one `loopkit: error:` line."""
    def judge(ctx: Ctx, done: Done) -> Verdict:
        if "Traceback" in done.text or done.code == 0 or done.last_line.startswith("loopkit: error:"):
            return None
        log = ctx.tmp / "runs" / run_name / "sweep.log"
        errors = [line for line in log.read_text(errors="replace").splitlines()
                  if line.startswith("loopkit: error:")] if log.is_file() else []
        return ("clear", errors[-1][:140]) if run_name in done.err and errors else None
    return judge


def other_run_finished(rel: str):
    def judge(ctx: Ctx, done: Done) -> Verdict:
        if (ctx.tmp / rel).is_file():
            return sweep_run_refused("seed-0")(ctx, done)
        if "Traceback" in done.text:
            return None
        return "silent", f"the sweep stopped: {rel} not made ({done.last_line[:100]})"
    return judge


def runs_inside(out_rel: str):
    """Every run folder (a sweep.log) directly inside --out, nothing made beside it."""
    def judge(ctx: Ctx, done: Done) -> Verdict:
        made = {k.split("/")[0] for k in ctx.after if k not in ctx.before}
        outside = sorted(made - {out_rel})
        if outside:
            return "silent", f"made outside --out: {outside[0]}"
        nested = [k for k in ctx.after if k.endswith("sweep.log") and k.count("/") != 2]
        return ("silent", f"a run folder named unsafely: {nested[0]}") if nested else None
    return judge


def one_refused(result: str):
    def judge(ctx: Ctx, done: Done) -> Verdict:
        if "Traceback" in done.text:
            return None
        if done.code == 0:
            return "silent", "both ran to the end, writing the same results"
        path = ctx.tmp / result
        try:
            json.loads(path.read_text()) if path.exists() else None
        except ValueError:
            return "lost", f"{result} is not whole JSON"
        return None
    return judge


def api_refused(argument: str):
    """The API refuses with a ValueError (loopkit's ArgumentError) whose message names the argument."""
    def judge(ctx: Ctx, done: Done) -> Verdict:
        line = next((line for line in done.out.splitlines() if line.startswith("CLEAR: ")), None)
        if line is not None:
            return ("clear", line[7:140]) if argument in line else ("other", f"does not name {argument}: {line[7:140]}")
        if "NO ERROR" in done.out:
            return "silent", "returned without an error"
        return None
    return judge


def orphan_left(ctx: Ctx, done: Done) -> Verdict:
    alive = ctx.notes.get("orphans")
    if alive is None:
        return None
    return ("silent", f"a stage outlived the killed sweep (pids {alive})") if alive else \
        ("clear", "the training stage died with the sweep")


# -- runners: commands that are more than one process ----------------------------------------------
def concurrently(*argv: str):
    """The same command twice at once: one must be refused (the other writes its results)."""
    def two_at_once(ctx: Ctx) -> Done:
        started = time.perf_counter()
        quiet = ["--quiet"] if argv[0] in QUIET else []
        cmd = [sys.executable, "-m", "loopkit.cli", *map(ctx.fill, argv), *quiet]
        procs = [ctx.bench.start(cmd, ctx.tmp, env=ctx.env) for _ in range(2)]
        done = sorted((ctx.bench.wait(p, TIMEOUT_S, started) for p in procs), key=lambda d: (d.code or 0) != 0)
        codes = [d.code for d in done]
        code = None if None in codes else max(codes)
        return Done(code, "".join(d.out for d in done), "".join(d.err for d in done), time.perf_counter() - started)
    two_at_once.argv = ["2 x", *argv]
    return two_at_once


def api(call: str):
    def python_api(ctx: Ctx) -> Done:
        return ctx.bench.python(API_CALL.format(call=call), str(ctx.run), cwd=ctx.tmp, env=ctx.env)
    python_api.argv = ["python", "-c", call, "{run}"]
    return python_api


def kill_sweep(ctx: Ctx) -> Done:
    """A sweep killed by SIGKILL while its training stage runs: the stage must not keep running."""
    started = time.perf_counter()
    argv = [sys.executable, "-m", "loopkit.cli", *map(ctx.fill, SWEEP)]
    proc = ctx.bench.start(argv, ctx.tmp, env=ctx.env)
    log = ctx.tmp / "runs" / "seed-0" / "sweep.log"
    while time.perf_counter() - started < 20 and proc.poll() is None:
        if log.is_file() and "$ " in log.read_text(errors="replace"):
            break
        time.sleep(0.2)
    if proc.poll() is not None:  # it ended by itself: classified as any command
        out, err = proc.communicate()
        return Done(proc.returncode, out, err, time.perf_counter() - started)
    time.sleep(3)  # the stage is importing torch or training
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    time.sleep(3)
    ctx.notes["orphans"] = live_in_group(proc.pid)
    kill_group(proc.pid)
    return Done(proc.returncode, out, err, time.perf_counter() - started)


kill_sweep.argv = ["kill -9 during", *SWEEP]


def no_cuda() -> str | None:
    import torch

    return "a CUDA GPU is here" if torch.cuda.is_available() else None


def no_mps() -> str | None:
    import torch

    return "an Apple GPU is here" if torch.backends.mps.is_available() else None


# -- the corpus ------------------------------------------------------------------------------------
CHESS_NEW = ["train", "{chess}/config.yaml", "--run-dir", "{tmp}/new", *ONE_STEP]
CHESS_RESUME = ["train", "{chess}/config.yaml", "--run-dir", "{chess}", "--resume", "--allow-changes", *ONE_STEP]
OUTSIDE_CACHE = edit("sudoku/config.yaml", "cache_dir: cache", "cache_dir: {tmp}/outside-cache")
EVAL_WORK = ["--max-iters", "80", "task.eval_samples=128", "task.eval_lengths=[8, 16, 32, 64]"]
DIVERGE = ["train.lr=1e30", "train.steps=30", "train.ckpt_every=1"]
CHECKPOINTS = ("run/checkpoints/step_*",)

CASES = [
    # 1. a run's config.yaml used to train: its engine must not run, its outside cache not be written
    Case("train RUN/config.yaml --run-dir NEW", 1, CHESS_NEW, copy_made("chess"),
         first(stored_engine_ran, outside_cache_made), timeout=60),
    Case("train RUN/config.yaml --resume --allow-changes", 1, CHESS_RESUME, copy_made("chess"),
         first(stored_engine_ran, outside_cache_made), keep=("chess/checkpoints/*",), timeout=60),
    Case("sweep with base RUN/config.yaml", 1, SWEEP,
         both(copy_made("chess"), sweep_file(base="{chess}/config.yaml", overrides=ONE_STEP)),
         first(stored_engine_ran, outside_cache_made, sweep_run_refused("seed-0")), timeout=60),
    Case("stored cache_dir outside, new run", 1, ["train", "{sudoku}/config.yaml", "--run-dir", "{tmp}/new",
                                                  *ONE_STEP],
         both(copy_made("sudoku"), OUTSIDE_CACHE), cache_left_alone),
    Case("stored cache_dir outside, resume", 1, ["train", "{sudoku}/config.yaml", "--run-dir", "{sudoku}", "--resume",
                                                 "--allow-changes", *ONE_STEP],
         both(copy_made("sudoku"), OUTSIDE_CACHE), cache_left_alone, keep=("sudoku/checkpoints/step_00000000/*",)),
    # 2. report --out onto something that is not a report file
    Case("report --out a FIFO", 2, ["report", "{ev}", "--out", "{tmp}/pipe.html"], fifo("pipe.html"), timeout=60),
    Case("report --out a link to a user file", 2, ["report", "{ev}", "--out", "{tmp}/link.html"],
         both(write("mine.html", "<p>mine</p>"), link("link.html", "mine.html"))),
    Case("report --out the user's notes.html", 2, ["report", "{ev}", "--out", "{tmp}/notes.html"],
         write("notes.html", "<p>my notes</p>")),
    # 3. divergence: the good checkpoint survives, no blown-up weights become latest
    Case("resume lr=1e30, keep_checkpoints=1", 3, [*RESUME_MORE, *DIVERGE, "train.keep_checkpoints=1"],
         judge=weights_sane("run", "lost"), keep=(f"run/{STEP4}/model.safetensors",)),
    Case("resume lr=1e30, keep_checkpoints=2", 3, [*RESUME_MORE, *DIVERGE, "train.keep_checkpoints=2"],
         judge=weights_sane("run", "lost"), keep=(f"run/{STEP4}/model.safetensors",)),
    Case("fresh lr=1e30, ckpt_every=1", 3, train_new(*DIVERGE), judge=weights_sane("new", "silent")),
    # 4. one writer per output folder
    Case("two eval --force at once", 4, concurrently("eval", "{run}", "--force", *EVAL_WORK),
         judge=one_refused("run/eval/results.json"), keep=CHECKPOINTS),
    Case("two analyze --force at once", 4, concurrently("analyze", "{run}", "--force", "--samples", "4"),
         judge=one_refused("run/analysis/results.json"), keep=CHECKPOINTS),
    # 5. a run folder is data: no link in it is followed
    Case("step folder linked to another run's, eval", 5, ["eval", "{run}"],
         both(copy_made("run", "other"), link(f"run/{STEP4}", f"other/{STEP4}"))),
    Case("eval/ linked to an outside folder", 5, ["eval", "{run}"], link("run/eval", "outside", empty=True),
         stays_empty("outside")),
    Case("analysis/ linked to an outside folder", 5, ["analyze", "{run}", "--samples", "2"],
         link("run/analysis", "outside", empty=True), stays_empty("outside")),
    Case("metrics.jsonl linked outside, resume", 5, RESUME_MORE, link("run/metrics.jsonl", "outside.jsonl"),
         keep=("outside.jsonl",)),
    Case("checkpoints/ linked outside, resume", 5, RESUME_MORE, link("run/checkpoints", "outside-ckpts"),
         keep=("outside-ckpts/*",)),
    Case("fresh --run-dir holding an old metrics.jsonl", 5, ["train", "{cfg}", "--run-dir", "{tmp}/old", *TINY],
         write("old/metrics.jsonl", '{"step": 2, "loss": 0.5}\n')),
    # 6. every sweep run inside --out, under a safe name
    Case("axis value ../../../escape", 6, SWEEP, sweep_file(axes={"train.device": ["../../../escape"]}),
         runs_inside("runs")),
    Case("axis value with a slash", 6, SWEEP, sweep_file(axes={"train.device": ["cpu/nested"]}), runs_inside("runs")),
    Case("axis value ../../escape of a checked key", 6, SWEEP, sweep_file(axes={"model.norm": ["../../escape"]}),
         runs_inside("runs")),
    Case("variant named ../escape", 6, SWEEP, sweep_file(variants={"../escape": ["train.lr=0.002"]}),
         runs_inside("runs")),
    # 7. sweeps
    Case("seeds [0, 0]", 7, SWEEP, sweep_file(seeds=[0, 0])),
    Case("axis values [16, 16]", 7, SWEEP, sweep_file(axes={"model.width": [16, 16]})),
    Case("one run's checkpoints/latest damaged", 7, SWEEP,
         both(copy_made("run", "runs/seed-0"), copy_made("run", "runs/seed-1"), write("runs/seed-0/checkpoints/latest",
                                                                                     "garbage\n"),
              sweep_file(seeds=[0, 1], stages=["train", "eval"])),
         other_run_finished("runs/seed-1/eval/results.json"), keep=("runs/*/checkpoints/step_*",)),
    Case("--backend ray --address 127.0.0.1:1", 7, [*SWEEP, "--backend", "ray", "--address", "127.0.0.1:1"],
         sweep_file(), timeout=60),
    Case("sweep killed by SIGKILL mid-training", 7, kill_sweep, sweep_file(overrides=[*TINY, "train.steps=100000"]),
         orphan_left),
    # 8. non-finite optimizer moments: a damaged checkpoint, not a learning rate
    Case("NaN moments in the latest checkpoint, resume", 8, RESUME_MORE,
         non_finite(f"run/{STEP4}/optimizer.safetensors"), blames("optimizer"), keep=CHECKPOINTS),
    Case("inf moments in the latest checkpoint, resume", 8, RESUME_MORE,
         non_finite(f"run/{STEP4}/optimizer.safetensors", float("inf")), blames("optimizer"), keep=CHECKPOINTS),
    Case("NaN moments in every checkpoint, resume", 8, RESUME_MORE,
         both(non_finite(f"run/{STEP2}/optimizer.safetensors"), non_finite(f"run/{STEP4}/optimizer.safetensors")),
         blames("optimizer"), keep=CHECKPOINTS),
    # 9. claims and report check their inputs
    Case("claims of two tasks", 9, ["claims", "{ev}", "{sudoku}", "--out", "{tmp}/claims"], copy_made("sudoku")),
    Case("claims of one run given three times", 9, ["claims", "{ev}", "{ev}", "{ev}", "--out", "{tmp}/claims"]),
    Case("claims of two copies of one run", 9, ["claims", "{ev}", "{tmp}/copy", "--out", "{tmp}/claims"],
         copy_made("evaluated", "copy")),
    Case("claims of a run without config.yaml", 9, ["claims", "{ev}", "--out", "{tmp}/claims"],
         remove("evaluated/config.yaml")),
    Case("claims, eval/results.json is {}", 9, ["claims", "{ev}", "--out", "{tmp}/claims"],
         write("evaluated/eval/results.json", "{}")),
    Case("claims, analysis/results.json truncated", 9, ["claims", "{ev}", "--out", "{tmp}/claims"],
         cut("evaluated/analysis/results.json")),
    Case("report, eval/results.json is {}", 9, ["report", "{ev}", "--out", "{tmp}/report.html"],
         write("evaluated/eval/results.json", "{}")),
    # 10. a full disk (writes refused past 1 kB): one line naming the file, nothing half-written
    Case("train, disk full", 10, ["train", "{cfg}", "--run-dir", "{tmp}/fresh", *TINY], fsize=1024),
    Case("train --resume, disk full", 10, RESUME_MORE, fsize=1024, keep=CHECKPOINTS),  # config.yaml: the new recipe
    Case("eval, disk full", 10, ["eval", "{run}"], fsize=1024),
    Case("analyze, disk full", 10, ["analyze", "{run}", "--samples", "2"], fsize=1024),
    Case("claims, disk full", 10, ["claims", "{ev}", "--out", "{tmp}/claims"], fsize=1024),
    Case("report, disk full", 10, ["report", "{ev}", "--out", "{tmp}/report.html"], fsize=1024),
    # 11. the Python API checks its arguments
    Case("trace(max_iters=-5)", 11, api("run.trace('0101', max_iters=-5)"), judge=api_refused("max_iters")),
    Case("predict(token 5)", 11, api("run.predict(torch.tensor([[0, 1, 5]]))"), judge=api_refused("x")),
    Case("trace of inputs of two lengths", 11, api("run.trace(['0101', '011'])"), judge=api_refused("x")),
    Case("diagnose(n_inits=0)", 11, api("run.diagnose('0101', n_inits=0)"), judge=api_refused("n_inits")),
    Case("load(device='cuda') without a GPU", 11, api("loopkit.load(sys.argv[1], device='cuda')"),
         judge=api_refused("device"), skip=no_cuda),
    # 12. devices torch knows but loopkit cannot run on
    Case("train.device=meta", 12, train_new("train.device=meta")),
    Case("train.device=mps", 12, train_new("train.device=mps"), skip=no_mps),
    Case("eval --device meta", 12, ["eval", "{run}", "--device", "meta"]),
    Case("analyze --device meta", 12, ["analyze", "{run}", "--device", "meta", "--samples", "2"]),
    # 13. run folders that cannot be made, YAML keys given twice, a finite blow-up
    Case("--run-dir under a regular file", 13, ["train", "{cfg}", "--run-dir", "{tmp}/file/run", *TINY],
         write("file", "x")),
    Case("--run-dir /proc/loopkit-run", 13, ["train", "{cfg}", "--run-dir", "/proc/loopkit-run", *TINY]),
    Case("config key given twice", 13, ["train", "{tmp}/twice.yaml", "--run-dir", "{tmp}/new", *TINY],
         write("twice.yaml", "task:\n  name: prefix_sums\ntrain:\n  lr: 0.001\n  steps: 4\n  lr: 0.01\n")),
    Case("sweep key given twice", 13, SWEEP,
         lambda ctx: (ctx.tmp / "sweep.yaml").write_text(f"base: {ctx.bench.made / 'tiny.yaml'}\nseeds: [0]\n"
                                                         f"seeds: [1]\noverrides: {json.dumps(TINY)}\n")),
    Case("fresh train.lr=100 train.steps=40", 13, train_new("train.lr=100", "train.steps=40")),
]


# -- the shared runs, the corpus, the table --------------------------------------------------------
def make_shared(bench: Bench) -> None:
    """The runs every case copies, made with the tree under test."""
    made = bench.made
    made.mkdir(parents=True)
    (made / "tiny.yaml").write_text(TINY_YAML)
    engine = made / "evil-engine.sh"
    engine.write_text('#!/bin/sh\ntouch "$LOOPKIT_TEST_MARK"\n')
    engine.chmod(0o755)

    def need(done: Done, what: str) -> None:
        if done.code != 0:
            sys.exit(f"the tree cannot {what}:\n{done.err[-2000:]}")

    need(bench.loopkit("train", str(made / "tiny.yaml"), "--run-dir", str(made / "run"), *TINY, cwd=made),
         "train the tiny run")
    shutil.copytree(made / "run", made / "evaluated")
    need(bench.loopkit("eval", str(made / "evaluated"), cwd=made), "evaluate the tiny run")
    need(bench.loopkit("analyze", str(made / "evaluated"), "--samples", "2", cwd=made), "analyse the tiny run")
    need(bench.python(MAKE_CHECKPOINT, str(made / "chess"), *(a.format(engine=engine) for a in CHESS), cwd=made),
         "make the chess run folder")
    need(bench.python(MAKE_CHECKPOINT, str(made / "sudoku"), *SUDOKU, cwd=made), "make the sudoku run folder")
    need(bench.loopkit("eval", str(made / "sudoku"), cwd=made), "evaluate the sudoku run")


def run_case(bench: Bench, case: Case, folder: Path) -> dict:
    reason = case.skip() if case.skip else None
    if reason:
        return {"outcome": "skipped", "note": reason}
    folder.mkdir(parents=True)
    ctx = Ctx(bench, folder)
    copy_made("run")(ctx)
    copy_made("evaluated")(ctx)
    if case.setup:
        case.setup(ctx)
    ctx.before = tree_hash(folder)
    done = ctx.loopkit(*case.command, timeout=case.timeout, fsize=case.fsize) if isinstance(case.command, list) \
        else case.command(ctx)
    ctx.after = tree_hash(folder)
    outcome, note = classify(case, ctx, done)
    return {"outcome": outcome, "note": note, "exit": done.code, "seconds": round(done.seconds, 1),
            "last_line": done.last_line[:300], "command": case.argv(ctx)}


def table(results: list[dict]) -> str:
    shown = [o for o in OUTCOMES if o != "other" or any(r["outcome"] == "other" for r in results)]
    head = f"{'finding':<52} {'cases':>5} " + " ".join(f"{o:>9}" for o in shown)
    rows = [head, "-" * len(head)]
    for number, title in FINDINGS.items():
        mine = [r for r in results if r["finding"] == number and r["outcome"] != "skipped"]
        if mine:
            rows.append(f"{number:>2} {title:<49} {len(mine):>5} "
                        + " ".join(f"{sum(r['outcome'] == o for r in mine):>9}" for o in shown))
    ran = [r for r in results if r["outcome"] != "skipped"]
    rows.append("-" * len(head))
    rows.append(f"{'total':<52} {len(ran):>5} " + " ".join(f"{sum(r['outcome'] == o for r in ran):>9}" for o in shown))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", required=True, help="a loopkit source tree (the folder holding loopkit/)")
    parser.add_argument("--json", help="write each case's result here")
    parser.add_argument("--only", help="comma-separated finding numbers (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    if not (tree / "loopkit" / "cli.py").is_file():
        parser.error(f"--tree {tree}: no loopkit/cli.py there")
    only = {int(n) for n in args.only.split(",")} if args.only else set(FINDINGS)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="reliability-corpus-"))
    bench = Bench(tree, scratch)
    try:
        where = bench.python("import loopkit; print(loopkit.__file__)", cwd=scratch).out.strip()
        if not where.startswith(str(tree)):
            sys.exit(f"PYTHONPATH={tree} imports loopkit from {where}, not from the tree")
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        print(f"loopkit tree {tree} (HEAD {commit or '?'}); scratch {scratch}", flush=True)
        make_shared(bench)
        print(f"shared runs made in {time.perf_counter() - started:.0f} s", flush=True)
        results = []
        for i, case in enumerate(c for c in CASES if c.finding in only):
            folder = scratch / "cases" / f"{i:02d}"
            result = {"name": case.name, "finding": case.finding, **run_case(bench, case, folder)}
            results.append(result)
            detail = result["note"] or result.get("last_line", "")
            print(f"{case.finding:>2} {case.name:<46} {result['outcome']:<9} {result.get('seconds', 0):>5.1f} s  "
                  f"{detail[:150]}", flush=True)
        wall = time.perf_counter() - started
        print()
        print(table(results))
        print(f"wall time: {wall:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps({"tree": str(tree), "commit": commit, "wall_s": round(wall, 1),
                                                   "cases": results}, indent=1) + "\n")
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
