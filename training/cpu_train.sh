#!/usr/bin/env bash
# Resumable CPU continuation of one of the default model's two networks, at the lowest priority (nice 19).
#
#   bash training/cpu_train.sh                 # the grey network: starts, or continues where the last run stopped
#   BRANCH=colour bash training/cpu_train.sh   # the colour network
#
# Reads data_pack/nuclei_v2.npz and the network's weights (INIT, default out/gpu_run2/<name>.safetensors: the
# PLAN=refine output of gpu_train.sh; when that is missing, the bundled default model's network); writes OUT
# (default out/cpu_grey/ or out/cpu_colour/: checkpoint with optimizer state and step every 5 minutes, EMA
# weights and a JSON log at the end of each invocation). Stop it any
# time (kill); run it again to continue. To score it against the shipped model on the validation split:
#   python -m training.swap_branch --branch gray --weights out/cpu_grey/checkpoint.pt --out out/candidates/cpu
#   python -m benchmarks.bench_sources --models default out/candidates/cpu --inference tta
# and when it wins there, assemble it with training/assemble_default_v2.py.
set -euo pipefail
cd "$(dirname "$0")/.."
BRANCH=${BRANCH:-grey}
case "$BRANCH" in
  grey) NAME=grey_b16; PREFIX=gray.
    NETWORK_ARGS=(--in-channels 1 --groups fluorescence,brightfield,tissue --seed 21) ;;
  colour) NAME=colour_b16; PREFIX=colour.; NETWORK_ARGS=(--in-channels 3 --groups colour --seed 22) ;;
  *) echo "cpu_train.sh: BRANCH must be grey or colour, not '$BRANCH'" >&2; exit 2 ;;
esac
if [ -z "${INIT:-}" ] && [ ! -f "out/gpu_run2/$NAME.safetensors" ]; then  # a fresh checkout: the bundled network
  INIT_ARGS=(--init napari_unet/weights/default/model.safetensors --init-prefix "$PREFIX")
else
  INIT_ARGS=(--init "${INIT:-out/gpu_run2/$NAME.safetensors}")
fi
OUT=${OUT:-out/cpu_$BRANCH}
mkdir -p "$OUT"
# nice only orders processes inside one scheduler autogroup (one per terminal session on Linux): lower this
# session's group too, or the run takes a full share of the CPU from whatever the user starts elsewhere.
echo 19 2>/dev/null > /proc/self/autogroup || true
OMP_NUM_THREADS=2 nice -n 19 "${PYTHON:-.venv/bin/python}" -m training.gpu_train --name "$NAME" --device cpu \
  "${NETWORK_ARGS[@]}" "${INIT_ARGS[@]}" --lr "${LR:-2e-4}" --warmup 50 \
  --batch 16 --patch 256 --steps "${STEPS:-4000}" --seconds "${SECONDS_BUDGET:-86400}" \
  --checkpoint "$OUT/checkpoint.pt" --checkpoint-every 300 --out "$OUT"
