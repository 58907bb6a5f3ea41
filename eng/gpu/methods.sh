#!/usr/bin/env bash
# On the GPU machine: run each test method of one class in its own process with a time limit (finds a hang).
# Usage: methods.sh TESTEXE CLASS SECONDS METHOD...
set -uo pipefail
t=$1; c=$2; limit=$3; shift 3
for m in "$@"; do
  timeout "$limit" "$t" -method "$c.$m" > "/tmp/m-$m.log" 2>&1
  echo "$m rc=$? $(sed 's/\x1b\[[0-9;]*m//g' "/tmp/m-$m.log" | grep -aE 'Total:|\[FAIL\]' | tr -s ' ' | tr '\n' ' ')"
done
