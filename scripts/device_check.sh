#!/usr/bin/env bash
# One call on the GPU machine: install, build checks, conformance, benchmarks.
# Usage (repo root, on the device): bash scripts/device_check.sh [conformance|bench|all]
# Logs go to $OUT (or ./device-out when OUT is unset).
set -uo pipefail
what=${1:-all}
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q -e . --no-deps --no-build-isolation >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee "$out/commit.txt"
status=0
python3 -m mglu info --dtype bfloat16 2>&1 | tee "$out/info.txt"
if [[ $what == conformance || $what == all ]]; then
  python3 -m mglu conformance --device cuda 2>&1 | tee "$out/conformance.txt"
  status=$(( status | ${PIPESTATUS[0]} ))
fi
if [[ $what == bench || $what == all ]]; then
  for preset in paper decode; do
    start=$(date +%s)
    python3 -m mglu bench --preset "$preset" --json "$out/bench_$preset.json" --plot "$out/bench_$preset.png" 2>&1 | tee "$out/bench_$preset.txt"
    status=$(( status | ${PIPESTATUS[0]} ))
    echo "preset $preset took $(( $(date +%s) - start )) s" | tee -a "$out/bench_$preset.txt"
  done
fi
exit $status
