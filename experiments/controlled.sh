#!/usr/bin/env bash
# The controlled experiments behind figures/ and figures/findings.md, on CPU.
#
#   bash experiments/controlled.sh [OUT]        # OUT defaults to runs/controlled
#
# Every FSDD comparison runs in six speaker folds: each of FSDD's six speakers is the test speaker
# once, the next speaker alphabetically validates (learning rate, clipping, checkpoint), and the
# other four train. Folds use 5 seeds (0-4), so the speaker is the unit of the headline intervals
# (n = 6); the distance task uses 10 seeds. Each sweep is resumable: re-running this script skips
# finished runs and finished sweeps. The wall time of each sweep is appended to OUT/wall_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/controlled}
# shellcheck disable=SC2206
SPEAKERS=(${GRADLAB_SPEAKERS:-george jackson lucas nicolas theo yweweler})  # the folds' test speakers
FOLDS=$(IFS=,; echo "${SPEAKERS[*]}")
FSDD="--dataset fsdd --data-dir ${GRADLAB_FSDD:-../shared/data/fsdd} --seeds 0,1,2,3,4 --workers 2 --no-progress --no-figures --out $OUT"
mkdir -p "$OUT"

source experiments/sweep.sh  # sweep, tuned, at_tuned (tuned settings from sweep fsdd-tuned)

# 1. Tuned cells: six RNN variants, learning rate and clipping chosen per cell and fold on that
#    fold's validation speaker (sigmoid and leaky relu answer question 1 beside tanh and relu).
sweep fsdd-tuned compare_cells $FSDD --test-speaker "$FOLDS" \
    --cells RNN_TANH,RNN_RELU,RNN_SIGMOID,RNN_LEAKY_RELU,LSTM,GRU \
    --lr 0.001,0.003,0.01 --clip-grad-norm none,1 --select-by validation

CLASSIC=RNN_TANH,RNN_RELU,LSTM,GRU
# 2. Interventions at the tuned settings. Silence: K frames after the clip (K = 0 is sweep 1), and
#    the clip's own silence moved before the word.
at_tuned fsdd-pad "$CLASSIC" --pad start
at_tuned fsdd-delay "$CLASSIC" --delay 16,64
# 3. Initialisation: IRNN for the relu RNN, forget-gate bias 1 and chrono for the LSTM, chrono for the GRU.
at_tuned fsdd-init RNN_RELU --init identity
at_tuned fsdd-init LSTM --init forget_bias,chrono
at_tuned fsdd-init GRU --init chrono
# 4. Readout: the mean of h_t over time instead of the last step.
at_tuned fsdd-mean "$CLASSIC" --readout mean
# 5. Training-set size: 25% and 50% of the training speakers' clips (100% is sweep 1).
at_tuned fsdd-fraction "$CLASSIC" --train-fraction 0.25,0.5
# 6. Training curves over 100 epochs, as in the coursework: RNN (tanh), LSTM and GRU at their tuned
#    settings, and all three at one shared learning rate.
at_tuned fsdd-curves RNN_TANH,LSTM,GRU --epochs 100
sweep fsdd-curves-shared compare_cells $FSDD --test-speaker "$FOLDS" --cells RNN_TANH,LSTM,GRU \
    --lr 0.003 --epochs 100
# 7. Matched sizes: about 4k and 16k parameters per cell, default learning rate.
sweep fsdd-matched compare_cells $FSDD --test-speaker "$FOLDS" --cells "$CLASSIC" --match-params 4000,16000

# 8. Synthetic, float64: the distance task over T, trained for 500 updates (500 sequences, batch 50,
#    50 epochs), each cell's learning rate chosen on validation per T. T stops at 200 to fit a
#    2-core machine. Float64 ensembles equal single runs within 1e-9, so seeds and rates train together.
DIST="--dataset distance --n-train 500 --n-validation 500 --n-test 1000 --batch-size 50 --epochs 50
      --dtype float64 --lr 0.003,0.01,0.03 --select-by validation --seeds 0,1,2,3,4,5,6,7,8,9 --workers 2
      --no-progress --no-figures --out $OUT --lengths 50,100,200"
ENSEMBLE=${ENSEMBLE:-auto} sweep length-distance sequence_length $DIST --cells "$CLASSIC"
ENSEMBLE=${ENSEMBLE:-auto} sweep length-distance-irnn sequence_length $DIST --cells RNN_RELU --init identity
ENSEMBLE=${ENSEMBLE:-auto} sweep length-distance-lstm-init sequence_length $DIST --cells LSTM --init forget_bias,chrono
