#!/usr/bin/env bash
# On the GPU machine, from the repository root (with .gpu/qtip.tar.xz unpacked and .gpu/llama-small.tar.xz carried):
# the runtime and pipeline acceptance figures (issues 4 and 5). Usage: pipeline-acceptance.sh OUTDIR SECTION...
# Sections: runtime, decode, quant-main, quant-seeds, rtn, ablations, sequential, tests-cuda.
# Results: OUTDIR/pipeline.log (one line per run) and OUTDIR/pipeline-json.tgz (every --json file and log).
set -uo pipefail
Q=/tmp/q/qtip/qtip
out=$1; shift
repo=$PWD
mkdir -p "$out/json"
log="$out/pipeline.log"
small=/tmp/llama-small
[ -d $small ] || tar -C /tmp -xJf .gpu/llama-small.tar.xz
valid=$repo/data/corpus/valid.txt
calib=$repo/data/corpus/calib.txt
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
line() { echo "$*" | tee -a "$log"; }
evalm() { # name model
  local t0=$(date +%s%N)
  if timeout 300 $Q eval --model "$2" --data "$valid" --ctx 512 --backend cuda --json "$out/json/eval-$1.json" > "$out/json/eval-$1.txt" 2>&1; then
    line "eval $1 ($(ms $t0) ms): $(python3 -c "import json;d=json.load(open('$out/json/eval-$1.json'));print('ppl', round(d.get('perplexity', d.get('ppl', 0)), 4), 'windows', d.get('windows'), 'tok/s', round(d.get('tokens_per_second', 0)))" 2>/dev/null || tail -2 "$out/json/eval-$1.txt")"
  else line "eval $1: FAILED $(tail -2 "$out/json/eval-$1.txt" | tr '\n' ' ')"; fi
}
quant() { # name args...
  local name=$1; shift
  local t0=$(date +%s%N)
  if timeout 400 $Q quantize --model $small --out /tmp/q-$name --calib "$calib" --backend cuda --force --json "$out/json/quant-$name.json" "$@" > "$out/json/quant-$name.txt" 2>&1; then
    line "quant $name ($(ms $t0) ms): $(grep -E "bits/weight|mean proxy|time: (hessians|prepare|BlockLDLQ|total)" "$out/json/quant-$name.txt" | tr -s ' ' | tr '\n' '|')"
    evalm "$name" /tmp/q-$name
  else line "quant $name: FAILED $(tail -3 "$out/json/quant-$name.txt" | tr '\n' ' ')"; fi
}
for section in "$@"; do
  case $section in
    runtime)
      evalm nano-fp "$repo/models/llama-nano"
      evalm small-fp $small
      for m in nano small; do
        dir=$small; [ $m = nano ] && dir=$repo/models/llama-nano
        i=0
        for p in "The" "Fellow-Citizens of the Senate and of the House of Representatives:" "It is a truth universally acknowledged, that"; do
          $Q generate --model $dir --prompt "$p" -n 40 --ignore-eos --backend cuda --json "$out/json/gen-$m-$i.json" > "$out/json/gen-$m-$i.txt" 2>&1 \
            && line "generate $m $i: $(python3 -c "import json;print(json.load(open('$out/json/gen-$m-$i.json'))['generated_ids'])")" \
            || line "generate $m $i: FAILED $(tail -2 "$out/json/gen-$m-$i.txt" | tr '\n' ' ')"
          i=$((i+1))
        done
      done ;;
    decode)
      timeout 300 $Q bench decode --backend cuda --json "$out/json/bench-decode-7b.json" > "$out/json/bench-decode-7b.txt" 2>&1; line "bench decode 7B: $(tail -25 "$out/json/bench-decode-7b.txt" | tr -s ' ' | tr '\n' '|')" ;;
    quant-main)
      quant hyb4 --code hyb --bits 4
      quant hyb3 --code hyb --bits 3
      quant hyb2 --code hyb --bits 2
      quant 3inst2 --code 3inst --bits 2
      quant 1mad2 --code 1mad --bits 2 ;;
    quant-seeds)
      quant hyb2-s1 --code hyb --bits 2 --seed 1
      quant hyb2-s2 --code hyb --bits 2 --seed 2 ;;
    rtn)
      for b in 4 3 2; do quant rtn$b --method rtn --bits $b; done ;;
    ablations)
      quant hyb2-norht --code hyb --bits 2 --no-rht
      quant hyb2-nohess --code hyb --bits 2 --no-hessian ;;
    sequential)
      quant hyb2-seq --code hyb --bits 2 --sequential ;;
    scales)
      for so in 0.8 0.95 1.0; do quant hyb2-so$so --code hyb --bits 2 --scale-override $so; done ;;
    extra) # EXTRA="name=args|name=args"
      IFS='|' read -ra specs <<< "${EXTRA:-}"
      for spec in "${specs[@]}"; do name=${spec%%=*}; args=${spec#*=}; quant "$name" $args; done ;;
    tests-cuda)
      QTIP_LLAMA_SMALL=$small timeout 400 /tmp/q/qtip/gpu-tests.sh "$out" -class "*Cuda" > /dev/null
      line "tests (CUDA classes): $(grep -aE 'Total:|\[FAIL\]' "$out/tests.log" | tr -s ' ' | tr '\n' '|')" ;;
  esac
done
tar -C "$out" -czf "$out/pipeline-json.tgz" json && rm -rf "$out/json"
