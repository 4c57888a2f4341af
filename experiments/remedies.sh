#!/usr/bin/env bash
# More vanishing-gradient remedies on the distance task, on CPU (not behind figures/findings.md; its
# sweeps load beside the controlled ones: python -m gradlab figures runs/controlled).
#
#   bash experiments/remedies.sh [OUT]        # OUT defaults to runs/controlled
#
# Compared against the default-init runs of controlled.sh's length-distance sweep at lr 0.01 and
# T = 200, seed for seed. Resumable; wall times are appended to OUT/wall_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/controlled}
mkdir -p "$OUT"

source experiments/sweep.sh

# Chrono init for the GRU over T, as controlled.sh's length-distance-lstm-init does for the LSTM.
DIST="--dataset distance --n-train 500 --n-validation 500 --n-test 1000 --batch-size 50 --epochs 50
      --dtype float64 --lr 0.003,0.01,0.03 --select-by validation --seeds 0,1,2,3,4,5,6,7,8,9 --workers 2
      --no-progress --no-figures --out $OUT --lengths 50,100,200"
ENSEMBLE=${ENSEMBLE:-auto} sweep length-distance-gru-init sequence_length $DIST --cells GRU --init chrono

# Remedies at T = 200 against the default runs at lr 0.01: Pascanu's Omega, and
#    gradient flossing (the leading exponent, every 10th step).
REMEDY="--dataset distance --n-train 500 --n-validation 500 --n-test 1000 --batch-size 50 --epochs 50
        --dtype float64 --lr 0.01 --seeds 0,1,2,3,4,5,6,7,8,9 --workers 2 --no-progress --no-figures
        --out $OUT --lengths 200 --cells RNN_TANH,LSTM,GRU"
sweep remedy-omega sequence_length $REMEDY --omega-weight 1
sweep remedy-floss sequence_length $REMEDY --floss-weight 1 --floss-every 10
