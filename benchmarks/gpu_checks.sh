#!/usr/bin/env bash
# Every measurement the book reports for a GPU, in one run of about ten minutes on one GPU:
#   benchmarks/gpu_checks.sh [OUTPUT_DIR]      (PY=python3 to use another interpreter)
# Each benchmark prints its device line, times and ratios; the outputs are kept in
# OUTPUT_DIR (default _build/gpu-checks), one file per benchmark. A failing benchmark is
# reported and the others still run; the exit status counts the failures.
set -uo pipefail
PY=${PY:-.venv/bin/python}
OUT_DIR=${1:-_build/gpu-checks}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 NNSA_PROGRESS=0
failures=0

bench() {  # name, seconds allowed, script and arguments
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    if ! timeout "$limit" "$PY" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"; then
        echo "!! $name failed or ran out of its $limit s" | tee -a "$OUT_DIR/$name.txt"
        failures=$((failures + 1))
    fi
}

"$PY" -c "import lib; print(lib.hardware.describe(lib.device()))" | tee "$OUT_DIR/device.txt"
bench sobol 120 benchmarks/bench_sobol.py --repeats 3
bench local 150 benchmarks/bench_local.py --repeats 2          # includes the full 224 px map
bench sobol_images 150 benchmarks/bench_sobol_images.py --arch small resnet18 vgg16 \
    --images 16 --size 96 --N 32 --chunk-size 4096 --repeats 2
bench cam 60 benchmarks/bench_cam.py --arch resnet18 vgg16
bench chunks 60 benchmarks/bench_chunks.py --blocks 16 64 128 256 512
bench train 120 benchmarks/bench_train.py --sizes 96 224
bench incremental 300 benchmarks/bench_incremental.py --device cuda --repeats 2 --full-map
exit "$failures"
