#!/usr/bin/env bash
# Every GPU number dart claims, in one command on the lent GPU machine (an H200 with PyTorch but no package index),
# inside a time budget (BUDGET_S, default 480 s, the installs included). Prepare it here first with
# benchmarks/device_prepare.sh, then with the device tool:
#
#   run(command="bash benchmarks/device_suite.sh $OUT", carry=[".device"], timeout_s=560)
#   SMOKE=1 DEVICE=cpu bash benchmarks/device_suite.sh /tmp/smoke     # the CPU smoke mode (tiny model, seconds)
#
# Steps, each with its own time limit, each logged; one that fails or runs out of time is reported and the next
# still runs (a step that would start with under 20 s of the budget left is skipped):
#   install   the wheels in .device/wheels and this working tree into /tmp/dart-site (none when nothing is carried)
#   pytest    the CUDA- and TensorRT-marked tests (CUDA only)
#   stages    benchmarks/stage_times.py: backbone ms and encoder-decoder ms at 1/2/4/8/16/80 classes in fp32, fp16
#             and bf16, eager and compiled (reduce-overhead: CUDA graphs, class buckets), cosine vs fp32, peak
#             memory, the attention kernels that ran
#   video     `dart bench video` on a generated 1280x720 clip: sequential vs pipelined FPS at 4 and at 80 classes
#   peers     random full-size weights made by the DART research code's own builder (a Meta-layout sam3.pt), then
#             `dart bench peers`: dart (auto = bf16, fp16) against DART's Sam3MultiClassPredictorFast (fp32 and
#             its fp16 fast path) on those weights and one frame, 4 and 80 classes (needs .device/DART)
#   report    benchmarks/device_report.py: the rows for BENCHMARKS.md (rows.md)
# Random weights: speed does not depend on the values. RESULT_DIR gets at most 8 files (what the device tool brings
# back): environment.txt, rows.md, stages.json, video-4.json, video-80.json, peers.json, logs.tar.gz.
set -uo pipefail

RESULT=${1:-runs/device-suite}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
BUDGET_S=${BUDGET_S:-480}
CARRY=${CARRY:-.device}
WORK=${WORK:-$(mktemp -d /tmp/dart-device-suite.XXXXXX)}
SITE=${SITE:-/tmp/dart-site}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$RESULT" "$WORK/logs"
RESULT=$(cd "$RESULT" && pwd)
cd "$(dirname "$0")/.."  # the repository root (the device tool starts there; a local run may not)
started=$SECONDS
failed=()

if [[ "$SMOKE" == 1 ]]; then  # a tiny random SAM3 at 112 px: the script's plumbing, not its numbers
    $PY -c "from tests.tiny import tiny_config; tiny_config(imgsz=112).to_json_file('$WORK/tiny.json')"
    SYNTH=(--synthetic-config "$WORK/tiny.json")
    IMGSZ=112 FRAMES=${FRAMES:-4} COUNTS=${COUNTS:-1,2,17} STAGE_FLAGS=(--runs 2 --warmup 1 --compile none)
    VIDEO_FLAGS=(--imgsz 112 --warmup 1) PRECISIONS=${PRECISIONS:-bf16}
else
    SYNTH=() IMGSZ=1008 FRAMES=${FRAMES:-60} COUNTS=${COUNTS:-1,2,4,8,16,80} STAGE_FLAGS=(--runs 10 --warmup 3)
    VIDEO_FLAGS=(--warmup 5) PRECISIONS=${PRECISIONS:-fp16,bf16}
fi

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit inside the budget, log, remember failures
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - started)))
    if ((left < 20)); then
        echo "== $name: skipped, ${left} s of the ${BUDGET_S} s budget left" | tee "$WORK/logs/$name.log"
        failed+=("$name(skipped)")
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (at most ${limit} s, $((SECONDS - started)) s spent): $*"
    local begun=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    local code=$?
    tail -n 25 "$WORK/logs/$name.log"
    if ((code != 0)); then
        failed+=("$name(exit $code)")
        echo "== $name: FAILED (exit $code$( ((code == 124)) && echo ', out of time'))"
    fi
    echo "== $name: $((SECONDS - begun)) s"
}

install_carried() {  # the carried wheels, then this working tree (the carried dart wheel if building it fails)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        $(ls "$CARRY"/wheels/*.whl | grep -v '/dart_detect-') || return 1
    $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" . \
        || $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$CARRY"/wheels/dart_detect-*.whl
}

if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    export -f install_carried
    export PY CARRY SITE
    step install 90 bash -c install_carried
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
fi

{
    date -u
    $PY - <<'EOF'
import torch, transformers
from dart import __version__
print("dart", __version__, "| torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__)
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
EOF
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
    [[ -f "$CARRY/DART/COMMIT" ]] && echo "DART research code $(cat "$CARRY/DART/COMMIT")"
} 2>&1 | tee "$RESULT/environment.txt"

if [[ "$DEVICE" == cuda* ]]; then
    step pytest 100 $PY -m pytest -q -p no:cacheprovider -m "cuda or tensorrt" -rs \
        tests/test_video.py tests/test_bench.py tests/test_tensorrt.py tests/test_torch_backend.py
fi

step stages 200 $PY benchmarks/stage_times.py --device "$DEVICE" "${SYNTH[@]}" --imgsz "$IMGSZ" --counts "$COUNTS" \
    --precisions "$PRECISIONS" --budget-s 100 "${STAGE_FLAGS[@]}" \
    --json "$RESULT/stages.json" --markdown "$WORK/stages.md"

$PY benchmarks/make_clip.py "$WORK/clip.mp4" "$FRAMES"
for classes in 4 80; do
    if ((classes == 4)); then names=(-c car -c truck -c bus -c person); else names=(--coco); fi
    step "video-$classes" 90 dart bench video "$WORK/clip.mp4" --synthetic "${SYNTH[@]}" --device "$DEVICE" \
        --precision auto "${names[@]}" --max-frames "$FRAMES" "${VIDEO_FLAGS[@]}" -o "$WORK/video-$classes"
    cp "$WORK/video-$classes/video.json" "$RESULT/video-$classes.json" 2>/dev/null
done

if [[ -f "$CARRY/DART/sam3/model/sam3_multiclass_fast.py" ]]; then
    BPE="$CARRY/DART/sam3/assets/bpe_simple_vocab_16e6.txt.gz"
    if [[ "$DEVICE" == cuda* ]]; then SYSTEMS=dart-research-fp16,dart-auto,dart-fp16,dart-research-fp32
    else SYSTEMS=dart-research-fp32,dart-auto; fi
    step weights 60 env PYTHONPATH="$CARRY/DART:${PYTHONPATH:-}" $PY benchmarks/random_sam3_pt.py "$WORK/sam3.pt" \
        --bpe "$BPE"
    step peers 220 dart bench peers "$WORK/sam3.pt" --research-repo "$CARRY/DART" --tokenizer "$BPE" \
        --systems "$SYSTEMS" --device "$DEVICE" --classes-counts "${PEER_COUNTS:-4,80}" --warmup 1 --runs 3 --runs-large 2 \
        --timeout "${PEER_TIMEOUT:-50}" -o "$WORK/peers"
    cp "$WORK/peers/peers.json" "$RESULT/peers.json" 2>/dev/null
else
    echo "== peers: skipped (no DART research code in $CARRY/DART; see benchmarks/device_prepare.sh)" \
        | tee "$WORK/logs/peers.log"
fi

step report 30 $PY benchmarks/device_report.py "$RESULT" --stages-markdown "$WORK/stages.md" -o "$RESULT/rows.md"
tar -czf "$RESULT/logs.tar.gz" -C "$WORK" logs
echo "== done in $((SECONDS - started)) s; results in $RESULT"
if ((${#failed[@]})); then
    echo "steps that did not finish: ${failed[*]} (logs in $RESULT/logs.tar.gz)"
    exit 1
fi
