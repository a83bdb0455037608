#!/usr/bin/env bash
# One device call that buys seeds (issue 25): sudoku standard vs internal recall (outer norm, the
# shipped recipe loopkit/configs/sudoku.yaml) x --seeds seeds each, trained and evaluated to T = 128
# on 200 puzzles per level, then `loopkit claims` and `loopkit report`. A dry run at tiny sizes on
# the CPU runs in the test suite (tests/test_gpu_science.py).
#
#   bash benchmarks/gpu_science.sh [--dry-run] [--out DIR] [--cache DIR] [--seeds N] [--workers W]
#
# Runs go through `loopkit sweep` with W processes sharing the card (default 8): at the shipped
# sizes (width 128, batch 32, T 16) a step is launch-bound on a GPU, and on an H200 packing seeds
# into one process bought at most 1.17x even at width 256 (results/gpu/2026-12-04-h200), while
# two processes side by side each kept ~80 % of their speed alone (issue 25). Estimate on one
# H200, unmeasured: 32 runs x 3,200 steps at ~15-25 ms a step with 8 processes sharing the card,
# plus ~20 s of start-up and ~15 s of evaluation per run -> 4 rounds x ~70-115 s = 5-8 minutes.
#
# Make the data on the CPU first and pass it (generation on the card is not what the minutes buy):
#   loopkit data loopkit/configs/sudoku.yaml task.cache_dir=DIR
#
# Out (DIR, default $OUT, else gpu_science_out): summary.md (stage times, claims) and
# gpu_science.tar.gz (every run's config, metrics, eval JSON and figures, claims, report; no
# weights, no optimizer or random state), so that a device call gets back two files.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
loopkit() { "$PY" -m loopkit.cli "$@"; }
dry=0; out=${OUT:-gpu_science_out}; cache=""; seeds=16; workers=8
need() { [ $# -ge 2 ] || { echo "gpu_science.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --out) need "$@"; out=$2; shift ;;
        --cache) need "$@"; cache=$2; shift ;;
        --seeds) need "$@"; seeds=$2; shift ;;
        --workers) need "$@"; workers=$2; shift ;;
        *) echo "gpu_science.sh: unknown argument $1 (known: --dry-run --out DIR --cache DIR --seeds N --workers W)" >&2
           exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ $dry = 1 ]; then
    device=cpu; threads=1
    [ "$seeds" = 16 ] && seeds=3
    [ "$workers" = 8 ] && workers=2
    sizes=(model.width=16 model.heads=2 train.steps=4 train.batch_size=8 train.log_every=2 train.eval_every=0
           train.ckpt_every=4 task.train_size=64 task.eval_samples=8 "task.eval_levels=[easy, medium]" task.workers=1
           eval.max_iters=8)
else
    device=cuda; threads=2
    sizes=(eval.max_iters=128)
fi
[ -n "$cache" ] && cache=$(cd "$cache" && pwd) && sizes+=("task.cache_dir=$cache")
failed=()
stage() {  # name, then the command; output to $out/<name>.txt, a line per stage in summary.md
    local name=$1; shift
    local start=$SECONDS status=ok
    "$@" > "$out/$name.txt" 2>&1 || { status=FAILED; failed+=("$name"); }
    echo "| $name | $status | $((SECONDS - start)) s |" >> "$out/summary.md"
    echo "gpu_science: $name $status ($((SECONDS - start)) s)" >&2
}
{
    echo "# gpu_science $(date -u +%Y-%m-%dT%H:%MZ), $( [ $dry = 1 ] && echo 'dry run on CPU' || echo 'on GPU' )"
    "$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available()
              else 'no GPU')"
    echo "sudoku standard vs internal recall, outer norm, seeds 0-$((seeds - 1)), $workers processes at once"
    echo; echo "| stage | status | wall |"; echo "| --- | --- | --- |"
} > "$out/summary.md"
sweep="$out/sudoku_seeds.yaml"
{
    echo "# written by benchmarks/gpu_science.sh"
    echo "base: $PWD/loopkit/configs/sudoku.yaml"
    echo "overrides:"
    for o in "train.device=$device" "${sizes[@]}"; do echo "  - '$o'"; done
    echo "variants:"
    echo "  standard: [model.recall=standard]"
    echo "  internal: [model.recall=internal]"
    echo "seeds: [$(seq -s ', ' 0 $((seeds - 1)))]"
    echo "stages: [train, eval]"
    echo "eval_args: [--device, $device]"
} > "$sweep"
runs="$out/runs"
stage data loopkit data loopkit/configs/sudoku.yaml "${sizes[@]}"
stage sweep loopkit sweep "$sweep" --out "$runs" --workers "$workers" --threads "$threads"
stage claims loopkit claims "$runs"/*_seed-*/ --out "$out"
stage report loopkit report "$runs" --out "$out/report.html" --quiet
{
    echo; echo "## claims"; cat "$out/claims.md" 2>/dev/null || echo "(no claims.md)"
    echo; echo "## stages of the runs"
    grep -h "^\[sweep\]" "$runs"/*/sweep.log 2>/dev/null | sed "s/ after .*//" | sort | uniq -c
} >> "$out/summary.md"
tarball=$(mktemp "${TMPDIR:-/tmp}/gpu_science.XXXXXX")
if tar -czf "$tarball" --exclude='*.safetensors' --exclude='gpu_science.tar.gz' -C "$(dirname "$out")" "$(basename "$out")"
then
    mv "$tarball" "$out/gpu_science.tar.gz"
else
    failed+=("tarball")
fi
cat "$out/summary.md"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_science: failed stages: ${failed[*]}" >&2
    exit 1
fi
