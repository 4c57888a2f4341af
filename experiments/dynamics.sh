#!/usr/bin/env bash
# Lyapunov spectra beside measured gradient decay, on CPU (figures/ and the findings' dynamics section).
#
#   bash experiments/dynamics.sh [OUT]        # OUT defaults to runs/controlled
#
# The spectrum is recorded at initialisation and after the last step (--lyapunov-every larger
# than any run). Resumable; wall times are appended to OUT/wall_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/controlled}
SEEDS=0,1,2,3,4,5,6,7,8,9
COMMON="--seeds $SEEDS --no-progress --no-figures --out $OUT --lyapunov-every 1000000"
mkdir -p "$OUT"

source experiments/sweep.sh

# FSDD at the default settings: the spectrum at initialisation and after 30 epochs.
sweep fsdd-lyapunov compare_cells --dataset fsdd --data-dir "${GRADLAB_FSDD:-../shared/data/fsdd}" $COMMON
# The distance task at initialisation (one epoch): exponents against the gradient's decay per step over T.
sweep length-distance-lyapunov sequence_length --dataset distance --n-train 500 --epochs 1 --dtype float64 \
    --lengths 50,100,200 $COMMON
