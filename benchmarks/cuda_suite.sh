#!/usr/bin/env bash
# Every GPU check and number BENCHMARKS.md asks for, in one run on a CUDA machine:
#   1. the CUDA / TensorRT tests (two-stream video pipeline, engines vs PyTorch, FP16 fidelity, CUDA graphs);
#   2. PyTorch class scaling (FPS and per-stage ms for 1..16 classes) in FP16 and BF16, random full-size weights;
#   3. dart bench video: sequential vs pipelined (two CUDA streams) FPS on a generated 1280x720 clip;
#   4. with TensorRT installed, benchmarks/engines.py (backbone ms, encoder-decoder ms per class count, FP16
#      cosine, end-to-end FPS at 4 classes).
# Speed does not depend on the weight values, so random full-size weights give the real timings.
#
#   bash benchmarks/cuda_suite.sh [OUT_DIR]            # default OUT_DIR: runs/cuda-suite
#   DEVICE=cpu SYNTHETIC_CONFIG=tiny.json bash benchmarks/cuda_suite.sh /tmp/smoke   # a smoke run of the script
#
# Each step's output is kept in OUT_DIR (pytest.txt, class-scaling JSON/PNG per precision, video JSON/PNG,
# engines.json); a failing step is reported and the next one still runs. Copy the numbers into BENCHMARKS.md with
# the GPU named (OUT_DIR/environment.txt).
set -uo pipefail

OUT=${1:-runs/cuda-suite}
DEVICE=${DEVICE:-cuda}
SYNTH=()
if [[ -n "${SYNTHETIC_CONFIG:-}" ]]; then SYNTH=(--synthetic-config "$SYNTHETIC_CONFIG"); fi
PRECISIONS=${PRECISIONS:-fp16 bf16}
COUNTS=${COUNTS:-1,2,4,8,16}
FRAMES=${FRAMES:-200}
mkdir -p "$OUT"
failed=()

step() {  # step NAME COMMAND...: run, keep its log, remember failures
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" 2>&1 | tee "$OUT/$name.log"; then
        failed+=("$name")
    fi
}

{
    date -u
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda); \
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
    python -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>/dev/null || echo "tensorrt: not installed"
} | tee "$OUT/environment.txt"

if [[ "$DEVICE" == cuda* ]]; then
    step pytest python -m pytest -q -m "cuda or tensorrt" -rs
fi

for precision in $PRECISIONS; do
    step "class-scaling-$precision" dart bench class-scaling --synthetic "${SYNTH[@]}" --device "$DEVICE" \
        --precision "$precision" --classes-counts "$COUNTS" -o "$OUT/class-scaling-$precision"
done

python benchmarks/make_clip.py "$OUT/clip.mp4" "$FRAMES"
first=${PRECISIONS%% *}
step video dart bench video "$OUT/clip.mp4" --synthetic "${SYNTH[@]}" --device "$DEVICE" --precision "$first" \
    -c car truck bus person --max-frames "$FRAMES" -o "$OUT/video"

if python -c "import tensorrt" 2>/dev/null && [[ "$DEVICE" == cuda* ]]; then
    step engines python benchmarks/engines.py --workdir "$OUT/engines" --json "$OUT/engines.json"
else
    echo "== engines: skipped (needs TensorRT and CUDA)" | tee "$OUT/engines.log"
fi

if ((${#failed[@]})); then
    echo "failed steps: ${failed[*]} (logs in $OUT)"
    exit 1
fi
echo "all steps done; results in $OUT"
