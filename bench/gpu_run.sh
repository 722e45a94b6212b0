#!/usr/bin/env bash
# One GPU run of feratt, prepared for the lent GPU machine (one H200, 16 cores, about 15 minutes in all,
# start-up included): it must finish in under 8 minutes. Each step is timed and stops at the budget.
#
#   1. install  feratt with --no-deps over the machine's own packages (PyTorch with CUDA, numpy, h5py,
#               OpenCV, scikit-image, ...), plus the wheels in --wheels for what it lacks (pycocotools);
#   2. bank     the demo face bank, --jobs 16;
#   3. render   the demo render (make demo's settings, 128 px), --jobs 16;
#   4. check    bench/gpu_check.py on that render: environment, throughput with and without
#               torch.compile, loader waits (its real runs are left to step 5);
#   5. train    `feratt experiment`: the three methods at the paper preset (128 px, full widths, batch
#               200, bf16) on fold 0 for --epochs epochs, with the real faces as a second test;
#   6. report   everything as JSON: OUT/gpu_run.json (steps, versions, gpu_check, the experiment's
#               results), OUT/report.md and OUT/gpu_run.log.
#
# --smoke runs the same steps on the CPU at toy sizes (4 demo subjects, 64 px, width 0.25, batches of 8,
# one epoch of two batches; bf16 autocast on the CPU in the check step only) in a minute or two: CI runs
# it so that it never rots.
#
#   bash bench/gpu_run.sh --out "$OUT" --wheels .whl          # on the GPU machine
#   PYTHON=.venv/bin/python bash bench/gpu_run.sh --smoke --out /tmp/gpu-run
set -uo pipefail

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --smoke  --out DIR  --work DIR  --epochs N (20)  --budget SECONDS (450)  --wheels DIR  --jobs N (16)"
}

PY=${PYTHON:-python3}
SMOKE=0
OUT_DIR=gpu-run
WORK=""
EPOCHS=20
BUDGET=450
WHEELS=""
JOBS=16
while (($#)); do
    case $1 in
        --smoke) SMOKE=1 ;;
        --out) OUT_DIR=$2; shift ;;
        --work) WORK=$2; shift ;;
        --epochs) EPOCHS=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --wheels) WHEELS=$2; shift ;;
        --jobs) JOBS=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
START=$(date +%s)
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/feratt-gpu-run.XXXXXX")}
mkdir -p "$WORK" || exit 2
WORK=$(cd "$WORK" && pwd)
LOG="$OUT_DIR/gpu_run.log"
STEPS="$WORK/steps.jsonl"
: >"$LOG"
: >"$STEPS"

if ((SMOKE)); then
    DEVICE=cpu
    JOBS=2
    BANK_ARGS=(--demo-subjects 4 --demo-per-class 1 --size 96)
    RENDER_ARGS=(--per-face 2 --size 64 --shard-size 20)
    CHECK_ARGS=(--smoke)
    # bf16 autocast is emulated on the CPU, 5 to 10 times slower: the check step covers it in --smoke.
    TRAIN_ARGS=(--in-size 64 --width 0.25 --batch-size 8 --epochs 1 --max-batches 2 --workers 0
        --fold-size 2 --val-subjects 1 --amp off)
else
    DEVICE=cuda
    BANK_ARGS=()
    RENDER_ARGS=(--per-face 10 --shard-size 500)
    CHECK_ARGS=(--budget 150)
    TRAIN_ARGS=(--epochs "$EPOCHS" --workers 8 --amp bf16)
fi

# step NAME COMMAND...: run COMMAND into the log within what is left of the budget; record its status.
step() {
    local name=$1
    shift
    local left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 5)); then
        echo "{\"step\": \"$name\", \"status\": \"skipped: out of budget\"}" >>"$STEPS"
        echo "== $name: skipped, out of budget" | tee -a "$LOG"
        return 1
    fi
    echo "== $name ($left s left): $*" | tee -a "$LOG"
    local began rc
    began=$(date +%s.%N)
    timeout --signal=INT --kill-after=15 "$left" "$@" >>"$LOG" 2>&1
    rc=$?
    local seconds
    seconds=$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $seconds}" >>"$STEPS"
    echo "== $name: exit $rc after $seconds s" | tee -a "$LOG"
    return $rc
}

WHEEL_FILES=()
if [[ -n $WHEELS ]]; then
    shopt -s nullglob
    WHEEL_FILES=("$WHEELS"/*.whl)
    shopt -u nullglob
fi
step install "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation --target "$WORK/site" \
    "${WHEEL_FILES[@]}" "$ROOT" || exit 1
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
FERATT=("$PY" -m feratt)
"$PY" -m feratt.environment >"$WORK/versions.txt" 2>>"$LOG"

step bank "${FERATT[@]}" faces builtin:demo --out "$WORK/bank.h5" --jobs "$JOBS" "${BANK_ARGS[@]}"
step render "${FERATT[@]}" render "$WORK/bank.h5" --out "$WORK/render" --jobs "$JOBS" "${RENDER_ARGS[@]}" \
    --fit-mask 0.05 --rotation 15 --translation 0.1 --no-colour
step gpu_check "$PY" "$ROOT/bench/gpu_check.py" --shards "$WORK/render" --work "$WORK/check" \
    --out "$WORK/gpu_check.json" --no-real-run "${CHECK_ARGS[@]}"
step train "${FERATT[@]}" experiment "$WORK/render" --out "$WORK/experiment" --folds 0 \
    --methods baseline,feratt-cls,feratt-rep-cls --preset paper --device "$DEVICE" \
    --real-test "$WORK/bank.h5" "${TRAIN_ARGS[@]}"

cp "$WORK/experiment/report.md" "$OUT_DIR/report.md" 2>/dev/null
"$PY" - "$WORK" "$OUT_DIR/gpu_run.json" "$SMOKE" "$BUDGET" <<'PYTHON'
import json
import sys
from pathlib import Path

work, out, smoke, budget = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


steps = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines()]
versions = work / "versions.txt"
report = {
    "mode": "smoke" if smoke else "gpu",
    "budget_s": budget,
    "seconds": round(sum(s.get("seconds", 0.0) for s in steps), 1),
    "passed": all(s.get("rc") == 0 for s in steps),
    "steps": steps,
    "versions": versions.read_text().strip() if versions.is_file() else None,
    "gpu_check": load(work / "gpu_check.json"),
    "experiment": load(work / "experiment" / "results.json"),
}
out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
print(f"wrote {out}: {'passed' if report['passed'] else 'FAILED'} in {report['seconds']} s")
sys.exit(0 if report["passed"] else 1)
PYTHON
