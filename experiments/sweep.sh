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
