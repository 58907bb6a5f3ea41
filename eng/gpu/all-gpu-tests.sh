#!/usr/bin/env bash
# On the GPU machine: every GPU-trait test class (CUDA and OpenCL), one class per process with its own time limit, so
# a hang or a native abort names its class. Usage: all-gpu-tests.sh OUTDIR [SECONDS_PER_CLASS]
set -uo pipefail
q=/tmp/q/qtip
out=$1; limit=${2:-120}
mkdir -p "$out/classes"
summary="$out/gpu-tests.txt"
for t in "$q"/Qtip.*.Tests; do
  [ -x "$t" ] || continue
  classes=$("$t" -list classes -trait "Category=Gpu" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -E '^\s*Qtip\.' | tr -d ' ')
  for c in $classes; do
    log="$out/classes/$c.log"
    timeout "$limit" "$t" -class "$c" > "$log" 2>&1
    rc=$?
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -aE 'Total:' | tail -1 | sed -E 's/^\s+//')
    echo "$c rc=$rc ${line:-no summary}" | tee -a "$summary"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -aE '\[FAIL\]|Assertion' | head -5 | tee -a "$summary"
  done
done
tar -C "$out" -czf "$out/gpu-test-logs.tgz" classes && rm -rf "$out/classes"
