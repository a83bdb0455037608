#!/usr/bin/env bash
# The prepared check for a lent GPU (about 8 minutes on one card), or a dry run at tiny sizes on a CPU
# (CI runs `bash benchmarks/gpu_check.sh --dry-run` through tests/test_gpu_check.py).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--train-minutes M] [--cache DIR]
#
# 0. preflight: the Python modules and the C compiler the stages need                -> preflight.txt
# 1. the tests parametrized over devices, on the GPU                                  -> tests.txt
# 2. throughput: fp32 / bf16 x eager / compiled / CUDA graphs, prefix sums and sudoku  -> throughput.txt
# 3. peak memory against T for full backprop, bptt and the progressive loss            -> memory.txt
# 3b. `loopkit train` with CUDA graphs (train.compile=reduce-overhead) against eager from one seed:
#    the loss falls and stays within bf16 tolerance of eager's                        -> cudagraph_train.txt
# 4. the sudoku config at a GPU-sized budget (width 256, batch 256, 100k puzzles), trained for
#    --train-minutes (default 1.5), then its accuracy against T on the ladder          -> sudoku/
# Everything lands in DIR (default $OUT, else gpu_check_out) plus gpu_check.tar.gz of it all and a
# summary.md, so that a device call gets back few files. A failing stage is recorded and the
# script goes on to the next; it exits non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
# the package from this checkout, installed or not (a lent machine starts bare)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
python() { "$PY" "$@"; }
loopkit() { "$PY" -m loopkit.cli "$@"; }
dry=0; out=${OUT:-gpu_check_out}; minutes=1.5; cache=""
need() { [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --out) need "$@"; out=$2; shift ;;
        --train-minutes) need "$@"; minutes=$2; shift ;;
        --cache) need "$@"; cache=$2; shift ;;
        *) echo "gpu_check.sh: unknown argument $1 (known: --dry-run --out DIR --train-minutes M --cache DIR)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
failed=()
stage() {  # name, then the command; output to $out/<name>.txt, a line per stage in summary.md
    local name=$1; shift
    local start=$SECONDS status=ok
    "$@" > "$out/$name.txt" 2>&1 || { status=FAILED; failed+=("$name"); }
    echo "| $name | $status | $((SECONDS - start)) s |" >> "$out/summary.md"
    echo "gpu_check: $name $status ($((SECONDS - start)) s)" >&2
}

if [ $dry = 1 ]; then
    device=cpu
    tests=(tests/test_precision.py -q -x -k "not compiled")
    speed=(--device cpu --tasks sudoku --widths 32 --steps 1 --variants naive,fp32,auto,auto+compile,auto-recipe)
    memory=(--device cpu --iters 4,8 --k 2 model.width=32)
    sudoku=(model.width=32 train.steps=6 train.batch_size=8 train.log_every=2 train.eval_every=0 train.ckpt_every=3
            task.train_size=64 task.eval_levels=[easy,medium] task.eval_samples=8 task.workers=1 eval.max_iters=8)
else  # about 8 minutes on an H100/H200 (estimates by stage in benchmarks/README.md)
    device=cuda
    tests=(tests -q -k cuda --deselect tests/test_gpu_check.py)  # the tests parametrized over devices
    speed=(--device cuda --batch 256 --steps 10 --widths 256)
    memory=(--device cuda --iters 16,64,256 --k 8 train.batch_size=256)
    sudoku=(model.width=256 model.heads=8 train.batch_size=256 train.lr=0.0005 train.steps=100000
            train.warmup_steps=200 train.log_every=50 train.eval_every=500 train.ckpt_every=250 task.train_size=100000)
fi
[ -n "$cache" ] && sudoku+=("task.cache_dir=$cache")

{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ), $( [ $dry = 1 ] && echo 'dry run on CPU' || echo 'on GPU' )"
    python -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
        torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo; echo "| stage | status | wall |"; echo "| --- | --- | --- |"
} > "$out/summary.md"

preflight() {  # what a bare machine may lack: each missing piece named, the stages that need it fail
    python - <<'PY'
import importlib, shutil, sys
missing = []
for module in ("torch", "numpy", "yaml", "safetensors", "tqdm", "matplotlib", "chess", "pytest"):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module)
print("python", sys.version.split()[0], "| missing modules:", ", ".join(missing) or "none",
      "| C compiler for torch.compile:", shutil.which("cc") or shutil.which("gcc") or "none")
sys.exit(1 if missing else 0)
PY
}
stage preflight preflight
stage tests python -m pytest "${tests[@]}" -p no:cacheprovider
stage throughput python benchmarks/step_time.py "${speed[@]}"
stage memory python benchmarks/memory.py "${memory[@]}"
if [ $dry = 1 ]; then graphs=(--device cpu --steps 4 --dry-run); else graphs=(--device cuda --steps 300); fi
stage cudagraph_train python benchmarks/cudagraph_train.py "${graphs[@]}" ${cache:+--cache "$cache"}

# sudoku at a GPU-sized budget: make the data first (so that the clock is training only), time a
# few steps, then train for as many steps as fit the minutes left (the cosine schedule then ends
# where the run ends), then evaluate
run="$out/sudoku"
rm -rf "$run" "$out/sudoku_calibration"
stage sudoku_data loopkit data loopkit/configs/sudoku.yaml "${sudoku[@]}"
calibrate() {
    loopkit train loopkit/configs/sudoku.yaml "${sudoku[@]}" train.device=$device train.steps=40 train.log_every=10 \
        train.eval_every=0 train.ckpt_every=40 --run-dir "$out/sudoku_calibration"
}
stage sudoku_calibration calibrate
steps=$(python - "$out/sudoku_calibration/metrics.jsonl" "$minutes" "$dry" <<'PY'
import json, sys
path, minutes, dry = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
try:
    per_step = json.loads(open(path).read().splitlines()[-1])["sec_per_step"]  # last window: compiled, warm
except (OSError, IndexError, KeyError, ValueError):
    per_step = 1.0
print(6 if dry else max(100, int(0.9 * 60 * minutes / per_step)))
PY
)
echo "| sudoku steps fitted to ${minutes} min | $steps | |" >> "$out/summary.md"
stage sudoku_train loopkit train loopkit/configs/sudoku.yaml "${sudoku[@]}" train.device=$device train.steps="$steps" \
    --run-dir "$run"
stage sudoku_eval loopkit eval "$run" --device $device
cp "$run/metrics.jsonl" "$out/sudoku_metrics.jsonl" 2>/dev/null
cp "$run/eval/results.json" "$out/sudoku_eval.json" 2>/dev/null

{
    echo; echo "## throughput"; cat "$out/throughput.txt" | grep -v -i warning
    echo; echo "## memory"; cat "$out/memory.txt"
    echo; echo "## CUDA graphs in loopkit train"; grep -v -i "warn\|it/s\|puzzle/s" "$out/cudagraph_train.txt" | tail -n 3
    echo; echo "## sudoku"; tail -n 12 "$out/sudoku_eval.txt"
    echo; echo "## tests"; tail -n 3 "$out/tests.txt"
    echo; echo "## preflight"; cat "$out/preflight.txt"
} >> "$out/summary.md"
tarball=$(mktemp "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
if tar -czf "$tarball" --exclude='*/optimizer.safetensors' --exclude='*/rng.safetensors' -C "$(dirname "$out")" "$(basename "$out")"; then
    mv "$tarball" "$out/gpu_check.tar.gz"
else
    failed+=("tarball")
fi
cat "$out/summary.md"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: failed stages: ${failed[*]}" >&2
    exit 1
fi
