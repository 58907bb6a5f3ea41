#!/usr/bin/env bash
# On the GPU machine: run every test executable's GPU-trait tests (CUDA and OpenCL classes) and the CPU ones too.
# Usage: gpu-tests.sh OUTDIR [extra test filter args]
set -uo pipefail
q=/tmp/q/qtip
outdir=${1:-/tmp/out}; shift || true
mkdir -p "$outdir"
rc=0
for t in "$q"/Qtip.*.Tests; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  echo "== $name"
  "$t" --report-xunit-trx --results-directory "$outdir/tr" "$@" > "$outdir/$name.log" 2>&1 || rc=1
  tail -n 8 "$outdir/$name.log"
done
exit $rc
