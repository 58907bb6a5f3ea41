#!/usr/bin/env bash
# On the GPU machine: the trellis acceptance figures of issue 3. Usage: trellis-acceptance.sh OUTDIR SECTION...
# Sections: throughput, table2-approx, table2-exact, table1. JSON results go to OUTDIR/json/ and a one-line summary
# per run to OUTDIR/trellis.log.
set -uo pipefail
Q=/tmp/q/qtip/qtip
out=$1; shift
mkdir -p "$out/json"
log="$out/trellis.log"
run() { # name, args...
  local name=$1; shift
  local t0=$(date +%s%N)
  if timeout 240 "$Q" bench distortion --backend cuda "$@" --json "$out/json/$name.json" > "$out/json/$name.txt" 2>&1; then
    echo "$name ($(( ($(date +%s%N) - t0) / 1000000 )) ms): $(grep -E "MSE|mse|seq" "$out/json/$name.txt" | tr -s ' ' | tr '\n' ' ' | cut -c1-400)" | tee -a "$log"
  else
    echo "$name: FAILED $(tail -3 "$out/json/$name.txt" | tr '\n' ' ')" | tee -a "$log"
  fi
}
for section in "$@"; do
  case $section in
    throughput)
      for th in 1024 512 256; do
        run tp-hyb-k2-t$th --code hyb --L 16 --bits 2 --sequences 16384 --threads $th
        run tp-3inst-k2-t$th --code 3inst --L 16 --bits 2 --sequences 16384 --scale 0.8934 --threads $th
      done
      for k in 3 4; do run tp-hyb-k$k --code hyb --L 16 --bits $k --sequences 16384; done ;;
    table2-approx)
      for k in 1 2 3 4; do run t2-approx-k$k --code lut --L 12 --bits $k --sequences 4096 --tail-biting approx; done ;;
    table2-exact)
      for k in 1 2 3 4; do run t2-exact-k$k --code lut --L 12 --bits $k --sequences 4096 --tail-biting exact; done ;;
    table1)
      for k in 2 3 4; do for c in 1mad 3inst hyb lut; do
        run t1-$c-k$k-search --code $c --L 16 --bits $k --sequences 4096 --scale search
      done; done
      run t1-3inst-k2-ref --code 3inst --L 16 --bits 2 --sequences 4096 --scale 0.8934 ;;
  esac
done
tar -C "$out" -czf "$out/trellis-json.tgz" json && rm -rf "$out/json"
