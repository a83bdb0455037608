"""Training: AdamW, warmup + cosine, clipping, and the loop recipes of docs/design.md, "Training"
(progressive loss, truncated backprop, randomized T), on one CPU or many GPUs (torchrun + DDP) unchanged.

Reproducibility and exact resumption come from one rule: everything random about step s (the
batch, T, n, k) is drawn from a generator seeded by (seed, s, rank). A resumed run therefore needs
only the step counter, the weights, the optimizer moments and torch's global RNG (which the random
initial state uses) to continue bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from . import atomic, checkpoint, config, devices, fixedpoint, precision, runfolder
from .config import Config, TrainConfig, dump
from .errors import ConfigError, LoopkitError
from .model import LoopedTransformer
from .runs import build_model
from .tasks import Task, build_task


class TrainingDiverged(LoopkitError):
    """The loss or the weights stopped being finite, or the loss exploded: training stops before
    saving anything (the message says which step and what to try; the run's last good checkpoint
    is kept)."""


# a finite loss above this multiple of the untrained model's loss is a blow-up, not a spike: a
# model that predicts worse than its random initialisation by this much has left the basin it
# was trained in (train.lr=100 on prefix sums ends at 289 against an untrained 0.69)
EXPLODED = 4.0


# -- placement ---------------------------------------------------------------------------------
@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """One process, or one of `torchrun`'s processes (found through its environment variables)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = devices.resolve(cfg.device, "train.device", auto=True)
    if world == 1:
        return Runtime(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), world)


def pick_precision(cfg: TrainConfig, device: torch.device, run_dir: Path, resume: bool) -> tuple[str, str]:
    """fp32 or bf16 for this run, and why. A resumed run keeps the precision it was started with
    (its config.yaml records the choice), so `auto` cannot switch formats halfway through a run."""
    config_file = run_dir / "config.yaml"
    if cfg.precision == "auto" and resume and config_file.exists():
        stored = _mapping(_mapping(config.read_yaml(config_file)).get("train")).get("precision", "fp32")
        if stored in precision.PRECISIONS and stored != "auto":
            return stored, f"recorded in {config_file}"
    return precision.resolve(cfg.precision, device)


def ddp_needs_unused_parameters(cfg: Config) -> bool:
    """Whether a step can leave a parameter without gradient. Only without recall: e (and every
    position embedding) then enters through h_0 alone, and any iterations run under no_grad before
    the graph starts (the progressive loss's n, truncated backprop) or an implicit backward cut that
    path. Likewise an untied stack under truncated backprop never trains its first blocks on a step.
    DDP's search for unused parameters costs a graph traversal per step, so it is switched on only
    then."""
    t = cfg.train
    if not cfg.model.tied and t.bptt > 0:  # an untied stack's first blocks then run under no_grad
        return True
    return cfg.model.recall == "none" and (t.alpha > 0 or t.bptt > 0 or t.implicit)


# -- what each step does -------------------------------------------------------------------------
def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class StepPlan:
    iters: int  # T for the full-T loss
    n: int  # progressive loss: iterations without gradient ...
    k: int  # ... then iterations with gradient


def plan_step(cfg: TrainConfig, g: torch.Generator) -> StepPlan:
    def uniform(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=g))

    iters = uniform(cfg.min_iters, cfg.max_iters) if cfg.min_iters else cfg.max_iters
    if cfg.progressive_k:
        k = min(cfg.progressive_k, iters)
        n = uniform(0, iters - k)
    else:
        n = uniform(0, iters - 1)
        k = uniform(1, iters - n)
    return StepPlan(iters, n, k)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio; a pure function of the step, so the
    schedule resumes exactly without any state of its own."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class LoopObjective(nn.Module):
    """The training loss as one module, so that DDP sees a single forward per step.

    (1 - alpha) * loss(h_T) [backprop through the last `bptt` iterations, or all]
    + alpha * loss(h_{n+k}) where the first n iterations run under no_grad (the progressive loss
    of deep-thinking networks: the block must improve any intermediate state it is handed).
    """

    def __init__(self, model: LoopedTransformer, task: Task, cfg: TrainConfig):
        super().__init__()
        self.model, self.task, self.cfg = model, task, cfg

    def forward(self, x: Tensor, y: Tensor, plan: StepPlan) -> Tensor:
        loss = x.new_zeros((), dtype=torch.float32)
        if self.cfg.alpha < 1 and self.cfg.implicit:
            f, e, _ = self.model.fixed_point_map(x)
            h_star = self.model(x, plan.iters, grad_iters=0).state
            h = fixedpoint.attach_implicit(f, h_star, e, tol=self.cfg.implicit_tol)
            loss = loss + (1 - self.cfg.alpha) * self.task.loss(self.model.readout(h), y)
        elif self.cfg.alpha < 1:
            out = self.model(x, plan.iters, grad_iters=self.cfg.bptt or None)
            loss = loss + (1 - self.cfg.alpha) * self.task.loss(out.logits, y)
        if self.cfg.alpha > 0:
            out = self.model(x, plan.n + plan.k, grad_iters=plan.k)
            loss = loss + self.cfg.alpha * self.task.loss(out.logits, y)
        return loss


def batches(task: Task, cfg: TrainConfig, rank: int, batch_size: int, start: int, end: int,
            ahead: bool = False) -> Iterator[tuple[StepPlan, Tensor, Tensor]]:
    """(plan, x, y) for steps start .. end-1. Each is a pure function of (seed, step, rank), so with
    `ahead` the next one is made in a background thread, into page-locked memory, while the
    current step runs on the GPU, and the result is the same as without."""

    def make(step: int) -> tuple[StepPlan, Tensor, Tensor]:
        g = step_generator(cfg.seed, step, rank)
        plan = plan_step(cfg, g)
        x, y = task.train_batch(batch_size, g)
        return (plan, x.pin_memory(), y.pin_memory()) if ahead else (plan, x, y)

    if not ahead:
        yield from (make(step) for step in range(start, end))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(make, start) if start < end else None
        for step in range(start, end):
            current = upcoming.result()
            upcoming = pool.submit(make, step + 1) if step + 1 < end else None
            yield current


# -- the loop ------------------------------------------------------------------------------------
@torch.no_grad()
def quick_eval(model: LoopedTransformer, task: Task, iters: int, device: torch.device, samples: int = 256) -> dict:
    """Exact match on the first two rungs of the ladder at the training T: cheap progress signal.
    Runs eager even when the block is compiled: other lengths and no_grad would each cost a
    recompilation in the middle of training."""
    model.eval()
    out = {}
    for s in task.eval_sets()[:2]:
        x = s.x[:samples].to(device)
        with torch.compiler.set_stance("force_eager"):
            logits = model(x, iters).logits
        out[f"val/{s.name}/exact"] = task.scores(logits, s.y[:samples].to(device), x)["exact"].mean().item()
    model.train()
    return out


class MetricsLog:
    """metrics.jsonl (and TensorBoard when installed). On resume, lines past the checkpoint's step
    are dropped first, so an interrupted run's log equals an uninterrupted one's."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [row for row in self.read(self.path) if row["step"] <= resume_step]
            atomic.write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        self.file = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The log's records; a last line cut short (a power cut mid-write) is dropped, any other
        damaged line is an error naming it."""
        lines = path.read_text(errors="replace").splitlines()
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):
                    break
                raise ConfigError(f"{path}:{number}: not a JSON record; the log is damaged") from None
        return rows

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as err:  # a line cut short is dropped on reading (`read`): the log stays usable
            raise atomic.WriteError(f"cannot write {self.path}: {atomic.describe(err)}; the run resumes from its "
                                    "last checkpoint once there is room") from None
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # every record is flushed as written: only a line `write` already reported failing is left
            pass
        if self.tb is not None:
            self.tb.close()


def loss_fault(loss: float, reference: float | None, what: str = "the loss") -> str | None:
    """Why `loss` shows a diverged run (not finite, or over EXPLODED x the untrained model's
    `reference` loss), or None when it does not."""
    if not math.isfinite(loss):
        return f"{what} is {loss}"
    if reference is not None and loss > EXPLODED * reference:
        return f"{what} is {loss:.4g}, over {EXPLODED:g} x the untrained model's {reference:.4g}"
    return None


@torch.no_grad()
def probe_loss(model: LoopedTransformer, task: Task, x: Tensor, y: Tensor, iters: int, rt: Runtime,
               tc: TrainConfig) -> float:
    """The loss of the weights just updated, on the step's own batch at the training T: what a
    checkpoint would hold, judged before it is written. It draws nothing from the global RNG (a
    random initial state is drawn in a forked one), so training goes on exactly as without it; the
    largest value over the ranks, so that every rank stops together."""
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []), \
            torch.compiler.set_stance("force_eager"), precision.autocast(rt.device, tc.precision):
        loss = task.loss(model(x.to(rt.device), iters).logits, y.to(rt.device)).float()
    return max_over_ranks(float(loss), rt)


def max_over_ranks(value: float, rt: Runtime) -> float:
    """The largest of the ranks' values (the value itself in one process): divergence is judged
    alike on every rank, so that all stop together rather than some waiting in a collective."""
    if rt.world == 1:
        return value
    box = torch.tensor(value, dtype=torch.float64, device=rt.device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return float(box)


def rank0_value(value: float, rt: Runtime) -> float:
    """Rank 0's value on every rank (the value itself in one process)."""
    if rt.world == 1:
        return value
    box = torch.tensor(value, dtype=torch.float64, device=rt.device)
    dist.broadcast(box, src=0)
    return float(box)


def check_diverged(model: nn.Module, faults: list[str | None], step: int, run_dir: Path, cfg: TrainConfig) -> None:
    """Stop a diverged run before it logs or saves anything broken (a non-finite or exploded loss,
    non-finite weights), so the newest checkpoint stays a good one and pruning, which runs only
    after a save, never removes the last good one."""
    broken = [f for f in faults if f]
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        broken.append("some weights are not finite")
    if broken:
        ckpt = checkpoint.latest(run_dir) if (run_dir / "checkpoints").exists() else None
        kept = (f"the newest good checkpoint is {ckpt.name} (step {int(ckpt.name[5:])}); resume from it with "
                f"--resume --allow-changes and a lower train.lr" if ckpt else "no checkpoint had been written yet")
        raise TrainingDiverged(f"training diverged by step {step}: {' and '.join(broken)}; {kept}. "
                               f"Lower train.lr (now {cfg.lr:g}) or train.grad_clip (now {cfg.grad_clip:g}), "
                               "or start again")


def reference_loss(state: dict[str, Any], run_dir: Path) -> float | None:
    """The untrained model's loss a resumed run judges explosions against: recorded in its
    checkpoint, else (runs saved before it was) the first logged loss, else None (no such check)."""
    if isinstance(state.get("reference_loss"), (int, float)):
        return float(state["reference_loss"])
    log = run_dir / "metrics.jsonl"
    rows = MetricsLog.read(log) if log.is_file() else []
    first = rows[0].get("loss") if rows else None
    return float(first) if isinstance(first, (int, float)) and math.isfinite(first) else None


def lock_run_dir(run_dir: Path, resume: bool) -> tuple[IO, bool]:
    """Take the run folder for this process: an OS lock on `<run>/.lock` that dies with the
    process, so a second `train` on the same folder is refused and a killed run leaves no stale
    lock. Returns the open lock file (keep it open) and whether the folder was created here."""
    if resume and not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--resume: {run_dir} holds no run (no config.yaml)")
    runfolder.check_output_folder(run_dir, "--run-dir")
    try:
        run_dir.mkdir(parents=True)  # without exist_ok: of two processes starting at once, one made it
        created = True
    except FileExistsError:
        created = False
    except OSError as err:  # a folder the checks could not foresee refusing it (/proc, an immutable folder)
        raise ConfigError(f"--run-dir {run_dir} cannot be made: {err.strerror or err}") from None
    # refused: the folder is the lock holder's now, even if this process made it, so it stays
    return runfolder.hold_lock(run_dir, ".lock", "loopkit train process",
                               "wait for it to end or choose another --run-dir"), created


RESUME_FREE = {"train.threads", "train.device"}  # where and how fast, not what: may change on resume


def config_changes(stored: dict[str, Any], cfg: Config, free: frozenset[str] = frozenset()) -> list[str]:
    """`section.key: old -> new` for every train.* / task.* / eval.* value a resume would change
    (besides RESUME_FREE and `free`: the keys a run's own config lost as a recipe, runfolder.recipe)."""
    new = cfg.to_dict()
    changes = []
    for section in ("train", "task", "eval"):
        old_s, new_s = config.as_recorded(section, stored.get(section)), new[section]
        for key in sorted(set(old_s) | set(new_s)):
            name = f"{section}.{key}"
            if name not in RESUME_FREE | free and old_s.get(key) != new_s.get(key):
                changes.append(f"{name}: {old_s.get(key)!r} -> {new_s.get(key)!r}")
    return changes


def _mapping(raw: Any) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {}


RUN_FILES = ("config.yaml", "checkpoints", "metrics.jsonl", "config_changes.jsonl", "tensorboard")


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, allow_changes: bool = False,
                    ckpt_name: str | None = None, free: frozenset[str] = frozenset()) -> int | None:
    """Create or reopen a run directory; refuse anything that would mix two runs in one folder.
    Returns the step to resume from (None for a fresh run). A resume that changes the recipe is
    refused unless `allow_changes`; then config.yaml takes the new values and config_changes.jsonl
    records what changed at which step, so the folder's record stays true. A damaged checkpoint is
    refused naming the file; `ckpt_name` (--checkpoint) resumes from an earlier one, the later
    checkpoints set aside as checkpoints/set-aside-step_NNNNNNNN (never deleted)."""
    config_file = run_dir / "config.yaml"
    runfolder.check_no_links(run_dir, *RUN_FILES)  # nothing of a run is read or written through a link
    if not resume:
        if config_file.exists() or (run_dir / "checkpoints").exists():
            raise ConfigError(f"run directory {run_dir} already holds a run; pass --resume or choose another --run-dir")
        if (run_dir / "metrics.jsonl").exists():  # a new run would be appended to an old log
            raise ConfigError(f"run directory {run_dir} holds a metrics.jsonl from an earlier run; move it away or "
                              "choose another --run-dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(config_file, dump(cfg))
        return None
    if not config_file.exists():
        raise ConfigError(f"--resume: {run_dir} holds no run (no config.yaml)")
    recorded = config.read_yaml(config_file)  # a damaged record is named, never passed over
    if not isinstance(recorded, dict):
        raise ConfigError(f"{config_file} is damaged: not a mapping with sections task, model, train, eval")
    for stale in (run_dir / "checkpoints").glob(".tmp-step_*"):  # half-written by a killed run; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    ckpt = checkpoint.find(run_dir, ckpt_name, full=True, use="to the resume (its later steps are trained again)")
    stored = checkpoint.read_state(ckpt)["config"] if ckpt else recorded
    if ckpt:
        checkpoint.check_same_model(stored, cfg, ckpt)
    changes = config_changes(stored, cfg, free)
    if changes and not allow_changes:
        raise ConfigError(f"--resume would change this run's recipe ({'; '.join(changes)}); pass --allow-changes "
                          "to continue with the new values (recorded in config_changes.jsonl), or resume with the old")
    step = checkpoint.read_state(ckpt)["step"] if ckpt else 0
    later = [p for p in checkpoint.steps(run_dir) if ckpt is not None and p.name > ckpt.name]
    for path in later:  # --checkpoint chose an earlier one: keep the later ones, out of the way
        aside = path.with_name(f"set-aside-{path.name}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"set-aside-{path.name}-{n}")
        os.rename(path, aside)
        print(f"loopkit: resuming from {ckpt.name}; {path.name} set aside as {aside}", file=sys.stderr)
    if ckpt is not None and (ckpt_name is not None or not (run_dir / "checkpoints" / "latest").exists()):
        checkpoint.set_latest(run_dir, ckpt)  # the chosen (or recovered) one is the latest from now on
    if changes:
        with open(run_dir / "config_changes.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "changes": changes}) + "\n")
        atomic.write_text(config_file, dump(cfg))
    return step if ckpt else None  # None: killed before its first checkpoint, start over in the same folder


def train(cfg: Config, run_dir: str | Path, resume: bool = False, stop_after: int | None = None,
          progress: bool = True, allow_changes: bool = False, ckpt_name: str | None = None,
          dropped: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Train and return the last logged metrics. `stop_after` ends the process's work after that
    many steps without a final checkpoint (used to test that a killed run resumes exactly).
    `ckpt_name` (with `resume`) continues from that checkpoint instead of the latest. `dropped`:
    the keys `runfolder.recipe` took out of a run's config (not a change of recipe on resume)."""
    run_dir = Path(run_dir)
    if ckpt_name is not None and not resume:
        raise ConfigError("--checkpoint names the checkpoint a --resume continues from; add --resume")
    task = build_task(cfg.task)  # validates the task section before the run directory is touched
    # the run folder stores paths relative to itself, so it evaluates from any folder (loopkit.runfolder)
    cfg = dataclasses.replace(cfg, task=runfolder.for_storage(cfg.task, run_dir))
    rt = setup_runtime(cfg.train)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    chosen, why = pick_precision(tc, rt.device, run_dir, resume)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(tc, precision=chosen))
    tc = cfg.train
    lock, start = None, None
    if rt.main:
        lock, created = lock_run_dir(run_dir, resume)
        try:
            start = prepare_run_dir(run_dir, cfg, resume, allow_changes, ckpt_name, dropped)
        except Exception:
            lock.close()
            if created:  # a failed start leaves nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    if rt.main and progress:  # after the checks: a refused start prints its one error line only
        print(f"loopkit: training in {chosen} on {rt.device} ({why})", file=sys.stderr)
    if rt.world > 1:  # every rank takes rank 0's start step and number format
        box = [start, tc.precision]
        dist.broadcast_object_list(box, src=0)
        start = box[0]
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(tc, precision=box[1]))
        tc = cfg.train
    model = build_model(cfg, task).to(rt.device)
    if tc.compile != "off":
        model.compile_blocks(tc.compile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                  betas=(0.9, tc.adam_beta2))
    step, window_loss, window_steps, reference = 0, 0.0, 0, None
    if start is not None:
        ckpt = checkpoint.latest(run_dir)
        checkpoint.load_weights(ckpt, model)
        resumed = checkpoint.load_training_state(ckpt, optimizer)
        step = start
        window_loss, window_steps = resumed.get("window_loss", 0.0), resumed.get("window_steps", 0)
        if not (isinstance(window_loss, (int, float)) and isinstance(window_steps, int)):
            raise checkpoint.CheckpointError(f"{ckpt / 'state.json'} is damaged: its loss window is not a number")
        reference = reference_loss(resumed, run_dir)
    objective: nn.Module = LoopObjective(model, task, tc)
    if rt.world > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            find_unused_parameters=ddp_needs_unused_parameters(cfg))
    # a resumed run that died before its first checkpoint starts over: its log lines go too
    log = MetricsLog(run_dir, start if start is not None or not resume else 0) if rt.main else None
    local_batch = tc.batch_size // rt.world
    ahead = rt.device.type == "cuda"  # batches made one step ahead, page-locked: the GPU never waits for data
    bar = tqdm(total=tc.steps, initial=step, disable=not (progress and rt.main), desc="train", dynamic_ncols=True)
    last: dict[str, Any] = {}
    t0 = time.perf_counter()
    model.train()
    end = tc.steps if stop_after is None else min(tc.steps, step + stop_after)
    try:
        for plan, x, y in batches(task, tc, rt.rank, local_batch, step, end, ahead=ahead):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(tc, step)
            with precision.autocast(rt.device, tc.precision):
                loss = objective(x.to(rt.device, non_blocking=ahead), y.to(rt.device, non_blocking=ahead), plan)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            step += 1
            window_loss = window_loss + loss.detach().double()  # stays on the device: no sync per step
            window_steps += 1
            if step == 1 and reference is None:  # the untrained model's loss: what an explosion is judged against
                reference = rank0_value(float(loss.detach()), rt)
            bar.update(1)
            at_log = step % tc.log_every == 0 or step == tc.steps
            at_ckpt = step % tc.ckpt_every == 0 or step == tc.steps
            if at_log or at_ckpt:
                faults = [loss_fault(max_over_ranks(float(window_loss) / max(1, window_steps), rt), reference)]
                if at_ckpt:  # the weights about to be saved, judged before they are
                    faults.append(loss_fault(probe_loss(model, task, x, y, tc.max_iters, rt, tc), reference,
                                             "the loss of the updated weights"))
                check_diverged(model, faults, step, run_dir, tc)
            if rt.main and at_log:
                mean_loss = float(window_loss) / window_steps  # waits for the device: the clock reads after it
                elapsed = time.perf_counter() - t0
                last = {"step": step, "loss": mean_loss, "lr": lr_at(tc, step - 1),
                        "grad_norm": float(grad_norm), "sec_per_step": elapsed / window_steps}
                if tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
                    last.update(quick_eval(model, task, tc.max_iters, rt.device))
                log.write(last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if at_log:  # on every rank, so that every rank judges the same window
                window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
            if rt.main and at_ckpt:
                checkpoint.save(run_dir, step, model, optimizer, cfg,
                                {"metrics": last, "window_loss": float(window_loss), "window_steps": window_steps,
                                 "reference_loss": reference},
                                keep=tc.keep_checkpoints)
    finally:  # a stopped run (divergence, Ctrl-C) still ends its progress line, log and lock
        bar.close()
        if log is not None:
            log.close()
        if lock is not None:
            lock.close()
    if rt.world > 1:
        dist.barrier()
    return last
