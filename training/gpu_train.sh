#!/usr/bin/env bash
# One-command GPU training of the default-model v2 candidates (issue "Default model v2").
#
#   OUT=/some/folder [PLAN=refine|survey] [INIT_DIR=...] [TRAIN_SECONDS=380] bash training/gpu_train.sh
#
# Needs data_pack/nuclei_v2.npz (built here beside ../shared by `python -m training.data_pack build`,
# at most 45 MiB, ignored by git; carry it to the GPU machine). bf16 autocast and channels-last; every
# candidate trains for TRAIN_SECONDS of wall-clock, all at once on the one GPU.
# PLAN=refine (default) continues the shipped pair; PLAN=survey trains six candidates from scratch (done once,
# results in the model card: rerun it only to survey again):
#   rgb_b16       3-channel input (grey repeated), base 16, 3-class head, all four image groups
#   rgb_b32       the same at base 32 (weights saved as float16)
#   rgb_b16_dist  base 16 with a 4th output: distance to the object edge
#   rgb_b32_dist  base 32 with the distance output
#   grey_b16      1-channel, grey groups only (fluorescence, brightfield, tissue)
#   colour_b16    3-channel, colour images only (with grey_b16: the "two models" alternative)
# PLAN=refine continues grey_b16 and colour_b16 from INIT_DIR/<name>.safetensors (without INIT_DIR: the
# bundled default model's two networks) at a lower learning rate (EMA snapshots at half time as <name>_mid).
# Writes $OUT/<name>.safetensors (EMA weights, model config in the metadata), $OUT/train_log.json and,
# when RUN_GPU_CHECK=1 (default), $OUT/gpu_check.json from benchmarks/gpu_check.py (at most eight files).
# EXTRA_ARGS go to every run (e.g. "--limit 30 --batch 4 --patch 128" for a CPU smoke test).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output folder}"
TRAIN_SECONDS=${TRAIN_SECONDS:-380}
PACK=${PACK:-data_pack/nuclei_v2.npz}
LOGS=${LOGS:-/tmp/napari-unet-gpu-train}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$LOGS"

if [ ! -f "$PACK" ]; then
  echo "[gpu_train] $PACK is missing: build it beside ../shared with 'python -m training.data_pack build'" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

run() {  # run NAME ARGS... : one candidate in the background, its output in $LOGS/NAME.txt
  local name=$1; shift
  OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 "$PY" -m training.gpu_train --name "$name" --pack "$PACK" \
    --seconds "$TRAIN_SECONDS" --out "$OUT" --logs "$LOGS" "$@" ${EXTRA_ARGS:-} >"$LOGS/$name.txt" 2>&1 &
}
case "${PLAN:-refine}" in
  survey)  # six candidates from scratch
    run rgb_b16 --in-channels 3 --base-channels 16
    run rgb_b32 --in-channels 3 --base-channels 32
    run rgb_b16_dist --in-channels 3 --base-channels 16 --distance
    run rgb_b32_dist --in-channels 3 --base-channels 32 --distance
    run grey_b16 --in-channels 1 --base-channels 16 --groups fluorescence,brightfield,tissue --seed 1
    run colour_b16 --in-channels 3 --base-channels 16 --groups colour --seed 2
    ;;
  refine)  # the shipped pair (grey + colour model), continued from INIT_DIR/<name>.safetensors or, without
    # INIT_DIR, from the bundled default model's two networks (so a fresh checkout can run it)
    if [ -n "${INIT_DIR:-}" ]; then
      GREY_INIT=(--init "$INIT_DIR/grey_b16.safetensors"); COLOUR_INIT=(--init "$INIT_DIR/colour_b16.safetensors")
    else
      BUNDLED=napari_unet/weights/default/model.safetensors
      GREY_INIT=(--init "$BUNDLED" --init-prefix gray.); COLOUR_INIT=(--init "$BUNDLED" --init-prefix colour.)
    fi
    run grey_b16 --in-channels 1 --base-channels 16 --groups fluorescence,brightfield,tissue --seed 11 \
      "${GREY_INIT[@]}" --lr 1e-3 --warmup 100 --snapshot-at 0.5
    run colour_b16 --in-channels 3 --base-channels 16 --groups colour --seed 12 \
      "${COLOUR_INIT[@]}" --lr 1e-3 --warmup 100 --snapshot-at 0.5
    ;;
  *) echo "[gpu_train] unknown PLAN=${PLAN}; use survey or refine" >&2; exit 2 ;;
esac
wait

"$PY" - "$LOGS" "$OUT/train_log.json" <<'EOF'
import json, sys
from pathlib import Path
logs, out = Path(sys.argv[1]), Path(sys.argv[2])
merged = {}
for text in sorted(logs.glob("*.txt")):
    name = text.stem
    log = logs / f"{name}.json"
    merged[name] = json.loads(log.read_text()) if log.is_file() else {"error": text.read_text()[-3000:]}
    summary = {k: merged[name].get(k) for k in ("steps", "samples", "val_loss_live", "val_loss_ema", "error")}
    print(name, json.dumps(summary)[:600])
out.write_text(json.dumps(merged, indent=1))
EOF

if [ "${RUN_GPU_CHECK:-1}" = 1 ]; then
  timeout "${GPU_CHECK_SECONDS:-150}" "$PY" -m benchmarks.gpu_check --json "$OUT/gpu_check.json" | tail -c 3000
fi
ls -la "$OUT"
