#!/usr/bin/env bash
# On the GPU machine: run every published test executable with the given filter (default: the GPU-trait classes,
# i.e. CUDA and OpenCL), appending all output to OUTDIR/tests.log. Usage: gpu-tests.sh OUTDIR [filter args]
set -uo pipefail
q=/tmp/q/qtip
outdir=${1:-/tmp/out}; shift || true
mkdir -p "$outdir"
[ $# -gt 0 ] || set -- -trait "Category=Gpu"
rc=0
for t in "$q"/Qtip.*.Tests; do
  [ -x "$t" ] || continue
  echo "== $(basename "$t")" | tee -a "$outdir/tests.log"
  "$t" "$@" >> "$outdir/tests.log" 2>&1 || rc=1
  grep -aE "\[FAIL\]|Total:" "$outdir/tests.log" | tail -n 12
done
exit $rc
