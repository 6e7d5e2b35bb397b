#!/usr/bin/env bash
# The fine-tuning benchmark on kinds the parent model never trained on (run beside ../shared/data, ~20 min on
# 2 cores). Every weak real kind in ../shared trained the bundled default model, so its bench_hitl rows cannot
# show what a 2-image fine-tune does for an unseen kind; the previous default model (v1, commit 64630bf) trained
# on the 40 dsb2018/train images alone and has seen none of the held-out kinds' experiments.
#
#   bash benchmarks/unseen_kinds.sh [extra bench_hitl options]    -> out/v1_default/, out/hitl/v1_k2_120.json
#
# 1. v1's files out of git history -> out/v1_default/
# 2. its replay set: crops of its own training images (dsb2018_train), as the bundled model ships one of its own
# 3. bench_hitl with the shipped recipe, K = 2, 120 s at the pace hitl.json used
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODEL=out/v1_default
mkdir -p "$MODEL" out/hitl
for file in MODEL_CARD.md model.json model.safetensors model_card.json; do
  git show "64630bf:napari_unet/weights/default/$file" > "$MODEL/$file"
done
nice "$PY" -m training.make_replay_set --model "$MODEL" --source dsb2018_train --per-group fluorescence=16,colour=8 \
  --size 192 --sizes colour=256 --seed 0 --output "$MODEL/replay.npz"
nice "$PY" -m benchmarks.bench_hitl --model "$MODEL" --k 2 --seconds 120 --steps-per-second 4.57 --recipes shipped \
  --json "${JSON:-out/hitl/v1_k2_120.json}" "$@"
