#!/usr/bin/env bash
# The controlled experiments behind figures/ and figures/findings.md, on CPU.
#
#   bash experiments/controlled.sh [OUT]        # OUT defaults to runs/controlled
#
# Each sweep is resumable: re-running this script skips finished runs. The wall
# time of each sweep is appended to OUT/wall_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/controlled}
SEEDS=0,1,2,3,4,5,6,7,8,9
FSDD="--dataset fsdd --data-dir ${GRADLAB_FSDD:-../shared/data/fsdd} --seeds $SEEDS --workers 2 --no-progress --no-figures --out $OUT"
mkdir -p "$OUT"

source experiments/sweep.sh

tuned() {  # tuned CELL: "--lr X --clip-grad-norm Y" of CELL's grid point with the best mean validation accuracy
  python - "$OUT/fsdd-tuned" "$1" <<'PY'
import sys
from gradlab.analysis import load_runs, select_by_validation
summary = load_runs(sys.argv[1]).summary
chosen = select_by_validation(summary, group=("cell",), grid=("lr", "clip_grad_norm")).set_index("cell").loc[sys.argv[2]]
clip = "none" if chosen["clip_grad_norm"] != chosen["clip_grad_norm"] else chosen["clip_grad_norm"]
print(f"--lr {chosen['lr']} --clip-grad-norm {clip}")
PY
}

# 1. Tuned cells: learning rate and clipping chosen on validation, per cell.
sweep fsdd-tuned compare_cells $FSDD --lr 0.0003,0.001,0.003,0.01 --clip-grad-norm none,1 --select-by validation

# 5. Readout: the mean of h_t over time, at each cell's tuned settings (last step is sweep 1).
for cell in RNN_TANH RNN_RELU LSTM GRU; do
  sweep "fsdd-mean-$cell" compare_cells $FSDD --cells "$cell" $(tuned "$cell") --readout mean
done

# 3. Initialisation controls at the tuned settings.
for cell in RNN_TANH RNN_RELU; do
  sweep "fsdd-init-$cell" compare_cells $FSDD --cells "$cell" $(tuned "$cell") --init orthogonal,identity
done
sweep fsdd-init-LSTM compare_cells $FSDD --cells LSTM $(tuned LSTM) --init forget_bias,chrono
sweep fsdd-init-GRU compare_cells $FSDD --cells GRU $(tuned GRU) --init chrono

# 4. Dose-response: K frames of silence after the clip (K = 0 is sweep 1), and silence before the word.
for cell in RNN_TANH RNN_RELU LSTM GRU; do
  sweep "fsdd-delay-$cell" compare_cells $FSDD --cells "$cell" $(tuned "$cell") --delay 16,64
done
for cell in RNN_TANH RNN_RELU LSTM GRU; do
  sweep "fsdd-pad-$cell" compare_cells $FSDD --cells "$cell" $(tuned "$cell") --pad start
done

# 2. Matched sizes: about 4k and 16k parameters per cell, default learning rate.
sweep fsdd-matched compare_cells $FSDD --match-params 4000,16000

# 6. Synthetic, float64: the distance task over T at default init, IRNN and chrono init
#    (500 training sequences and T <= 200, shrunk to fit a 2-core machine).
DIST="--dataset distance --n-train 500 --epochs 10 --lr 0.01 --dtype float64 --seeds $SEEDS --workers 2 --no-progress --no-figures --out $OUT --lengths 50,100,200"
sweep length-distance sequence_length $DIST
sweep length-distance-irnn sequence_length $DIST --cells RNN --init identity
sweep length-distance-chrono sequence_length $DIST --cells LSTM,GRU --init chrono

# 7. Remedies at T = 200 against the default runs of sweep 6: Pascanu's Omega, and gradient flossing
#    (the leading exponent, every 10th step).
REMEDY="--dataset distance --n-train 500 --epochs 10 --lr 0.01 --dtype float64 --seeds $SEEDS --workers 2 --no-progress --no-figures --out $OUT --lengths 200 --cells RNN_TANH,LSTM,GRU"
sweep remedy-omega sequence_length $REMEDY --omega-weight 1
sweep remedy-floss sequence_length $REMEDY --floss-weight 1 --floss-every 10
