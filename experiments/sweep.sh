# Shared by the experiment shell scripts (source it after setting OUT, from the repository root).

sweep() {  # sweep NAME SCRIPT ARGS...: run one sweep (resuming it if it exists) and log its wall time
  local name=$1 script=$2 start=$SECONDS
  shift 2
  local resume=()
  [ -f "$OUT/$name/sweep.json" ] && resume=(--resume)
  python "experiments/$script.py" "$@" --name "$name" "${resume[@]}"
  printf '%s\t%s\n' "$name" "$((SECONDS - start))" >> "$OUT/wall_times.tsv"
}
