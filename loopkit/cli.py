"""`loopkit train | eval | analyze | compare | demo | data`: thin wrappers over the library; errors become
one clear line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, NoReturn

from . import config
from .errors import LoopkitError
from .progress import enabled, set_quiet
from .runfolder import check_output_folder, output_lock, recipe


def check_flags(*checks: tuple[str, object, object, str]) -> None:
    """Command-line numbers are range-checked like config keys, before anything is computed:
    (flag, value or None when not given, check, what is allowed)."""
    for flag, value, ok, allowed in checks:
        if value is not None and not ok(value):
            raise config.ConfigError(f"{flag}={value!r} is out of range: allowed {allowed}")


def check_device(text: str) -> None:
    from .devices import resolve

    resolve(text, "--device")


def check_run_folder(run_dir: str, out: str, command: str) -> IO:
    """A run to read and its output folder, checked before the compute (`out` inside the run, no
    link on the way); returns the folder's lock, held until the command ends, so that a second
    command writing the same results is refused rather than overwriting them."""
    if not Path(run_dir).is_dir():
        raise config.ConfigError(f"{run_dir} is not a run folder (no such folder)")
    check_output_folder(Path(run_dir) / out, "output folder", parents=False)
    return output_lock(run_dir, out, command)


def cmd_train(args: argparse.Namespace) -> None:
    from .train import train

    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    cfg, dropped = recipe(args.config, args.overrides, run_dir)  # a run's config.yaml runs no program
    last = train(cfg, run_dir, resume=args.resume, allow_changes=args.allow_changes, ckpt_name=args.checkpoint,
                 progress=enabled(), dropped=dropped)
    print(json.dumps(last))
    print(f"run directory: {run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    # --halt, --stable-k and --prob-tol are shorthands for eval.halt=..., so the config checks them
    shorthands = [f"eval.{key}={value}" for key, value in
                  (("halt", args.halt), ("stable_k", args.stable_k), ("prob_tol", args.prob_tol)) if value is not None]
    check_flags(("--batch-size", args.batch_size, lambda v: v >= 1, ">= 1"),
                ("--max-iters", args.max_iters, lambda v: v >= 1, ">= 1"),
                ("--tol", args.tol, lambda v: 0 <= v < float("inf"), "a finite number >= 0 (0: never)"))
    check_device(args.device)
    lock = check_run_folder(args.run_dir, args.out, "eval")  # noqa: F841 (held until the command ends)
    result_file = Path(args.run_dir) / args.out / ("until_converged.json" if args.until_converged else "results.json")
    if result_file.exists() and not args.force:
        raise config.ConfigError(f"{result_file} already exists; pass --force to replace it, or --out NAME to "
                                 "write the results beside it")
    if args.until_converged:
        from .early_exit import evaluate_until_converged, format_until_converged

        result = evaluate_until_converged(args.run_dir, tol=args.tol, max_iters=args.max_iters,
                                          device=args.device, batch_size=args.batch_size,
                                          overrides=[*args.overrides, *shorthands], out_name=args.out,
                                          ckpt_name=args.checkpoint)
        print(format_until_converged(result))
        print(f"wrote {Path(args.run_dir) / args.out / 'until_converged.json'}")
        return
    if shorthands:
        raise config.ConfigError("--halt, --stable-k and --prob-tol choose the rule of --until-converged; "
                                 "without it, eval replays every rule on one pass (results.json: early_exit)")
    from .early_exit import format_compute
    from .evaluate import evaluate_run, format_table

    result = evaluate_run(args.run_dir, max_iters=args.max_iters, device=args.device, batch_size=args.batch_size,
                          overrides=args.overrides, out_name=args.out, ckpt_name=args.checkpoint)
    print(format_table(result["summary"]))
    print(format_compute(result["early_exit"]))
    print(f"wrote {Path(args.run_dir) / args.out / 'results.json'}, accuracy_vs_T.png and accuracy_vs_compute.png")


def cmd_analyze(args: argparse.Namespace) -> None:
    from .analysis import analyze_run, format_summary

    check_flags(("--samples", args.samples, lambda v: v >= 1, ">= 1"),
                ("--inits", args.inits, lambda v: v >= 1, ">= 1"),
                ("--max-iters", args.max_iters, lambda v: v >= 1, ">= 1"),
                ("--tol", args.tol, lambda v: 0 < v < float("inf"), "a finite number > 0"),
                ("--min-sv-budget", args.min_sv_budget, lambda v: v >= 0, ">= 0 (0: skip sigma_min)"))
    check_device(args.device)
    lock = check_run_folder(args.run_dir, "analysis", "analyze")  # noqa: F841 (held until the command ends)
    if (Path(args.run_dir) / "analysis" / "results.json").exists() and not args.force:
        raise config.ConfigError(f"{Path(args.run_dir) / 'analysis' / 'results.json'} already exists; pass --force to "
                                 "replace it")
    result = analyze_run(args.run_dir, samples=args.samples, max_iters=args.max_iters, tol=args.tol,
                         sets=args.sets.split(",") if args.sets else None, n_inits=args.inits,
                         method=args.method, min_sv_matvecs=args.min_sv_budget, device=args.device,
                         sensitivity_norm=args.sensitivity_norm, rho_tol=args.rho_tol, ckpt_name=args.checkpoint)
    print(format_summary(result))
    print(f"wrote {Path(args.run_dir) / 'analysis'}/results.json, residuals.png, geometry.png, sensitivity.png")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import compare

    runs = [r for r in args.run_dirs if Path(r).is_dir()]  # a glob like results/sudoku/* also matches files
    if not runs:
        raise config.ConfigError(f"none of {' '.join(args.run_dirs)} is a run directory")
    print(compare(runs, out_name=args.out, metric=args.metric))


def cmd_data(args: argparse.Namespace) -> None:
    """Make a config's datasets now (for chess: run the engine and fill the puzzle cache), so that
    training can start at once later, on this machine or on another that gets the cache folder."""
    import time

    from .runfolder import load_stored, run_of_config
    from .tasks import build_task

    run = run_of_config(args.config)  # a run's stored config is data: no engine, no writes elsewhere from it
    cfg, read_only = load_stored(config.load(args.config), run, args.overrides) if run else \
        (config.load(args.config, args.overrides), False)
    task = build_task(cfg.task)
    task.cache_read_only = read_only
    started = time.perf_counter()
    if hasattr(task, "train_data"):
        print(f"train: {len(task.train_data())} examples")
    for s in task.eval_sets():
        print(f"eval {s.name}: {len(s.x)} examples")
    print(f"ready in {time.perf_counter() - started:.0f} s")


def check_stage_args(path: str, eval_args: list[str], analyze_args: list[str]) -> None:
    """Parse a sweep's eval_args and analyze_args as those commands will, before any run starts: a
    misspelt option would otherwise surface only when the first run reaches that stage, hours in."""
    for stage, extra in (("eval", eval_args), ("analyze", analyze_args)):
        command = build_parser().commands[stage]

        def fail(message: str, stage: str = stage) -> NoReturn:
            raise config.ConfigError(f"{path}: {stage}_args: {message}")

        command.error = fail  # type: ignore[method-assign]
        command.parse_intermixed_args(["RUN_DIR", *extra])


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_sweep, run_sweep

    if args.workers < 1:
        raise config.ConfigError(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out or Path("runs") / Path(args.sweep).stem)
    check_output_folder(out, "sweep folder")
    sweep = load_sweep(args.sweep, out)
    check_stage_args(args.sweep, sweep.eval_args, sweep.analyze_args)
    if args.threads < 0:
        raise config.ConfigError(f"--threads must be >= 0 (0: the cores split between the workers), got {args.threads}")
    import signal
    import threading

    # SIGTERM stops the sweep as Ctrl-C does: its running stages are killed, no new one starts
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM)) if main_thread else None
    try:
        failures = run_sweep(args.sweep, out, workers=args.workers, backend=args.backend, address=args.address,
                             threads=args.threads)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if failures:
        print(f"loopkit: {len(failures)} run(s) failed:", file=sys.stderr)
        for name, reason in failures:
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    print(f"sweep complete: {out}")
    return 0


def cmd_claims(args: argparse.Namespace) -> None:
    import os

    from .claims import to_markdown, write_claims

    runs = [r for r in args.run_dirs if (Path(r) / "eval" / "results.json").is_file()]
    if not runs:
        raise config.ConfigError(f"none of {' '.join(args.run_dirs)} is an evaluated run (no eval/results.json)")
    left_out = [r for r in args.run_dirs if r not in runs]
    if left_out:  # a sweep still running: say which runs the verdicts do not include
        print(f"claims: left out {len(left_out)} folder(s) without eval/results.json: {' '.join(left_out)}",
              file=sys.stderr)
    out = Path(args.out or os.path.commonpath([str(Path(r).resolve().parent) for r in runs]))
    check_output_folder(out, "output folder")
    result = write_claims(runs, out)
    print(to_markdown(result))
    print(f"wrote {out / 'claims.md'} and {out / 'claims.json'}")


def cmd_report(args: argparse.Namespace) -> None:
    from .atomic import check_target
    from .report import REPORT_HEAD, write_report

    paths = [Path(p) for p in args.paths]
    if len(paths) == 1 and not paths[0].is_dir():
        raise config.ConfigError(f"{paths[0]} is not a folder (a sweep folder or a run folder)")
    if len(paths) == 1 and not (paths[0] / "eval").is_dir():  # a sweep folder: its runs
        paths = sorted(p for p in paths[0].iterdir() if (p / "eval" / "results.json").is_file())
    out = Path(args.out or (Path(args.paths[0]) if len(args.paths) == 1 else Path(".")) / "report.html")
    if out.is_dir():
        raise config.ConfigError(f"--out {out} is a folder; name the HTML file to write")
    check_output_folder(out.parent, "output folder")
    check_target(out)  # a device, pipe or link is refused before the report is built, not after
    if out.is_file() and not args.force and not out.open("rb").read(len(REPORT_HEAD)) == REPORT_HEAD.encode():
        raise config.ConfigError(f"--out {out} exists and is not a loopkit report; pass --force to replace it")
    print(f"wrote {write_report(paths, out)}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(Path(args.out), fresh=args.fresh)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopkit", description="Train, extrapolate and diagnose looped transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # name -> that command's parser (parse_args reads it)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML file with sections task, model, train, eval")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. model.recall=internal")
    p.add_argument("--run-dir", help="where checkpoints and metrics go (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue with changed train/task/eval values "
                        "(recorded in config_changes.jsonl)")
    p.add_argument("--checkpoint", help="with --resume: continue from this checkpoint (step_NNNNNNNN or a step) "
                                        "instead of the latest; later ones are set aside")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="accuracy versus test-time T on every difficulty of the task")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="task.*/eval.* changes, e.g. task.eval_files=[puzzles.txt]")
    p.add_argument("--out", default="eval", help="folder inside the run directory for the results")
    p.add_argument("--force", action="store_true", help="replace results already in --out")
    p.add_argument("--checkpoint", help="evaluate this checkpoint (step_NNNNNNNN or a step) instead of the latest")
    p.add_argument("--max-iters", type=int, help="largest T, the early-exit cap with --until-converged "
                   "(shorthand for eval.max_iters; default: eval.max_iters, or 4 x the training T)")
    p.add_argument("--iters", dest="max_iters", type=int, help=argparse.SUPPRESS)  # its older name
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--until-converged", action="store_true",
                   help="stop each sample once --halt fires (at most --max-iters iterations); "
                        "finished samples leave the batch")
    p.add_argument("--tol", type=float,
                   help="early-exit tolerance on r_t (default: eval.tol; 0: never, i.e. a fixed T)")
    p.add_argument("--halt", choices=["residual", "stable", "either"],
                   help="stopping rule of --until-converged: residual r_t < --tol, stable argmax answer for "
                        "--stable-k iterations, or either (default: eval.halt, residual)")
    p.add_argument("--stable-k", type=int, help="iterations the answer must stay unchanged (default: eval.stable_k)")
    p.add_argument("--prob-tol", type=float,
                   help="stable also needs every output probability to move by less than this "
                        "(default: eval.prob_tol; 0: off)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("analyze", help="fixed-point diagnostics: reachability, input-dependence, geometry")
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, default=32, help="inputs per difficulty")
    p.add_argument("--sets", help="comma-separated eval sets (default: all), e.g. len32,len128")
    p.add_argument("--max-iters", type=int, help="iteration cap (default: eval.max_iters or 4 x training T)")
    p.add_argument("--tol", type=float, help="convergence tolerance on r_t (default: eval.tol)")
    p.add_argument("--inits", type=int, default=3, help="initial states for the initial-state dependence")
    p.add_argument("--method", choices=["iter", "anderson"], default="iter",
                   help="iter: the model's own dynamics; anderson: accelerated solve")
    p.add_argument("--min-sv-budget", type=int, default=400,
                   help="Jacobian products allowed for sigma_min(I - J), the costliest estimate (0: skip it)")
    p.add_argument("--force", action="store_true", help="replace the run's analysis/results.json")
    p.add_argument("--rho-tol", type=float, default=1e-3,
                   help="Ritz residual every rho(J) estimate is restarted to (reported beside rho)")
    p.add_argument("--checkpoint", help="analyse this checkpoint (step_NNNNNNNN or a step) instead of the latest")
    p.add_argument("--sensitivity-norm", action="store_true",
                   help="also ||dh*/de||_2, the worst input direction (Lanczos through IFT solves; costly)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_analyze)

    p = sub.add_parser("compare", help="one exact-match table (at T, 2T, 4T per eval set) across evaluated runs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="eval", help="which evaluation folder of each run to read")
    p.add_argument("--metric", default="exact",
                   help="exact (default), token, or a task's own (valid, legal_exact, ...)")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("data", help="make and cache a config's training and eval data now (chess puzzles)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. task.train_size=20000 task.workers=2")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("sweep", help="a grid of runs (axes x seeds): train, eval, analyze each; resumable")
    p.add_argument("sweep", help="sweep YAML: base, overrides, axes, seeds, stages, eval_args, analyze_args")
    p.add_argument("--out", help="folder for the runs (default: runs/<sweep file name>)")
    p.add_argument("--workers", type=int, default=1, help="runs at once; the CPU threads are split between them")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per run (default 0: the machine's cores split between the workers)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local processes, or Ray tasks (a local Ray instance, or a cluster with --address)")
    p.add_argument("--address", help="with --backend ray: the cluster to join (HOST:PORT; default: start a local one)")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("claims", help="mean +- sd per configuration over seeds and a verdict per claim C1-C4")
    p.add_argument("run_dirs", nargs="+", help="evaluated (and analysed) runs, e.g. runs/prefix_grid/*")
    p.add_argument("--out", help="folder for claims.md and claims.json (default: the runs' common parent)")
    p.set_defaults(fn=cmd_claims)

    p = sub.add_parser("report", help="one self-contained HTML page: claims, accuracy vs T, diagnostics, C4 scatter")
    p.add_argument("paths", nargs="+", help="a sweep folder, or run folders")
    p.add_argument("--out", help="the HTML file (default: <sweep folder>/report.html)")
    p.add_argument("--force", action="store_true", help="replace --out even when it is not a loopkit report")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("demo", help="train recall+outer and no-recall models on prefix sums and compare them")
    p.add_argument("--out", default="runs/demo", help="folder for the two runs")
    p.add_argument("--fresh", action="store_true", help="discard earlier demo runs in --out instead of resuming them")
    p.set_defaults(fn=cmd_demo)
    for name in ("train", "eval", "analyze", "claims", "report", "demo"):  # the commands that can take a while
        sub.choices[name].add_argument("--quiet", action="store_true",
                                       help="no progress bars on stderr (never shown when stderr is not a terminal)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options may come before, between or after the positional arguments of a command
    (`loopkit train CONFIG --run-dir D model.recall=none`): argparse's plain parse stops taking
    positionals at the first option, so the command's own parser reads its arguments intermixed."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = parser.commands
    at = next((i for i, a in enumerate(argv) if a in commands), None)
    if at is None or any(a != "-h" and a != "--help" for a in argv[:at]):
        return parser.parse_args(argv)  # no command, or top-level options: argparse's own message
    args = commands[argv[at]].parse_intermixed_args(argv[at + 1:])
    args.command = argv[at]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_quiet(getattr(args, "quiet", False))  # progress bars off for this command (loopkit.progress)
    try:
        status = args.fn(args)
    except LoopkitError as err:  # every error meant for the user: one line, no traceback (loopkit.errors)
        print(f"loopkit: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the system refused (disk full, permissions, a vanished file): say where, in one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"loopkit: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
