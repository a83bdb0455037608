"""`loopkit train | eval | demo`: thin wrappers over the library; errors become one clear line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config
from .checkpoint import CheckpointError


def cmd_train(args: argparse.Namespace) -> None:
    from .train import train

    cfg = config.load(args.config, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    last = train(cfg, run_dir, resume=args.resume)
    print(json.dumps(last))
    print(f"run directory: {run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_run, format_table

    result = evaluate_run(args.run_dir, max_iters=args.iters, device=args.device, batch_size=args.batch_size)
    print(format_table(result["summary"]))
    print(f"wrote {Path(args.run_dir) / 'eval' / 'results.json'} and accuracy_vs_T.png")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(Path(args.out), fresh=args.fresh)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopkit", description="Train, extrapolate and diagnose looped transformers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML file with sections task, model, train, eval")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. model.recall=internal")
    p.add_argument("--run-dir", help="where checkpoints and metrics go (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="accuracy versus test-time T on every difficulty of the task")
    p.add_argument("run_dir")
    p.add_argument("--iters", type=int, help="largest T (default: eval.iters, or 4 x the training T)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("demo", help="train recall+outer and no-recall models on prefix sums and compare them")
    p.add_argument("--out", default="runs/demo", help="folder for the two runs")
    p.add_argument("--fresh", action="store_true", help="discard earlier demo runs in --out instead of resuming them")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (config.ConfigError, CheckpointError) as err:
        print(f"loopkit: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
