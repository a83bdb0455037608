"""Issue 11: no silent failure, no lost run, no code from a run folder.

The corpus of bad inputs is one table: each case is a command line (and the damage done first),
the exit code and the one-line message it must give. Every case must print exactly one stderr
line, starting `loopkit: error:`, no traceback, nothing on stdout, and leave every file it was
given byte-identical (the whole test folder is hashed before and after). One tiny trained run,
made once for the module, is copied into each case's folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from loopkit import checkpoint, config
from loopkit.cli import main
from loopkit.evaluate import evaluate_run
from loopkit.runfolder import for_storage, recipe
from loopkit.runs import load_run
from loopkit.tasks import TASKS
from loopkit.train import build_model, reference_loss, train

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "loopkit" / "configs"
TINY = ["task.train_length=8", "task.eval_lengths=[8, 16]", "task.eval_samples=16", "model.width=16",
        "model.heads=2", "model.window=1", "model.causal=true", "train.steps=4", "train.max_iters=3",
        "train.batch_size=8", "train.warmup_steps=1", "train.log_every=2", "train.eval_every=0",
        "train.ckpt_every=2", "train.threads=1", "eval.max_iters=6", "eval.batch_size=16"]
SMALL = ["model.width=8", "model.heads=2", "train.steps=1", "train.max_iters=2", "train.eval_every=0",
         "train.threads=1", "task.workers=1", "task.train_size=4", "task.eval_samples=2", "task.cache_dir={tmp}/cache"]


def train_prefix(*bad: str) -> list[str]:
    """A new tiny run with `bad` overrides (tiny, so that a case that is wrongly accepted ends soon)."""
    return ["train", "{cfg}", "--run-dir", "{tmp}/new", *TINY, *bad]


def train_sudoku(*bad: str) -> list[str]:
    return ["train", str(SHIPPED / "sudoku.yaml"), "--run-dir", "{tmp}/new", *SMALL, "task.eval_levels=[easy]", *bad]


def train_chess(*bad: str) -> list[str]:
    return ["train", str(SHIPPED / "chess.yaml"), "--run-dir", "{tmp}/new", *SMALL, *bad]


RESUME = ["train", "{cfg}", "--run-dir", "{run}", "--resume", *TINY]  # the shared run, resumed as it was trained
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: cuda is a valid device here")


def tiny_checkpoint(run: Path, overrides: list[str]) -> None:
    """An untrained run folder (config.yaml and one checkpoint) of any task: no data needed."""
    cfg = config.load(None, overrides)
    model = build_model(cfg, TASKS[cfg.task["name"]])  # the task's sizes; its data files need not exist yet
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config.dump(cfg))
    checkpoint.save(run, 0, model, torch.optim.AdamW(model.parameters()), cfg, {"metrics": {}})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The tiny prefix-sums run (checkpoints at steps 2 and 4), its eval results, its config file,
    and a chess run whose stored config names an engine that would leave a mark if it ran."""
    root = tmp_path_factory.mktemp("made")
    cfg_file = root / "tiny.yaml"
    cfg_file.write_text("task:\n  name: prefix_sums\ntrain:\n  precision: fp32\n")  # TINY gives the rest
    run = root / "run"
    train(config.load(cfg_file, TINY), run, progress=False)
    evaluated = root / "evaluated"
    shutil.copytree(run, evaluated)
    evaluate_run(evaluated)
    evil = root / "evil-engine"
    evil.write_text('#!/bin/sh\ntouch "$LOOPKIT_TEST_MARK"\n')
    evil.chmod(0o755)
    chess = root / "chess"
    tiny_checkpoint(chess, ["task.name=chess", f"task.engine={evil}", "task.cache_dir=cache", "task.max_depth=4",
                            "task.train_grades=1-2", "task.eval_levels=[1-4]", "task.eval_samples=4",
                            "model.width=8", "model.heads=2", "model.position=axes", "train.max_iters=2"])
    return SimpleNamespace(root=root, cfg=cfg_file, run=run, results=(evaluated / "eval" / "results.json").read_bytes(),
                           chess=chess)


@pytest.fixture(autouse=True)
def no_engine(monkeypatch, tmp_path):
    """No Stockfish in this module (the default one would really make puzzles), and the mark an
    engine run from a stored config would leave falls inside the hashed test folder."""
    monkeypatch.setenv("LOOPKIT_STOCKFISH", str(tmp_path / "no-stockfish"))
    monkeypatch.setenv("LOOPKIT_TEST_MARK", str(tmp_path / "engine-ran"))


def tree_hash(root: Path) -> dict[str, str]:
    """Every file's hash (a link's target), folders as 'dir'. The empty lock files a command opens
    to refuse a second writer (`.lock`, `.lock-eval`) hold nothing and are left out."""
    return {str(p.relative_to(root)): (f"link to {os.readlink(p)}" if p.is_symlink() else
                                      hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*")) if not p.name.startswith(".lock")}


# -- the damage done before a case ----------------------------------------------------------------
STEP2, STEP4 = "checkpoints/step_00000002", "checkpoints/step_00000004"


def write(rel: str, data: bytes | str):
    def setup(ctx):
        path = ctx.tmp / rel.format(run="run")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def cut(rel: str):
    def setup(ctx):
        path = ctx.run / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def remove(*rels: str):
    def setup(ctx):
        for rel in rels:
            (ctx.run / rel).unlink()
    return setup


def nan_weights(*steps: str, file: str = "model.safetensors"):
    """Set the first tensor of `file` (the weights, or the optimizer's moments) of each step to NaN."""
    def setup(ctx):
        for step in steps:
            file_ = ctx.run / step / file
            weights = load_file(file_)
            name = sorted(weights)[0]
            weights[name] = torch.full_like(weights[name], float("nan"))
            save_file(weights, file_)
    return setup


def evaluated(ctx):
    write("run/eval/results.json", ctx.made.results)(ctx)


def locked(ctx):
    handle = open(ctx.run / ".lock", "a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def chess_run(ctx):
    shutil.copytree(ctx.made.chess, ctx.tmp / "chess")


def both(*setups):
    def setup(ctx):
        for s in setups:
            s(ctx)
    return setup


def sweep_file(ctx):
    (ctx.tmp / "sweep.yaml").write_text(f"base: {ctx.made.cfg}\noverrides: {json.dumps(TINY)}\n")


def link(rel: str, target: str):
    """Replace `rel` (inside the tmp folder) by a symbolic link to `target` (also inside it)."""
    def setup(ctx):
        path, to = ctx.tmp / rel.format(run="run"), ctx.tmp / target.format(run="run")
        to.parent.mkdir(parents=True, exist_ok=True)
        if target.endswith("/"):  # a folder of its own
            to.mkdir()
        elif not to.exists():
            shutil.copytree(path, to) if path.is_dir() else to.write_bytes(path.read_bytes() if path.exists() else b"")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        path.symlink_to(to)
    return setup


def other_run(ctx):
    shutil.copytree(ctx.made.run, ctx.tmp / "other")


def fifo(rel: str):
    def setup(ctx):
        os.mkfifo(ctx.tmp / rel)
    return setup


def output_locked(out: str):
    def setup(ctx):
        handle = open(ctx.run / f".lock-{out}", "a")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle
    return setup


# (id, argv with {run} {tmp} {cfg} {chess} placeholders, setup, exit code, regex of the message)
CASES = [
    # earlier in issue 11: ranges, locks, --force, latest
    ("keep_checkpoints=-1", train_prefix("train.keep_checkpoints=-1"), None, 2,
     r"train\.keep_checkpoints=-1 is out of range: allowed >= 1"),
    ("grad_clip=-1", train_prefix("train.grad_clip=-1"), None, 2,
     r"train\.grad_clip=-1\.0 is out of range: allowed a finite number > 0"),
    ("min_lr_ratio=-2", train_prefix("train.min_lr_ratio=-2"), None, 2,
     r"train\.min_lr_ratio=-2\.0 is out of range: allowed in \[0, 1\]"),
    ("heads=0", train_prefix("model.heads=0"), None, 2, r"model\.heads must be >= 1, got 0"),
    ("ckpt_every=0", train_prefix("train.ckpt_every=0"), None, 2,
     r"train\.ckpt_every=0 is out of range: allowed >= 1"),
    ("lr=-1", train_prefix("train.lr=-1"), None, 2,
     r"train\.lr=-1\.0 is out of range: allowed a finite number > 0"),
    ("lr=nan", train_prefix("train.lr=.nan"), None, 2, r"train\.lr=nan is out of range"),
    ("window=-1", train_prefix("model.window=-1"), None, 2,
     r"model\.window=-1 is out of range: allowed >= 0"),
    pytest.param("device=cuda", train_prefix("train.device=cuda"), None, 2,
                 r"train\.device=cuda: no CUDA GPU is available here", marks=NO_GPU, id="device=cuda"),
    ("unknown key", train_prefix("model.widht=8"), None, 2, r"unknown config key 'model\.widht'"),
    ("two trains on one folder", RESUME, locked, 2,
     r"is in use by another loopkit train process"),
    ("train over a run", ["train", "{cfg}", "--run-dir", "{run}", *TINY], None, 2,
     r"already holds a run; pass --resume or choose another --run-dir"),
    ("resume with another recipe", [*RESUME, "train.lr=0.01"], None, 2,
     r"--resume would change this run's recipe \(train\.lr: 0\.001 -> 0\.01\); pass --allow-changes"),
    ("eval over earlier results", ["eval", "{run}"], evaluated, 2,
     r"eval/results\.json already exists; pass --force to replace it, or --out NAME"),
    ("latest points outside", ["eval", "{run}"], write("run/checkpoints/latest", "../../../elsewhere\n"), 2,
     r"checkpoints/latest names '\.\./\.\./\.\./elsewhere', not a checkpoint of this run"),
    ("latest points outside, resume", RESUME,
     write("run/checkpoints/latest", "/etc\n"), 2, r"names '/etc', not a checkpoint of this run"),
    # item 1: non-finite weights
    ("eval of NaN weights", ["eval", "{run}"], nan_weights(STEP2, STEP4), 2,
     r"step_00000004/model\.safetensors holds non-finite weights \(NaN or inf in 1 of \d+ tensors, first [\w.]+\): "
     r"the model is broken and gives no meaningful numbers$"),
    ("analyze of NaN weights", ["analyze", "{run}", "--samples", "4"], nan_weights(STEP2, STEP4), 2,
     r"step_00000004/model\.safetensors holds non-finite weights"),
    ("eval of NaN latest", ["eval", "{run}"], nan_weights(STEP4), 2,
     r"holds non-finite weights .*; the earlier checkpoint step_00000002 \(step 2\) is intact: "
     r"add --checkpoint step_00000002 to use it$"),
    # item 2: task options and analyze/eval flags, refused before a run folder or a result exists
    ("eval_samples=0", train_prefix("task.eval_samples=0"), None, 2,
     r"task\.eval_samples=0 is out of range: allowed >= 1$"),
    ("eval_lengths=[]", train_prefix("task.eval_lengths=[]"), None, 2,
     r"task\.eval_lengths=\[\] is out of range: allowed a non-empty list of distinct lengths >= 1"),
    ("eval_lengths=[-3]", train_prefix("task.eval_lengths=[-3]"), None, 2,
     r"task\.eval_lengths=\[-3\] is out of range"),
    ("eval_lengths twice", train_prefix("task.eval_lengths=[8, 8]"), None, 2,
     r"task\.eval_lengths=\[8, 8\] is out of range: allowed a non-empty list of distinct"),
    ("train_length=0", train_prefix("task.train_length=0"), None, 2,
     r"task\.train_length=0 is out of range: allowed >= 1"),
    ("train_length_min > train_length", train_prefix("task.train_length_min=40"), None, 2,
     r"task\.train_length_min=40 is out of range: allowed at most task\.train_length=8"),
    ("eval_seed=-1", train_prefix("task.eval_seed=-1"), None, 2,
     r"task\.eval_seed=-1 is out of range: allowed >= 0"),
    ("eval override eval_samples=0", ["eval", "{run}", "task.eval_samples=0"], None, 2,
     r"task\.eval_samples=0 is out of range"),
    ("eval override eval_lengths=[]", ["eval", "{run}", "task.eval_lengths=[]"], None, 2,
     r"task\.eval_lengths=\[\] is out of range"),
    ("sudoku train_size=0", train_sudoku("task.train_size=0"), None, 2,
     r"task\.train_size=0 is out of range: allowed >= 1"),
    ("sudoku no eval set", train_sudoku("task.eval_levels=[]"), None, 2,
     r"task\.eval_levels=\[\] and task\.eval_files=\[\]: the task would have no eval set"),
    ("sudoku seed=-1", train_sudoku("task.seed=-1"), None, 2,
     r"task\.seed=-1 is out of range: allowed >= 0"),
    ("sudoku workers=-1", train_sudoku("task.workers=-1"), None, 2,
     r"task\.workers=-1 is out of range: allowed >= 0 \(0: every core\)"),
    ("sudoku rating_buckets nan", train_sudoku("task.rating_buckets=[.nan]"), None, 2,
     r"task\.rating_buckets=\[nan\] is out of range"),
    ("sudoku unknown level", train_sudoku("task.eval_levels=[nightmare]"),
     None, 2, r"task\.eval_levels: unknown level\(s\) \['nightmare'\]"),
    ("chess max_depth=0", train_chess("task.max_depth=0"), None, 2,
     r"task\.max_depth=0 is out of range: allowed >= 1"),
    ("chess opening_plies reversed", train_chess("task.opening_plies=[5, 2]"), None, 2,
     r"task\.opening_plies=\[5, 2\] is out of range: allowed \[min, max\] with 0 <= min <= max"),
    ("chess opening_plies past max_ply", train_chess("task.opening_plies=[2, 200]"), None, 2,
     r"allowed a max below task\.max_ply=100"),
    ("chess mistake_rate=2", train_chess("task.mistake_rate=2"), None, 2,
     r"task\.mistake_rate=2\.0 is out of range: allowed in \[0, 1\]"),
    ("chess play_nodes=0", train_chess("task.play_nodes=0"), None, 2,
     r"task\.play_nodes=0 is out of range"),
    ("chess grades past max_depth", train_chess("task.train_grades=9-12"),
     None, 2, r"task\.train_grades: grades '9-12' must lie within 1-10"),
    ("analyze --samples -5", ["analyze", "{run}", "--samples", "-5"], None, 2,
     r"--samples=-5 is out of range: allowed >= 1$"),
    ("analyze --inits 0", ["analyze", "{run}", "--inits", "0"], None, 2, r"--inits=0 is out of range: allowed >= 1$"),
    ("analyze --max-iters 0", ["analyze", "{run}", "--max-iters", "0"], None, 2, r"--max-iters=0 is out of range"),
    ("analyze --tol -1", ["analyze", "{run}", "--tol", "-1"], None, 2,
     r"--tol=-1\.0 is out of range: allowed a finite number > 0"),
    ("analyze --tol nan", ["analyze", "{run}", "--tol", "nan"], None, 2, r"--tol=nan is out of range"),
    ("analyze --min-sv-budget -1", ["analyze", "{run}", "--min-sv-budget", "-1"], None, 2,
     r"--min-sv-budget=-1 is out of range"),
    pytest.param("analyze --device cuda", ["analyze", "{run}", "--device", "cuda"], None, 2,
                 r"--device=cuda: no CUDA GPU is available here", marks=NO_GPU, id="analyze --device cuda"),
    ("eval --max-iters 0 (curve)", ["eval", "{run}", "--max-iters", "0"], None, 2,
     r"--max-iters=0 is out of range: allowed >= 1"),
    ("eval --batch-size 0", ["eval", "{run}", "--batch-size", "0"], None, 2, r"--batch-size=0 is out of range"),
    ("eval --max-iters 0", ["eval", "{run}", "--until-converged", "--max-iters", "0"], None, 2,
     r"--max-iters=0 is out of range"),
    ("eval --tol -1", ["eval", "{run}", "--until-converged", "--tol", "-1"], None, 2,
     r"--tol=-1\.0 is out of range: allowed a finite number >= 0 \(0: never\)"),
    ("eval --device bogus", ["eval", "{run}", "--device", "bogus"], None, 2, r"--device='bogus' is not a device"),
    ("override not YAML", train_prefix("model.width=[1"), None, 2,
     r"override 'model\.width=\[1': the value is not a YAML scalar or list"),
    # item 3: a run folder is data: a stored engine is never run (the mark would appear in the tree)
    ("eval never runs a stored engine", ["eval", "{chess}"], chess_run, 2,
     r"LOOPKIT_STOCKFISH='.*no-stockfish' is not an executable file"),
    ("analyze never runs a stored engine", ["analyze", "{chess}", "--samples", "2"], chess_run, 2,
     r"LOOPKIT_STOCKFISH='.*no-stockfish' is not an executable file"),
    ("data never runs a stored engine", ["data", "{chess}/config.yaml"], chess_run, 2,
     r"LOOPKIT_STOCKFISH='.*no-stockfish' is not an executable file"),
    # item 4: damaged files, named with the fault, and an intact earlier checkpoint offered
    ("truncated weights", ["eval", "{run}"], cut(f"{STEP4}/model.safetensors"), 2,
     r"step_00000004/model\.safetensors is damaged: not a complete safetensors file \(.*\); the earlier checkpoint "
     r"step_00000002 \(step 2\) is intact: add --checkpoint step_00000002 to use it$"),
    ("garbage weights everywhere", ["analyze", "{run}"],
     both(*(write(f"run/{step}/model.safetensors", "garbage" * 9) for step in (STEP2, STEP4))), 2,
     r"step_00000004/model\.safetensors is damaged: not a complete safetensors file \([^;]*\)$"),
    ("empty weights file", ["eval", "{run}"], write(f"run/{STEP4}/model.safetensors", b""), 2,
     r"model\.safetensors is damaged: not a complete safetensors file"),
    ("truncated state.json", ["eval", "{run}"], write(f"run/{STEP4}/state.json", '{"step": 4, "conf'), 2,
     r"step_00000004/state\.json is damaged: not JSON \(Unterminated string starting at: line 1 column \d+\); "
     r"the earlier checkpoint step_00000002"),
    ("state.json not UTF-8", ["eval", "{run}"], write(f"run/{STEP4}/state.json", b'{"step": 4\xff}'), 2,
     r"state\.json is damaged: not UTF-8 text \(byte 0xff at offset 10\)"),
    ("state.json of another step", ["eval", "{run}"], write(f"run/{STEP4}/state.json", '{"step": 9, "config": {}}'),
     2,
     r"state\.json is damaged: it says step 9 in the folder of step 4"),
    ("state.json not a state", ["eval", "{run}"], write(f"run/{STEP4}/state.json", "[1, 2]"), 2,
     r"state\.json is damaged: it lacks the step number or the run's config"),
    ("truncated optimizer, resume", RESUME,
     cut(f"{STEP4}/optimizer.safetensors"), 2,
     r"step_00000004/optimizer\.safetensors is damaged: .*; "
     r"the earlier checkpoint step_00000002 \(step 2\) is intact: "
     r"add --checkpoint step_00000002 to the resume \(its later steps are trained again\)$"),
    ("weights-only checkpoint, resume", RESUME, remove(*(f"{step}/{name}" for step in (STEP2, STEP4)
                                                         for name in ("optimizer.safetensors", "rng.safetensors"))), 2,
     r"step_00000004 holds the weights only \(published runs keep no optimizer or random state\): it evaluates and "
     r"analyses, but a resume needs the run's own full checkpoint$"),
    ("missing rng, resume", RESUME,
     lambda ctx: (ctx.run / STEP4 / "rng.safetensors").unlink(), 2,
     r"rng\.safetensors is damaged: the file is missing"),
    ("latest missing, newest damaged, resume", RESUME,
     remove("checkpoints/latest", f"{STEP4}/rng.safetensors"), 2,
     r"checkpoints/latest is missing, and the newest checkpoint step_00000004 is damaged; "
     r"the newest intact checkpoint is step_00000002 \(step 2\): add --checkpoint step_00000002 to the resume"),
    ("run config.yaml not UTF-8, resume", RESUME,
     write("run/config.yaml", b"task:\n  name: prefix_sums\xe9\n"), 2,
     r"run/config\.yaml is not UTF-8 text \(byte 0xe9 at offset 25\); save it as UTF-8$"),
    ("run config.yaml not UTF-8, compare", ["compare", "{run}"],
     both(evaluated, write("run/config.yaml", b"\xff\xfe")), 2, r"run/config\.yaml is not UTF-8 text \(byte 0xff"),
    ("results.json damaged, compare", ["compare", "{run}"], write("run/eval/results.json", "{"), 2,
     r"eval/results\.json is damaged: not JSON"),
    ("user config not UTF-8", ["train", "{tmp}/bad.yaml", "--run-dir", "{tmp}/new"],
     write("bad.yaml", b"task: caf\xe9\n"), 2,
     r"bad\.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)"),
    ("user config not YAML", ["train", "{tmp}/bad.yaml", "--run-dir", "{tmp}/new"],
     write("bad.yaml", "task: [1, 2\n"), 2,
     r"bad\.yaml is not valid YAML: expected ',' or '\]', but got '<stream end>' at line 2 column 1$"),
    ("user config empty", ["train", "{tmp}/empty.yaml", "--run-dir", "{tmp}/new"], write("empty.yaml", "\n"), 2,
     r"config file .*empty\.yaml is empty; it needs the sections task, model, train, eval$"),
    ("sweep file not UTF-8", ["sweep", "{tmp}/bad.yaml", "--out", "{tmp}/runs"],
     write("bad.yaml", b"base: caf\xe9\n"), 2,
     r"bad\.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)"),
    ("analyze over existing results", ["analyze", "{run}"], write("run/analysis/results.json", "{}"), 2,
     r"analysis/results\.json already exists; pass --force to replace it$"),
    ("--checkpoint not a step", ["eval", "{run}", "--checkpoint", "best"], None, 2,
     r"--checkpoint 'best': name a checkpoint as step_NNNNNNNN or by its step number"),
    ("--checkpoint of no step", ["eval", "{run}", "--checkpoint", "99"], None, 2,
     r"--checkpoint 99: .*step_00000099 does not exist "
     r"\(checkpoints of this run: step_00000002, step_00000004\)"),
    ("--checkpoint without --resume", ["train", "{cfg}", "--run-dir", "{run}", "--checkpoint", "2", *TINY], None, 2,
     r"--checkpoint names the checkpoint a --resume continues from; add --resume"),
    # item 4: output folders checked before the compute
    ("eval into a file", ["eval", "{run}", "--out", "config.yaml"], None, 2,
     r"output folder .*run/config\.yaml is a file, not a folder$"),
    ("eval into a missing folder", ["eval", "{run}", "--out", "no/such"], None, 2,
     r"output folder .*run/no/such: the folder .*run/no does not exist$"),
    ("eval of no run", ["eval", "{tmp}/nothing"], None, 2, r"nothing is not a run folder \(no such folder\)"),
    ("analyze into a file", ["analyze", "{run}"], write("run/analysis", "not a folder"), 2,
     r"output folder .*run/analysis is a file, not a folder"),
    ("sweep under a file", ["sweep", "{tmp}/sweep.yaml", "--out", "{tmp}/file/runs"],
     both(sweep_file, write("file", "x")), 2,
     r"sweep folder .*file/runs: .*file is a file, not a folder"),
    ("claims under a file", ["claims", "{run}", "--out", "{tmp}/file"], both(evaluated, write("file", "x")), 2,
     r"output folder .*file is a file, not a folder"),
    ("report under a file", ["report", "{run}", "--out", "{tmp}/file/report.html"],
     both(evaluated, write("file", "x")), 2,
     r"output folder .*/file is a file, not a folder$"),
    ("report into a folder", ["report", "{run}", "--out", "{run}"], evaluated, 2,
     r"--out .*run is a folder; name the HTML file"),
    ("report of no folder", ["report", "{tmp}/nothing"], None, 2, r"nothing is not a folder"),
    # issue 24, item 2: outputs are written only as regular files
    ("report over a pipe", ["report", "{run}", "--out", "{tmp}/pipe.html"], both(evaluated, fifo("pipe.html")), 2,
     r"pipe\.html is a pipe or socket, not a regular file; loopkit writes its outputs only as regular files"),
    ("report over a device", ["report", "{run}", "--out", "/dev/null"], evaluated, 2,
     r"/dev/null is a device, not a regular file"),
    ("report over a link", ["report", "{run}", "--out", "{tmp}/link.html"],
     both(evaluated, write("target.html", "mine"),
          lambda ctx: (ctx.tmp / "link.html").symlink_to(ctx.tmp / "target.html")),
     2, r"link\.html is a symbolic link, not a regular file"),
    ("report over a file of the user's", ["report", "{run}", "--out", "{tmp}/notes.html"],
     both(evaluated, write("notes.html", "<p>my notes</p>")), 2,
     r"--out .*notes\.html exists and is not a loopkit report; pass --force to replace it$"),
    ("claims over a link", ["claims", "{run}", "--out", "{tmp}/out"],
     both(evaluated, write("mine.json", "{}"),
          lambda ctx: ((ctx.tmp / "out").mkdir(), (ctx.tmp / "out" / "claims.json").symlink_to(ctx.tmp / "mine.json"))),
     2, r"out/claims\.json is a symbolic link, not a regular file"),
    # item 4: one writer per output folder
    ("two evals at once", ["eval", "{run}"], output_locked("eval"), 2,
     r"run is in use by another loopkit eval writing eval/ \(it holds .*\.lock-eval\); wait for it to end"),
    ("two analyses at once", ["analyze", "{run}", "--samples", "2"], output_locked("analysis"), 2,
     r"in use by another loopkit analyze writing analysis/"),
    # item 5: nothing in a run folder is followed through a link
    ("step folder linked to another run", ["eval", "{run}"],
     both(other_run, link(f"{{run}}/{STEP4}", f"other/{STEP4}")), 2,
     r"step_00000004 is a symbolic link \(to .*other.*\); a run folder is data and loopkit follows no link in it"),
    ("eval folder linked outside", ["eval", "{run}"], link("{run}/eval", "outside/"), 2,
     r"run/eval is a symbolic link \(to .*outside\)"),
    ("analysis folder linked outside", ["analyze", "{run}", "--samples", "2"], link("{run}/analysis", "outside/"), 2,
     r"run/analysis is a symbolic link"),
    ("metrics.jsonl linked outside, resume", RESUME, link("{run}/metrics.jsonl", "outside.jsonl"), 2,
     r"run/metrics\.jsonl is a symbolic link"),
    ("checkpoints linked outside, resume", RESUME, link("{run}/checkpoints", "outside"), 2,
     r"run/checkpoints is a symbolic link"),
    ("latest is a link, eval", ["eval", "{run}"], link("{run}/checkpoints/latest", "elsewhere-latest"), 2,
     r"checkpoints/latest is a symbolic link"),
    ("fresh run over an old metrics.jsonl", ["train", "{cfg}", "--run-dir", "{tmp}/old", *TINY],
     write("old/metrics.jsonl", '{"step": 2, "loss": 0.5}\n'), 2,
     r"old holds a metrics\.jsonl from an earlier run; move it away or choose another --run-dir"),
    # item 8: non-finite optimizer moments are a damaged checkpoint, not a learning rate to lower
    ("NaN optimizer moments, resume", RESUME, nan_weights(STEP4, file="optimizer.safetensors"), 2,
     r"step_00000004/optimizer\.safetensors holds non-finite optimizer moments \(NaN or inf in 1 of \d+ tensors, "
     r"first [\w.]+\); the earlier checkpoint step_00000002 \(step 2\) is intact: add --checkpoint step_00000002"),
    # item 12: devices torch knows but loopkit cannot run on
    ("train.device=meta", train_prefix("train.device=meta"), None, 2,
     r"train\.device=meta: loopkit cannot run on meta here; allowed here: auto, cpu"),
    pytest.param("train.device=mps", train_prefix("train.device=mps"), None, 2,
                 r"train\.device=mps: loopkit cannot run on mps here; allowed here: auto, cpu",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="an Apple GPU is here"),
                 id="train.device=mps"),
    ("eval --device meta", ["eval", "{run}", "--device", "meta"], None, 2,
     r"--device=meta: loopkit cannot run on meta here; allowed here: cpu"),
    ("analyze --device meta", ["analyze", "{run}", "--device", "meta"], None, 2, r"--device=meta: loopkit cannot run"),
    ("train.device=bogus", train_prefix("train.device=gpu0"), None, 2,
     r"train\.device='gpu0' is not a device; allowed here: auto, cpu"),
    # item 13: run folders that cannot be made, and a key given twice
    ("--run-dir under a file", ["train", "{cfg}", "--run-dir", "{tmp}/file/run", *TINY], write("file", "x"), 2,
     r"--run-dir .*file/run: .*file is a file, not a folder"),
    ("--run-dir in /proc", ["train", "{cfg}", "--run-dir", "/proc/loopkit-run", *TINY], None, 2,
     r"--run-dir /proc/loopkit-run"),
    ("config key given twice", ["train", "{tmp}/twice.yaml", "--run-dir", "{tmp}/new", *TINY],
     write("twice.yaml", "task:\n  name: prefix_sums\ntrain:\n  lr: 0.001\n  steps: 4\n  lr: 0.01\n"), 2,
     r"twice\.yaml is not valid YAML: key 'lr' is given twice \(lines 4 and 6\); keep one at line 6 column 3$"),
    ("sweep key given twice", ["sweep", "{tmp}/twice.yaml", "--out", "{tmp}/runs"],
     write("twice.yaml", "base: prefix_sums.yaml\nseeds: [0]\nseeds: [1]\n"), 2,
     r"twice\.yaml is not valid YAML: key 'seeds' is given twice \(lines 2 and 3\)"),
]


@pytest.mark.parametrize("name, argv, setup, code, message",
                         [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CASES])
def test_bad_input_gives_one_line_and_touches_nothing(made, tmp_path, capsys, name, argv, setup, code, message):
    run = tmp_path / "run"
    shutil.copytree(made.run, run)
    ctx = SimpleNamespace(tmp=tmp_path, run=run, made=made)
    keep = setup(ctx) if setup else None
    before = tree_hash(tmp_path)
    args = [a.format(run=run, tmp=tmp_path, cfg=made.cfg, chess=tmp_path / "chess") for a in argv]
    capsys.readouterr()
    try:
        assert main(args) == code
    finally:
        if keep is not None:
            keep.close()
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("loopkit: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert out == ""
    after = tree_hash(tmp_path)
    assert after == before, f"changed, made or removed: {sorted(set(after.items()) ^ set(before.items()))}"


# -- what the corpus cannot show: the good paths of the same rules ---------------------------------
def test_an_earlier_checkpoint_is_used_only_when_named_and_resumes_bit_exactly(made, tmp_path, capsys):
    """A damaged latest checkpoint: the resume names it and offers step 2; with --checkpoint the run
    goes on from step 2 to the very same step-4 weights and log, the damaged folder set aside."""
    run = tmp_path / "run"
    shutil.copytree(made.run, run)
    cut(f"{STEP4}/optimizer.safetensors")(SimpleNamespace(run=run))
    damaged = (run / STEP4 / "optimizer.safetensors").read_bytes()
    base = ["train", str(made.cfg), "--run-dir", str(run), "--resume", *TINY]
    assert main(base) == 2
    assert main(base + ["--checkpoint", "step_00000002"]) == 0
    assert "step_00000004 set aside as" in capsys.readouterr().err
    assert (run / "checkpoints" / "set-aside-step_00000004" / "optimizer.safetensors").read_bytes() == damaged
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (run / STEP4 / name).read_bytes() == (made.run / STEP4 / name).read_bytes()
    assert (run / "metrics.jsonl").read_text().count("\n") == (made.run / "metrics.jsonl").read_text().count("\n")
    assert checkpoint.latest(run).name == "step_00000004"
    (run / "checkpoints" / "latest").unlink()  # lost (a kill while saving): the newest intact one, named latest
    assert main(base) == 0
    assert "latest is missing; using the newest checkpoint, step_00000004" in capsys.readouterr().err
    assert checkpoint.latest(run).name == "step_00000004"


def test_eval_of_a_named_earlier_checkpoint(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made.run, run)
    nan_weights(STEP4)(SimpleNamespace(run=run))
    assert main(["eval", str(run), "--checkpoint", "2"]) == 0
    assert json.loads((run / "eval" / "results.json").read_text())["step"] == 2


def test_stored_paths_are_relative_to_the_run_folder():
    task = {"name": "sudoku", "cache_dir": "data/cache", "eval_files": ["a.txt", "/abs/b.txt", "~/c.txt"]}
    stored = for_storage(task, "runs/sweep/x")
    assert stored["cache_dir"] == os.path.join("..", "..", "..", "data", "cache")
    assert stored["eval_files"] == [os.path.join("..", "..", "..", "a.txt"), "/abs/b.txt", "~/c.txt"]


def test_a_stored_run_loads_from_any_folder_and_writes_no_cache_outside_it(tmp_path, monkeypatch):
    """Stored relative eval files are found beside the run whatever the current folder; a stored
    cache folder outside the run is read but never written (data made for the eval is not cached
    there); the same folder named on the command line is filled as usual."""
    from loopkit.sudoku import generator

    puzzles, solutions, _ = generator.generate("easy", 2, seed=5, progress=False)
    run = tmp_path / "runs" / "sudoku"
    outside = tmp_path / "outside-cache"
    tiny_checkpoint(run, ["task.name=sudoku", "task.eval_levels=[easy]", "task.eval_samples=2", "task.workers=1",
                          "task.eval_files=[puzzles.txt]", f"task.cache_dir={os.path.relpath(outside, run)}",
                          "model.width=8", "model.heads=2", "model.position=axes", "train.max_iters=2"])
    (run / "puzzles.txt").write_text("".join(f"{''.join(map(str, p))} {''.join(map(str, s))}\n"
                                             for p, s in zip(puzzles, solutions)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _, task, _, _ = load_run(run)
    assert task.cache_read_only
    assert [s.name for s in task.eval_sets()] == ["easy", "puzzles"]
    assert not outside.exists() and not list(elsewhere.iterdir())
    _, task, _, _ = load_run(run, overrides=[f"task.cache_dir={outside}"])
    assert not task.cache_read_only and len(task.eval_sets()[0].x) == 2
    assert list(outside.iterdir())


def test_the_committed_chess_runs_evaluate_from_any_folder(tmp_path, monkeypatch):
    """Their stored cache folder (../puzzle_cache) is found from the run, read without an engine."""
    monkeypatch.chdir(tmp_path)
    for run in ("standard_outer", "first_2000/none_outer"):
        cfg, task, _, _ = load_run(REPO / "results" / "chess" / run)
        assert task.cache_read_only and "engine" not in cfg.task
        assert [len(s.x) for s in task.eval_sets()[:1]] in ([200], [100])
    assert not list(tmp_path.iterdir())


# -- issue 24 ------------------------------------------------------------------------------------
def outside_cache_chess(ctx) -> Path:
    """The chess run with its stored cache folder moved outside it (an absolute path)."""
    chess_run(ctx)
    stored = ctx.tmp / "chess" / "config.yaml"
    stored.write_text(stored.read_text().replace("cache_dir: cache", f"cache_dir: {ctx.tmp / 'outside-cache'}"))
    return ctx.tmp / "chess"


@pytest.mark.parametrize("how", ["new run", "resume with changes", "sweep base"])
def test_a_run_config_used_as_a_recipe_runs_no_stored_program(made, tmp_path, capsys, monkeypatch, how):
    """Item 1: `train RUN/config.yaml` (a new run, a resume, a sweep's base) drops the stored engine and
    the stored cache folder outside the run, says so, and so runs nothing the file names and writes
    nothing there; the engine used is the environment's (here none, so the training stops there)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default cache folder, inside the test folder
    chess = outside_cache_chess(SimpleNamespace(tmp=tmp_path, made=made))
    small = ["train.steps=1", "task.train_size=4", "task.workers=1", "train.threads=1"]
    if how == "new run":
        code = main(["train", str(chess / "config.yaml"), "--run-dir", str(tmp_path / "new"), *small])
        err = capsys.readouterr().err
    elif how == "resume with changes":
        code = main(["train", str(chess / "config.yaml"), "--run-dir", str(chess), "--resume", "--allow-changes",
                     *small])
        err = capsys.readouterr().err
    else:
        (tmp_path / "sweep.yaml").write_text(f"base: {chess / 'config.yaml'}\noverrides: {json.dumps(small)}\n"
                                             "stages: [train]\n")
        code = main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "runs")])
        err = (tmp_path / "runs" / "seed-0" / "sweep.log").read_text()
    assert code in (1, 2)  # no engine here: the training cannot make its puzzles
    assert re.search(r"notice: .*chess/config\.yaml names task\.engine='.*evil-engine'; a run folder is data, so it "
                     r"is not used \(give task\.engine=\.\.\. on the command line to use it\)", err), err
    assert re.search(r"notice: .*names task\.cache_dir='.*outside-cache'; a run folder is data", err), err
    assert re.search(r"LOOPKIT_STOCKFISH='.*no-stockfish' is not an executable file", err), err
    assert "Traceback" not in err
    assert not (tmp_path / "engine-ran").exists() and not (tmp_path / "outside-cache").exists()


def test_a_run_config_keeps_its_engine_when_the_command_line_names_it(made, tmp_path, capsys):
    chess = outside_cache_chess(SimpleNamespace(tmp=tmp_path, made=made))
    named = [f"task.engine={tmp_path / 'mine'}", f"task.cache_dir={tmp_path / 'c'}"]
    cfg, dropped = recipe(chess / "config.yaml", named, tmp_path / "new")
    assert cfg.task["engine"] == str(tmp_path / "mine") and cfg.task["cache_dir"] == str(tmp_path / "c")
    assert not dropped and "notice" not in capsys.readouterr().err
    _, dropped = recipe(chess / "config.yaml", [], tmp_path / "new")
    assert dropped == {"task.engine", "task.cache_dir"}
    inside, dropped = recipe(made.run / "config.yaml", [], made.run)  # the run's own folder: nothing outside
    assert inside.task["name"] == "prefix_sums" and not dropped


def test_a_resume_that_changes_the_engine_is_a_change_of_recipe(made, tmp_path, capsys):
    """Dropping a stored engine is not a change (the recipe is the same), naming another one is."""
    chess = outside_cache_chess(SimpleNamespace(tmp=tmp_path, made=made))
    assert main(["train", str(chess / "config.yaml"), "--run-dir", str(chess), "--resume",
                 f"task.engine={tmp_path / 'other-engine'}"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert re.search(r"--resume would change this run's recipe \(.*task\.engine: '[^']*evil-engine' -> "
                     r"'[^']*other-engine'\); pass --allow-changes", err), err
    assert "cache_dir" not in err  # dropped (outside the run), so not counted as a change


def test_divergence_is_caught_before_a_checkpoint_and_names_the_newest_good_one(made, tmp_path, capsys):
    """Item 3: a run that blows up (here: resumed at lr 1e30, one checkpoint kept, saved every step)
    stops before saving the blown-up weights, so the good checkpoint it resumed from is neither
    replaced nor pruned, and the message names it; eval of the run still reads those weights."""
    run = tmp_path / "run"
    shutil.copytree(made.run, run)
    good = (run / STEP4 / "model.safetensors").read_bytes()
    argv = ["train", str(made.cfg), "--run-dir", str(run), "--resume", "--allow-changes", *TINY, "train.steps=30",
            "train.lr=1e30", "train.ckpt_every=1", "train.keep_checkpoints=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"loopkit: error: training diverged by step 5: the loss of the updated weights is .*; the "
                        r"newest good checkpoint is step_00000004 \(step 4\); resume from it with --resume "
                        r"--allow-changes and a lower train\.lr\. Lower train\.lr \(now 1e\+30\).*", err), err
    assert checkpoint.latest(run).name == "step_00000004"
    assert (run / STEP4 / "model.safetensors").read_bytes() == good
    assert main(["eval", str(run)]) == 0


def test_a_finite_blow_up_is_divergence(made, tmp_path, capsys):
    """Item 13: train.lr=100 used to end at a loss of ~289 with exit 0; the loss explodes against the
    untrained model's, so the run stops, before writing a checkpoint of the exploded weights."""
    run = tmp_path / "run"
    assert main(["train", str(made.cfg), "--run-dir", str(run), *TINY, "train.lr=100", "train.steps=40"]) == 2
    assert re.search(r"training diverged by step \d+: .* over 4 x the untrained model's 0\.\d+",
                     capsys.readouterr().err)
    assert not (run / "checkpoints").exists()


def test_resumed_runs_judge_explosions_against_the_recorded_untrained_loss(made):
    state = checkpoint.read_state(made.run / STEP4)
    assert 0.5 < state["reference_loss"] < 1.0  # the untrained prefix-sums loss, ~ln 2
    older = {k: v for k, v in state.items() if k != "reference_loss"}  # a run saved before it was recorded
    first = json.loads((made.run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert reference_loss(older, made.run) == first


WRITERS = {  # item 10: every writer, on a disk that refuses writes (the file size limit, as a full disk does)
    "train": ["train", "{cfg}", "--run-dir", "{tmp}/fresh", *TINY],
    "resume": ["train", "{cfg}", "--run-dir", "{run}", "--resume", *TINY, "train.steps=8", "--allow-changes"],
    "eval": ["eval", "{run}"],
    "analyze": ["analyze", "{run}", "--samples", "2"],
    "claims": ["claims", "{evaluated}", "--out", "{tmp}/claims"],
    "report": ["report", "{evaluated}", "--out", "{tmp}/report.html"],
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_gives_one_line_and_loses_nothing(made, tmp_path, writer):
    """Each writer in its own process with writes cut off past 1 kB: one line naming the file, no
    traceback, nothing half-written, and the run resumes (or evaluates) once there is room."""
    import resource
    import subprocess
    import sys

    run, evaluated = tmp_path / "run", tmp_path / "evaluated"
    shutil.copytree(made.run, run)
    shutil.copytree(made.run, evaluated)
    (evaluated / "eval").mkdir()
    (evaluated / "eval" / "results.json").write_bytes(made.results)
    before = tree_hash(tmp_path)
    argv = [a.format(run=run, tmp=tmp_path, cfg=made.cfg, evaluated=evaluated) for a in WRITERS[writer]]
    done = subprocess.run([sys.executable, "-m", "loopkit.cli", *argv, "--quiet"], capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)), timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("loopkit: error: ") and re.search(r"File too large", lines[-1]), done.stderr
    assert str(tmp_path) in lines[-1]  # names the file
    after = tree_hash(tmp_path)
    changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
    assert not [k for k in changed if ".tmp" in k], changed  # no temporary file left behind
    if writer in ("train", "resume"):  # what the run holds is intact: it goes on from there with room
        target = tmp_path / "fresh" if writer == "train" else run
        again = ["--resume"] if (target / "config.yaml").exists() else []
        assert main([*argv, *again]) == 0
        assert checkpoint.latest(target).name == ("step_00000008" if writer == "resume" else "step_00000004")
    else:
        assert not [k for k in changed if k.endswith((".json", ".html", ".md", ".png"))], changed


def test_a_damaged_cache_file_is_named_not_a_traceback(tmp_path):
    """Item 13: a cache shard cut short (a full disk, an interrupted copy) is one line naming it."""
    import numpy as np

    from loopkit.cache import read_arrays

    good = tmp_path / "shard.npz"
    np.savez(good, x=np.arange(1000), y=np.arange(1000))
    assert read_arrays(good, ("x", "y"))["y"][-1] == 999
    cut_short = tmp_path / "cut.npz"
    cut_short.write_bytes(good.read_bytes()[:300])
    with pytest.raises(config.ConfigError, match=r"cache file .*cut\.npz is damaged \(.*\); delete it and it is made"):
        read_arrays(cut_short)
    with pytest.raises(config.ConfigError, match=r"shard\.npz is damaged: it lacks puzzles"):
        read_arrays(good, ("puzzles",))


def test_a_refused_second_train_never_removes_the_folder(tmp_path, monkeypatch):
    """Two trains on one new folder: the one refused the lock leaves the folder to the holder, even
    when it made the folder itself a moment before the holder locked it."""
    from loopkit import runfolder
    from loopkit.train import lock_run_dir

    def taken(*args, **kwargs):
        raise config.ConfigError("in use by another loopkit train process")

    monkeypatch.setattr(runfolder, "hold_lock", taken)
    with pytest.raises(config.ConfigError, match="in use"):
        lock_run_dir(tmp_path / "new", resume=False)
    assert (tmp_path / "new").is_dir()


def test_yaml_merge_keys_are_not_keys_given_twice(tmp_path):
    (tmp_path / "merge.yaml").write_text("base: &base {lr: 0.001, steps: 4}\ntrain:\n  <<: *base\n  steps: 8\n")
    assert config.read_yaml(tmp_path / "merge.yaml")["train"] == {"lr": 0.001, "steps": 8}
