#!/usr/bin/env bash
# The whole toolkit on a generated keyword-spotting set, with the commands a user types.
# Run through `make demo`, which installs everything first. Settings can be overridden:
#   PER_WORD=150 SPEAKERS=150 BLOCK=se FEATURES=32 ... bash demo.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/demo}
LOGS=${LOGS:-log/demo}
PER_WORD=${PER_WORD:-150}
SPEAKERS=${SPEAKERS:-150}
TRAIN_ARGS=${TRAIN_ARGS:---block se --init-features 32 --batch-size 23 --lr 0.01 --num-stages 3 --max-epochs 8 --patience 2}

step() { echo; echo "\$ $*"; "$@"; }
started=$(date +%s)

step "$PY" -m samplecnn.synth "$DATA/scd/raw" --per-word "$PER_WORD" --speakers "$SPEAKERS"
step "$PY" build_dataset.py scd --data-dir "$DATA" --overwrite
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
step "$PY" train.py scd demo --data-dir "$DATA" --log-dir "$LOGS" $TRAIN_ARGS
run=$(ls -td "$LOGS"/*-scd-demo | head -n 1)
step "$PY" evaluate.py "$run" --output "$run/evaluate.json"
mapfile -t held_back < <(awk -F/ '!seen[$1]++' "$DATA/scd/raw/testing_list.txt" | head -n 5 | sed "s|^|$DATA/scd/raw/|")
step "$PY" predict.py "$run" "${held_back[@]}" --top-k 3 --output "$run/predictions.csv"

"$PY" - "$run" "$started" <<'PYTHON'
import json, pathlib, sys, time
run = pathlib.Path(sys.argv[1])
test = json.loads((run / "results.json").read_text())["test"]
minutes = (time.time() - int(sys.argv[2])) / 60
print(f"""
== samplecnn demo ({minutes:.1f} min after set-up)
test accuracy   {test['accuracy']:.4f}  (35 words, {test['clips']} held-out clips of unseen speakers)
macro F1        {test['f1']:.4f}
run directory   {run}
TensorBoard     tensorboard --logdir {run / 'tensorboard'}""")
PYTHON
