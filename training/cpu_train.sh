#!/usr/bin/env bash
# Resumable CPU continuation of the default model's grey branch, at the lowest priority (nice 19).
#
#   bash training/cpu_train.sh            # starts, or continues where the last run stopped
#
# Reads data_pack/nuclei_v2.npz and the grey branch's weights (INIT, default out/gpu_run2/grey_b16.safetensors:
# the PLAN=refine output of gpu_train.sh); writes out/cpu_grey/ (checkpoint with optimizer state and step every
# 5 minutes, EMA weights and a JSON log at the end of each invocation). Stop it any time (kill); run it again
# to continue. When its weights beat the shipped grey branch on the validation split (bench_sources.py), assemble
# them with training/assemble_default_v2.py.
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${INIT:-out/gpu_run2/grey_b16.safetensors}
OUT=${OUT:-out/cpu_grey}
mkdir -p "$OUT"
# nice only orders processes inside one scheduler autogroup (one per terminal session on Linux): lower this
# session's group too, or the run takes a full share of the CPU from whatever the user starts elsewhere.
echo 19 2>/dev/null > /proc/self/autogroup || true
OMP_NUM_THREADS=2 nice -n 19 "${PYTHON:-.venv/bin/python}" training/gpu_train.py --name grey_b16 --device cpu \
  --in-channels 1 --groups fluorescence,brightfield,tissue --init "$INIT" --lr 2e-4 --warmup 50 \
  --batch 16 --patch 256 --steps "${STEPS:-4000}" --seconds "${SECONDS_BUDGET:-86400}" --seed 21 \
  --checkpoint "$OUT/checkpoint.pt" --checkpoint-every 300 --out "$OUT"
