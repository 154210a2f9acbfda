#!/usr/bin/env bash
# `make demo`: voxid end to end, on the built-in espeak-ng + flite corpus or on
# DATA=path/to/speaker/folders. First with the shipped base model and no training: enrol two
# voices, identify a third utterance of one of them, reject a voice never enrolled. Then the
# second path: prepare, EDA, train, evaluate, calibrate, export to ONNX, and the same
# enrolment checks with the model trained here. Everything lands in $DEMO_OUT (default demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

OUT=${DEMO_OUT:-demo}
MODEL=${DEMO_MODEL:-crnn}
EPOCHS=${DEMO_EPOCHS:-10}          # about 20 s each on 2 idle cores
MINUTES=${DEMO_MINUTES:-15}        # a safety cap only: the epochs end the run
case "$MODEL" in
  crnn) FEATURES=logmel ;; ecapa|resnet34) FEATURES=fbank ;; seed_cnn) FEATURES=image ;;
  gmm) FEATURES=mfcc ;; *) echo "demo: unknown DEMO_MODEL=$MODEL" >&2; exit 2 ;;
esac
start=$SECONDS
step() { printf '\n\033[1;34m[%3ds] %s\033[0m\n' $((SECONDS - start)) "$*"; }
mkdir -p "$OUT"

if [ -z "${DATA:-}" ]; then
  DATA=$OUT/data
  export DEMO_SYNTHETIC=1
  step "Synthesising the demo corpus: 20 espeak-ng and 3 flite voices x 30 sentences -> $DATA"
  voxid demo-corpus "$DATA" --sentences 30
fi
[ -d "$DATA" ] || { echo "demo: DATA=$DATA is not a folder" >&2; exit 2; }

# Speakers held out of training: two are enrolled later (no retraining), one is a stranger
# who must come out as "unknown". On the built-in corpus the base model's three are flite's
# voices of real people and the trained model's three espeak-ng voices (demo_pick.py).
casts=()
[ "${DEMO_SYNTHETIC:-}" = 1 ] && casts=(--two-casts)
eval "$(python scripts/demo_pick.py "$DATA" "${casts[@]}")"
step "Held out of training: $HELD_OUT"

step "Out of the box: the shipped base model (no training) enrols $BASE_ENROL_A and $BASE_ENROL_B"
voxid models
rm -f "$OUT/base_speakers.db"
voxid enroll "$BASE_ENROL_A" "${BASE_FILES_A[0]}" "${BASE_FILES_A[1]}" -r "$OUT/base_speakers.db"
voxid enroll "$BASE_ENROL_B" "${BASE_FILES_B[0]}" "${BASE_FILES_B[1]}" -r "$OUT/base_speakers.db"
step "Base model: identifying a third utterance of $BASE_ENROL_A, and the stranger $BASE_STRANGER"
voxid identify "${BASE_FILES_A[2]}" -r "$OUT/base_speakers.db" --json > "$OUT/base_id_known.json"
voxid identify "$BASE_STRANGER_FILE" -r "$OUT/base_speakers.db" --json \
  > "$OUT/base_id_stranger.json"
voxid verify "$BASE_ENROL_A" "${BASE_FILES_A[2]}" -r "$OUT/base_speakers.db" --json \
  > "$OUT/base_verify.json"

step "Preparing $DATA -> $OUT/store.h5 ($FEATURES features, 1-s chunks, 70/15/15 split)"
voxid prepare "$DATA" -o "$OUT/store.h5" --features "$FEATURES" --split 0.7,0.15,0.15 \
  --exclude-speakers "$HELD_OUT" --workers 2

step "Exploring the corpus -> $OUT/report/eda"
voxid eda "$DATA" -o "$OUT/report/eda" --max-files 300

step "Training $MODEL ($EPOCHS epochs) -> $OUT/runs/$MODEL"
rm -rf "$OUT/runs/$MODEL"
voxid train "$MODEL" --data "$OUT/store.h5" -o "$OUT/runs/$MODEL" \
  epochs="$EPOCHS" max_minutes="$MINUTES"

step "Evaluating on the test split -> $OUT/report/eval"
voxid evaluate "$OUT/runs/$MODEL" --data "$OUT/store.h5" --split test -o "$OUT/report/eval"

MODEL_FILE="$OUT/runs/$MODEL"
if [ "$MODEL" != gmm ] && [ "$MODEL" != seed_cnn ]; then
  step "Calibrating the verification threshold on the val split (FAR 1%)"
  voxid calibrate "$OUT/runs/$MODEL" --data "$OUT/store.h5" --split val --far 0.01

  step "Exporting to ONNX -> $OUT/model.onnx"
  voxid export "$OUT/runs/$MODEL" --onnx "$OUT/model.onnx"
  MODEL_FILE="$OUT/model.onnx"

  step "Enrolling $ENROL_A and $ENROL_B (two utterances each) into $OUT/speakers.db"
  rm -f "$OUT/speakers.db"
  voxid enroll "$ENROL_A" "${FILES_A[0]}" "${FILES_A[1]}" -m "$MODEL_FILE" -r "$OUT/speakers.db"
  voxid enroll "$ENROL_B" "${FILES_B[0]}" "${FILES_B[1]}" -m "$MODEL_FILE" -r "$OUT/speakers.db"

  step "Identifying a third utterance of $ENROL_A, and the stranger $STRANGER"
  voxid identify "${FILES_A[2]}" -m "$MODEL_FILE" -r "$OUT/speakers.db" --json > "$OUT/id_known.json"
  voxid identify "$STRANGER_FILE" -m "$MODEL_FILE" -r "$OUT/speakers.db" --json > "$OUT/id_stranger.json"
  voxid verify "$ENROL_A" "${FILES_A[2]}" -m "$MODEL_FILE" -r "$OUT/speakers.db" --json > "$OUT/verify.json"
fi

step "Summary ($((SECONDS - start)) s)"
python scripts/demo_summary.py "$OUT" "$MODEL" "$ENROL_A" "$STRANGER" \
  "$BASE_ENROL_A" "$BASE_STRANGER"
