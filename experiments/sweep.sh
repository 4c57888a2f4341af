# Shared by the experiment shell scripts (source it after setting OUT, from the repository root).

sweep() {  # sweep NAME SCRIPT ARGS...: run one sweep (resuming it if it exists) and log its wall time
  local name=$1 script=$2 start=$SECONDS
  shift 2
  local resume=()
  [ -f "$OUT/$name/sweep.json" ] && resume=(--resume)
  # The committed runs trained one by one. ENSEMBLE=auto trains seeds as ensembles: float64 sweeps
  # then match within 1e-9, but float32 runs separate after a few epochs (rounding grows in training).
  # GRADLAB_SWEEP_ARGS is appended to every sweep (later flags win), e.g. "--executor submitit".
  # shellcheck disable=SC2086
  python "experiments/$script.py" "$@" ${GRADLAB_SWEEP_ARGS:-} --ensemble "${ENSEMBLE:-off}" --name "$name" "${resume[@]}"
  printf '%s\t%s\n' "$name" "$((SECONDS - start))" >> "$OUT/wall_times.tsv"
}

# FSDD at each fold's tuned settings (the scripts set OUT, SPEAKERS and FSDD before calling these).
tuned() {  # tuned CELL SPEAKER: "--lr X --clip-grad-norm Y" that fold's validation speaker chose for CELL
  # (in sweep $OUT/$TUNED, default fsdd-tuned)
  local choices=$OUT/${TUNED:-fsdd-tuned}.choices.tsv
  [ -f "$choices" ] || python - "$OUT/${TUNED:-fsdd-tuned}" > "$choices.tmp" <<'PY'
import sys
import pandas as pd
from gradlab.analysis import select_by_validation
summary = pd.read_parquet(f"{sys.argv[1]}/summary.parquet")  # validation columns only are read
chosen = select_by_validation(summary, group=("cell", "test_speaker"), grid=("lr", "clip_grad_norm"))
for row in chosen.itertuples():
    clip = "none" if row.clip_grad_norm != row.clip_grad_norm else row.clip_grad_norm
    print(f"{row.cell}\t{row.test_speaker}\t--lr {row.lr} --clip-grad-norm {clip}")
PY
  [ -f "$choices" ] || mv "$choices.tmp" "$choices"
  awk -F'\t' -v cell="$1" -v speaker="$2" '$1 == cell && $2 == speaker {print $3; found = 1}
      END {if (!found) {print "no tuned settings for " cell " in fold " speaker > "/dev/stderr"; exit 1}}' \
      "$choices"
}

at_tuned() {  # at_tuned NAME CELLS ARGS...: one sweep per cell and fold at that fold's tuned settings
  local name=$1 cells=$2
  shift 2
  for cell in ${cells//,/ }; do
    for speaker in "${SPEAKERS[@]}"; do
      local settings
      settings=$(tuned "$cell" "$speaker")
      sweep "$name-$cell-$speaker" compare_cells $FSDD --cells "$cell" --test-speaker "$speaker" $settings "$@"
    done
  done
}
