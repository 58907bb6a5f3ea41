#!/usr/bin/env bash
# On the GPU machine, from the repository root with .gpu/qtip.tar.xz carried: every GPU-trait test class, each Cuda class
# first, then each OpenCL class, one process per class, within BUDGET seconds (default 420); the summary is
# $OUT/gpu-tests.txt (class, exit status, xunit totals, the first failures). Usage: BUDGET=400 eng/gpu/gpu-test-classes.sh
set -uo pipefail
mkdir -p /tmp/q && tar -C /tmp/q -xJf .gpu/qtip.tar.xz
q=/tmp/q/qtip
end=$(( $(date +%s) + ${BUDGET:-420} ))
for backend in Cuda OpenCL; do
  for t in "$q"/Qtip.*.Tests; do
    [ -x "$t" ] || continue
    for c in $("$t" -list classes -trait "Category=Gpu" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -E "^\s*Qtip\..*$backend\s*$" | tr -d ' '); do
      left=$(( end - $(date +%s) )); [ $left -lt 10 ] && { echo "$c not run (time)" >> $OUT/gpu-tests.txt; continue; }
      lim=$(( left < 90 ? left : 90 ))
      timeout $lim "$t" -class "$c" > /tmp/c.log 2>&1; rc=$?
      echo "$c rc=$rc $(sed 's/\x1b\[[0-9;]*m//g' /tmp/c.log | grep -aE 'Total:' | tail -1 | sed -E 's/^\s+//')" >> $OUT/gpu-tests.txt
      sed 's/\x1b\[[0-9;]*m//g' /tmp/c.log | grep -aE -A3 '\[FAIL\]' | head -12 >> $OUT/gpu-tests.txt
    done
  done
done
grep -c "rc=0" $OUT/gpu-tests.txt; grep -v "rc=0" $OUT/gpu-tests.txt | head -40
