#!/usr/bin/env bash
# The demo: set up nndet, then run the whole pipeline on the example task Task101_ToyShapes on
# the CPU: example data -> plan and preprocess -> train fold 0 -> tune -> predict the test
# split with box pictures -> score it. Data and models go to ./demo/ (override with
# NNDET_DATA / NNDET_MODELS). Training budget: DEMO_EPOCHS x DEMO_ITERS iterations.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

bash scripts/setup.sh
source "${NNDET_VENV:-.venv}/bin/activate"
export NNDET_DATA="${NNDET_DATA:-$PWD/demo/nndet_data}"
export NNDET_MODELS="${NNDET_MODELS:-$PWD/demo/nndet_models}"
epochs="${DEMO_EPOCHS:-20}"
iters="${DEMO_ITERS:-80}"

step() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }
step "nndet_example Task101"
nndet_example Task101
step "nndet_prep Task101 --target cpu"
nndet_prep Task101 --target cpu
step "nndet_train Task101 -f 0 --epochs $epochs --iters-per-epoch $iters (CPU budget)"
nndet_train Task101 -f 0 --epochs "$epochs" --iters-per-epoch "$iters"
step "nndet_sweep Task101"
nndet_sweep Task101
step "nndet_predict Task101 --test --png"
nndet_predict Task101 --test --png
step "nndet_eval Task101 --test"
nndet_eval Task101 --test

model_dir=$(ls -d "$NNDET_MODELS"/Task101_*/retina_unet_2d)
echo
echo "=== done in $(( $(date +%s) - start ))s"
echo "training curves:   $model_dir/fold0/progress.png"
echo "test predictions:  $model_dir/test_predictions/ (metrics.json, predictions.csv)"
echo "box pictures:      $model_dir/test_predictions/png/"
