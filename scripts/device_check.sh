#!/usr/bin/env bash
# One call on a GPU machine: install, info, conformance on CUDA, an independent SwiGLU
# timing, and the paper and decode bench presets (JSON + PNG each).
# Usage, from the repo root: bash scripts/device_check.sh [conformance|bench|all] [COMMIT]
# COMMIT is recorded where the copy has no .git (the device tool sends no history).
# Writes $OUT/run.log, $OUT/bench_{paper,decode}.{json,png} (./device-out without $OUT).
set -uo pipefail
what=${1:-all}
export MGLU_GIT_COMMIT=${2:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
out=${OUT:-device-out}
log="$out/run.log"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q -e . --no-deps --no-build-isolation >>"$log" 2>&1 || { cat "$log"; exit 1; }
{ echo "commit $MGLU_GIT_COMMIT"; date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; } 2>&1 | tee -a "$log"
status=0
python3 -m mglu info --dtype bfloat16 2>&1 | tee -a "$log"
if [[ $what == conformance || $what == all ]]; then
  python3 -m mglu conformance --device cuda 2>&1 | tee -a "$log"
  status=$(( status | ${PIPESTATUS[0]} ))
fi
if [[ $what == bench || $what == all ]]; then
  python3 scripts/swiglu_independent.py 2>&1 | tee -a "$log"
  for preset in paper decode; do
    start=$(date +%s)
    python3 -m mglu bench --preset "$preset" --json "$out/bench_$preset.json" --plot "$out/bench_$preset.png" 2>&1 | tee -a "$log"
    status=$(( status | ${PIPESTATUS[0]} ))
    echo "preset $preset took $(( $(date +%s) - start )) s" | tee -a "$log"
  done
fi
exit $status
