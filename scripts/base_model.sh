#!/usr/bin/env bash
# `make base-model`: rebuild voxid's shipped base encoder from ../shared/data, through the
# project's own commands, in seven stages (MODEL_CARD.md, Recipe):
#   1. the base recipe from scratch: 10 epochs on the voices at three speeds;
#   2. from stage 1: 7 epochs on the voices at five warps (speed and VTLP 0.9, 1.1),
#      distilled from Resemblyzer's encoder, a share of the clips narrowband;
#   3. from stage 2: 5 epochs on the voices at nine warps (speed and VTLP 0.85, 0.9, 1.1,
#      1.15), distilled and narrowband as in stage 2;
#   4. from stage 3: 4 epochs on the voices at nine outer warps (speed and VTLP 0.8, 0.85,
#      1.15, 1.2), distilled and narrowband as before;
#   5. from stage 4: 3 epochs on the voices at 13 warps (speed and VTLP 0.75, 0.8, 0.85,
#      1.15, 1.2, 1.25), distilled and narrowband as before;
#   6. from stage 5: 3 epochs on the voices at 13 outer warps (speed and VTLP 0.7, 0.75,
#      0.8, 1.2, 1.25, 1.3), distilled and narrowband as before;
#   7. from stage 6: 3 epochs on the voices at 17 warps (stage 6's and speed and VTLP 1.35,
#      1.4), distilled and narrowband as before.
# Resumable: run it again after an interruption and it continues (stores and teacher
# targets are kept, training resumes from last.ckpt, a finished stage is kept).
#
#   SHARED=../shared/data  corpora folder       BASE_DIR=runs/base  work folder
#   DISTILL=0              stage 1 also distils (measured: no better, see MODEL_CARD.md)
#   STAGES=7               1 to 6: ship that stage (models shipped before)
#   EXTRA="epochs=12"      more stage-1 recipe overrides
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${SHARED:-../shared/data}
BASE_DIR=${BASE_DIR:-runs/base}
DISTILL=${DISTILL:-0}
STAGES=${STAGES:-7}
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
teacher() {
  if ! $PY -c "import resemblyzer" 2>/dev/null; then
    .venv/bin/pip install -q webrtcvad-wheels && .venv/bin/pip install -q --no-deps resemblyzer
  fi
  [ -f "$1.resemblyzer.npz" ] || $VOXID teacher "$1"
}
overrides=("augment.real_noise_dir=$SHARED/noise")
if [ "$DISTILL" = 1 ]; then
  teacher "$STORE"
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

# Stages 2 to 7: a store of the same voices at more warps (each warped copy a new
# speaker), Resemblyzer's embeddings of every clip as a second target, 30 % of the clips
# low-passed at 3.4-4 kHz, trained on from the previous stage's weights.
#   warp_stage STORE RUN INIT WARPS EPOCHS LR
warp_stage() {
  local store=$1 run=$2 init=$3 warps=$4 epochs=$5 lr=$6
  if [ ! -f "$store" ]; then
    $VOXID prepare "$SHARED/librispeech-100" "$SHARED/speechcommands" "$SHARED/cv-fa" \
      -o "$store" --features waveform --chunk 1.0 --tail keep --min-tail 0.3 \
      --split 0.95,0.05,0 --heldout-speakers 40 --speaker-augment "$warps" --workers 2
  fi
  teacher "$store"
  if [ ! -f "$run/metrics.json" ]; then
    resume=()
    [ -f "$run/last.ckpt" ] && resume=(--resume)
    $VOXID train base --data "$store" -o "$run" -q "${resume[@]}" "init=$init" \
      "distill_targets=$store.resemblyzer.npz" distill_weight=10 "epochs=$epochs" "lr=$lr" \
      "augment.real_noise_dir=$SHARED/noise" augment.narrowband_prob=0.3
  fi
}

# 4. Stage 2: five warps (speed 0.9/1.1 change pitch and tempo, VTLP 0.9/1.1 the vocal
#    tract alone), from stage 1 at half its learning rate, 7 epochs.
SHIP=$RUN
if [ "$STAGES" -ge 2 ]; then
  warp_stage "$BASE_DIR/store-warps.h5" "$BASE_DIR/run2" "$RUN" \
    speed_0.9,speed_1.1,vtlp_0.9,vtlp_1.1 7 1.0e-3
  SHIP=$BASE_DIR/run2
  STORE=$BASE_DIR/store-warps.h5
fi

# 5. Stage 3: nine warps (0.85 and 1.15 added: voices stage 2 never
#    heard; 0.95 and 1.05 would be too near the natural voice to be other speakers), from
#    stage 2 at a lower learning rate, 5 epochs.
if [ "$STAGES" -ge 3 ]; then
  warp_stage "$BASE_DIR/store-warps9.h5" "$BASE_DIR/run3" "$BASE_DIR/run2" \
    speed_0.85,speed_0.9,speed_1.1,speed_1.15,vtlp_0.85,vtlp_0.9,vtlp_1.1,vtlp_1.15 5 7.0e-4
  SHIP=$BASE_DIR/run3
  STORE=$BASE_DIR/store-warps9.h5
fi

# 6. Stage 4: the natural voices and the outer warps, 0.8 and 1.2 added
#    (pseudo-voices stage 3 never heard) and 0.9/1.1 dropped (stage 2's, heard for 12
#    epochs), from stage 3, 4 epochs.
if [ "$STAGES" -ge 4 ]; then
  warp_stage "$BASE_DIR/store-warps4.h5" "$BASE_DIR/run4" "$BASE_DIR/run3" \
    speed_0.8,speed_0.85,speed_1.15,speed_1.2,vtlp_0.8,vtlp_0.85,vtlp_1.15,vtlp_1.2 4 7.0e-4
  SHIP=$BASE_DIR/run4
  STORE=$BASE_DIR/store-warps4.h5
fi

# 7. Stage 5: 13 warps, 0.75 and 1.25 added (pseudo-voices no stage heard) beside stage
#    4's, from stage 4, 3 epochs.
if [ "$STAGES" -ge 5 ]; then
  warp_stage "$BASE_DIR/store-warps5.h5" "$BASE_DIR/run5" "$BASE_DIR/run4" \
    speed_0.75,speed_0.8,speed_0.85,speed_1.15,speed_1.2,speed_1.25,vtlp_0.75,vtlp_0.8,vtlp_0.85,vtlp_1.15,vtlp_1.2,vtlp_1.25 \
    3 7.0e-4
  SHIP=$BASE_DIR/run5
  STORE=$BASE_DIR/store-warps5.h5
fi

# 8. Stage 6: the natural voices and the outermost warps, 0.7 and 1.3
#    added (pseudo-voices no stage heard) and 0.85/1.15 dropped (heard since stage 3), from
#    stage 5, 3 epochs.
if [ "$STAGES" -ge 6 ]; then
  warp_stage "$BASE_DIR/store-warps6.h5" "$BASE_DIR/run6" "$BASE_DIR/run5" \
    speed_0.7,speed_0.75,speed_0.8,speed_1.2,speed_1.25,speed_1.3,vtlp_0.7,vtlp_0.75,vtlp_0.8,vtlp_1.2,vtlp_1.25,vtlp_1.3 \
    3 7.0e-4
  SHIP=$BASE_DIR/run6
  STORE=$BASE_DIR/store-warps6.h5
fi

# 9. Stage 7 (the shipped model): stage 6's warps and the highest, 1.35 and 1.4 (VTLP's
#    limit; pseudo-voices no stage heard), from stage 6, 3 epochs.
if [ "$STAGES" -ge 7 ]; then
  warp_stage "$BASE_DIR/store-warps7.h5" "$BASE_DIR/run7" "$BASE_DIR/run6" \
    speed_0.7,speed_0.75,speed_0.8,speed_1.2,speed_1.25,speed_1.3,speed_1.35,speed_1.4,vtlp_0.7,vtlp_0.75,vtlp_0.8,vtlp_1.2,vtlp_1.25,vtlp_1.3,vtlp_1.35,vtlp_1.4 \
    3 7.0e-4
  SHIP=$BASE_DIR/run7
  STORE=$BASE_DIR/store-warps7.h5
fi

# 10. Ship: the encoder alone (float16 weights), short speech embedded repeated to 2 s in
#     one pass, an LDA projection fitted on the training speakers with their means as an
#     AS-norm cohort, the threshold calibrated on the held-out speakers at FAR 1 % (both on
#     recordings embedded that way), exported to ONNX, copied into src/voxid/pretrained/.
$PY scripts/ship_base.py "$SHIP" --data "$STORE" --lda --min-input-seconds 2
echo "base-model: done; measure it with: .venv/bin/python bench/bench_zeroshot.py --data $SHARED"
