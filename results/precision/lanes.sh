#!/usr/bin/env bash
# bf16 (precision=auto on this CPU) against fp32: the same recipe, 3 seeds each, on prefix sums and
# sudoku. Two lanes, one thread each, run side by side on a 2-core machine:
#   bash results/precision/lanes.sh A & bash results/precision/lanes.sh B &
set -uo pipefail
export OMP_NUM_THREADS=1
out=${OUT:-runs/precision}
prefix() {  # precision seed
    run=$out/prefix_$1_s$2
    [ -f "$run/eval/results.json" ] && return
    loopkit train loopkit/configs/prefix_sums.yaml model.recall=standard model.norm=outer train.precision=$1 \
        train.seed=$2 train.threads=1 --run-dir "$run" $( [ -f "$run/config.yaml" ] && echo --resume ) &&
    loopkit eval "$run" task.eval_lengths=[32,64,128] eval.iters=160
}
sudoku() {  # precision seed
    run=$out/sudoku_$1_s$2
    [ -f "$run/eval/results.json" ] && return
    loopkit train loopkit/configs/sudoku.yaml model.recall=standard model.norm=outer train.steps=1200 \
        train.precision=$1 train.seed=$2 train.threads=1 task.workers=1 --run-dir "$run" \
        $( [ -f "$run/config.yaml" ] && echo --resume ) &&
    loopkit eval "$run"
}
if [ "$1" = A ]; then
    prefix fp32 0; prefix bf16 1; prefix fp32 2; sudoku fp32 0; sudoku bf16 1; sudoku fp32 2
else
    prefix bf16 0; prefix fp32 1; prefix bf16 2; sudoku bf16 0; sudoku fp32 1; sudoku bf16 2
fi
# (order within a lane is free: each run is skipped once its eval/results.json exists)
