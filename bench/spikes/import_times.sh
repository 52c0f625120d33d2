#!/usr/bin/env bash
# Cold import seconds (fresh process, median of 3) of the stack's heavy modules in each venv given: VENV...
# Usage: bash bench/spikes/import_times.sh .venv .venv-drift .venv-feast
set -u
mods=(numpy pandas lightgbm mlflow great_expectations bentoml feast alibi_detect.cd)
for venv in "$@"; do
  for m in "${mods[@]}"; do
    times=()
    for _ in 1 2 3; do
      t=$("$venv/bin/python" -c "import time;t=time.perf_counter();import $m;print(round(time.perf_counter()-t,2))" 2>/dev/null) || t=-
      times+=("$t")
    done
    med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
    echo "$venv $m median=${med}s runs=${times[*]} load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
