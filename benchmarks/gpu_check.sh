#!/usr/bin/env bash
# The GPU check, one command on a machine with CUDA (PyTorch, numpy, scipy, scikit-image, tifffile, safetensors):
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh
#
# 1. the gpu test tier (tests/core/test_gpu.py) -> $OUT/gpu_tests.txt
# 2. benchmarks/gpu_check.py: network and end-to-end MPx/s at 4096², network at 16384² and with 4 to 32 tiles
#    per pass, one-pass against pipelined post-processing at 4096² (labels compared, also with the CPU path),
#    a 10 s fine-tune
#    -> $OUT/gpu_check.json (commit it as benchmarks/results/gpu_check.json)
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output folder}"
PY=${PYTHON:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout "${GPU_TESTS_SECONDS:-180}" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/core/test_gpu.py 2>&1 \
  | tee "$OUT/gpu_tests.txt" | tail -n 5
timeout "${GPU_BENCH_SECONDS:-240}" "$PY" -m benchmarks.gpu_check --sizes 4096 --network-sizes 16384 \
  --json "$OUT/gpu_check.json" | tail -c 2500
