#!/usr/bin/env bash
# `make base-model`: rebuild voxid's shipped base encoder from ../shared/data, through the
# project's own commands. Resumable: run it again after an interruption and it continues
# (the store and teacher targets are kept, training resumes from last.ckpt).
#
#   SHARED=../shared/data  corpora folder       BASE_DIR=runs/base  work folder
#   DISTILL=0              1: also distil from Resemblyzer's encoder (measured: no better on
#                          zero-shot sets, see MODEL_CARD.md; the shipped model has DISTILL=0)
#   EXTRA="epochs=12"      more recipe overrides
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${SHARED:-../shared/data}
BASE_DIR=${BASE_DIR:-runs/base}
DISTILL=${DISTILL:-0}
EXTRA=${EXTRA:-}
VOXID=.venv/bin/voxid
PY=.venv/bin/python
STORE=$BASE_DIR/store.h5
RUN=$BASE_DIR/run

for corpus in librispeech-100 speechcommands cv-fa noise; do
  [ -d "$SHARED/$corpus" ] || { echo "base-model: $SHARED/$corpus is missing" >&2; exit 1; }
done
mkdir -p "$BASE_DIR"

# 1. The store: every licence-clean voice (no asc30: the protocols' test speakers stay
#    unseen), speech only, 1-s chunks (shorter tails kept from 0.3 s), 40 random speakers
#    held out whole for choosing epochs by EER, speed-perturbed copies as new speakers.
if [ ! -f "$STORE" ]; then
  $VOXID prepare "$SHARED/librispeech-100" "$SHARED/speechcommands" "$SHARED/cv-fa" \
    -o "$STORE" --features waveform --chunk 1.0 --tail keep --min-tail 0.3 \
    --split 0.95,0.05,0 --heldout-speakers 40 --speaker-augment speed_0.9,speed_1.1 \
    --workers 2
fi

# 2. The teacher's embeddings of every training clip (distillation).
overrides=("augment.real_noise_dir=$SHARED/noise")
if [ "$DISTILL" = 1 ]; then
  if ! $PY -c "import resemblyzer" 2>/dev/null; then
    .venv/bin/pip install -q webrtcvad-wheels && .venv/bin/pip install -q --no-deps resemblyzer
  fi
  [ -f "$STORE.resemblyzer.npz" ] || $VOXID teacher "$STORE"
  overrides+=("distill_targets=$STORE.resemblyzer.npz" "distill_weight=10")
fi
# shellcheck disable=SC2206
overrides+=($EXTRA)

# 3. Train, or resume an interrupted run; a finished run is kept.
if [ ! -f "$RUN/metrics.json" ]; then
  resume=()
  [ -f "$RUN/last.ckpt" ] && resume=(--resume)
  $VOXID train base --data "$STORE" -o "$RUN" -q "${resume[@]}" "${overrides[@]}"
fi

# 4. Ship: the encoder alone (float16 weights), an LDA projection fitted on the training
#    speakers with their means as an AS-norm cohort, the threshold calibrated on the
#    held-out speakers at FAR 1 %, exported to ONNX, copied into src/voxid/pretrained/.
$PY scripts/ship_base.py "$RUN" --data "$STORE" --lda
echo "base-model: done; measure it with: .venv/bin/python bench/bench_zeroshot.py --data $SHARED"
