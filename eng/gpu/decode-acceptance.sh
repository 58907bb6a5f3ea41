#!/usr/bin/env bash
# On the GPU machine, from the repository root with .gpu-*/qtip.tar.xz unpacked to /tmp/q: the quantized-decode
# figures of issue 9. Usage: decode-acceptance.sh OUTDIR SECTION...
# Sections: tests (CUDA + OpenCL trellis matvec tests), gate (quantize llama-nano at L = 16 per code, eval + greedy
# generate on CUDA; checkpoints copied to OUTDIR for the CPU comparison), matvec (per-kernel GB/s), decode7b
# (fp16 + every code/K at the 7B shape), decode70b (HYB 2-bit at the 70B shape), quick (fp16 + HYB-2 at 7B).
set -uo pipefail
Q=/tmp/q/qtip/qtip
out=$1; shift
mkdir -p "$out/json"
log="$out/decode.log"
line() { echo "$*" | tee -a "$log"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$log"
summ() { python3 - "$1" <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
print(f"{d['weights']}: {d['tokens_per_second']:.1f} tok/s, bound {d['bound_tokens_per_second']:.1f} ({d['ratio_to_bound']*100:.1f} %), copy {d['copy_g_bps']:.0f} GB/s, launches {d['launches_per_token']}, host {d['host_launch_microseconds_per_token']:.0f} us/token, sum-ops {d['sum_of_ops_microseconds_per_token']:.0f} us")
PY
}
dec() { # name args...
  local name=$1; shift
  if timeout 300 $Q bench decode --backend cuda --prefill-ctx 0 --json "$out/json/decode-$name.json" "$@" > "$out/json/decode-$name.txt" 2>&1; then
    line "decode $name: $(summ "$out/json/decode-$name.json")"
  else line "decode $name: FAILED $(tail -3 "$out/json/decode-$name.txt" | tr '\n' ' ')"; fi
}
for s in "$@"; do
  case $s in
    tests)
      for c in Qtip.Quant.Tests.Trellis.TrellisMatVecTestsCuda Qtip.Quant.Tests.Trellis.TrellisMatVecTestsOpenCL; do
        timeout 300 /tmp/q/qtip/Qtip.Quant.Tests -class $c > "$out/test-$c.log" 2>&1
        line "test $c rc=$? $(sed 's/\x1b\[[0-9;]*m//g' "$out/test-$c.log" | grep -aE 'Total:|\[FAIL\]|Skip' | head -5 | tr '\n' ' ')"
      done
      for c in ${EXTRA_TEST_CLASSES:-}; do
        t=/tmp/q/qtip/${c%%.[A-Z]*[a-z]Tests*}; t=/tmp/q/qtip/$(echo $c | cut -d. -f1-3)
        timeout 300 $t -class $c > "$out/test-$c.log" 2>&1
        line "test $c rc=$? $(sed 's/\x1b\[[0-9;]*m//g' "$out/test-$c.log" | grep -aE 'Total:|\[FAIL\]' | head -5 | tr '\n' ' ')"
      done ;;
    gate)
      for code in ${GATE_CODES:-hyb 3inst 1mad}; do
        d=/tmp/nano-$code
        if timeout 200 $Q quantize --model models/llama-nano --out $d --calib data/corpus/calib.txt --calib-ctx 128 --calib-windows 4 \
             --code $code --bits 2 --L 16 --backend cuda --force > "$out/json/quant-$code.txt" 2>&1; then
          timeout 100 $Q eval --model $d --data data/corpus/valid.txt --ctx 128 --max-windows 16 --backend cuda --json "$out/json/eval-$code.json" > "$out/json/eval-$code.txt" 2>&1
          timeout 100 $Q generate --model $d --prompt "Once upon a time" -n 24 --backend cuda --json "$out/json/gen-$code.json" > "$out/json/gen-$code.txt" 2>&1
          line "gate $code: $(python3 -c "import json;e=json.load(open('$out/json/eval-$code.json'));g=json.load(open('$out/json/gen-$code.json'));print('ppl',e.get('perplexity'),'ids',g.get('generated_ids'))" 2>&1 | tail -1)"
          tar -C /tmp -czf "$out/nano-$code.tgz" nano-$code
        else line "gate $code: quantize FAILED $(tail -3 "$out/json/quant-$code.txt" | tr '\n' ' ')"; fi
      done ;;
    matvec)
      timeout 400 $Q bench matvec --backend cuda ${MATVEC_ARGS:-} --json "$out/json/matvec.json" > "$out/json/matvec.txt" 2>&1
      line "matvec rc=$?"; sed -n '/trellis decode-matvec/,$p' "$out/json/matvec.txt" | tee -a "$log" ;;
    quick)
      dec fp16-7b --tokens 64
      dec hyb2-7b --code hyb --bits 2 --tokens 64 ;;
    decode7b)
      dec fp16-7b --tokens 128
      for code in hyb 3inst 1mad; do for k in ${HYB_BITS:-2 3 4}; do
        [ $code != hyb ] && [ $k != 2 ] && continue
        dec $code$k-7b --code $code --bits $k --tokens 128
      done; done ;;
    ops)  # the per-op table of the 7B HYB 2-bit decode
      sed -n '/where the time goes/,$p' "$out/json/decode-hyb2-7b.txt" | tee -a "$log" ;;
    check)  # CUDA greedy ids of a carried quantized checkpoint (CHECK_MODEL)
      timeout 100 $Q generate --model "$CHECK_MODEL" --prompt "Once upon a time" -n 24 --backend cuda --json "$out/json/check.json" > "$out/json/check.txt" 2>&1
      line "check: $(python3 -c "import json;print(json.load(open('$out/json/check.json'))['generated_ids'])" 2>&1 | tail -1)" ;;
    decode70b)
      dec hyb2-70b --shape llama2-70b --code hyb --bits 2 --tokens 32 --iterations 10 ;;
  esac
done
