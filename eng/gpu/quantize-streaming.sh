#!/usr/bin/env bash
# On the GPU machine (qtip unpacked at /tmp/q/qtip, run from a repository root): issue 10's figures, each step with its
# own time limit inside an overall deadline, most important first. Usage: quantize-streaming.sh OUTDIR SECONDS
#   1. CUDA tests of the new kernels (tensor-core MatMul, LayerForward bit-identity)
#   2. prefill tokens/s, 7B fp16 shape, window 512: tensor cores vs the SIMT kernel (QTIP_TENSOR_CORES=0)
#   3. eval of llama-nano (fp16 weights) with and without tensor cores: the perplexity change
#   4. bench quantize llama2-7b --layers 2 and 4; llama2-70b --layers 1 and 2 (fp16 forward): time and peak memory
# Each step's max GPU memory as nvidia-smi sees it (sampled every 0.2 s) is logged next to the tool's own figures.
set -uo pipefail
q=/tmp/q/qtip; Q=$q/qtip
out=$1; budget=${2:-400}
mkdir -p "$out"
sum="$out/summary.txt"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$sum"
step() {
  local name=$1 limit=$2; shift 2
  local left=$((budget - ($(date +%s) - t0)))
  if [ "$left" -lt 20 ]; then echo "$name: skipped (deadline)" | tee -a "$sum"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  ( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done ) > "$out/$name.smi" 2>/dev/null &
  local smi=$!
  local s=$(date +%s.%N)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local secs=$(echo "$(date +%s.%N) - $s" | bc)
  local mem=$(sort -n "$out/$name.smi" | tail -1)
  echo "$name rc=$rc ${secs}s smi_max_MiB=${mem:-?}" | tee -a "$sum"
  grep -aE "Total:|\[FAIL\]|tokens/s|prefill|perplexity|peak|time: wall|time per layer|error" "$out/$name.log" | head -12 | sed 's/^/    /' | tee -a "$sum"
}
step test-matmul 50 "$q/Qtip.Kernels.Tests" -class Qtip.Kernels.Tests.Llama.MatMulTestsCuda
step test-layerforward 40 "$q/Qtip.Model.Tests" -class Qtip.Model.Tests.LayerForwardTestsCuda
step prefill-tc 70 "$Q" bench decode --shape llama2-7b --tokens 4 --prompt-tokens 4 --prefill-ctx 512 --iterations 2 --backend cuda --json "$out/prefill-tc.json"
step prefill-simt 45 env QTIP_TENSOR_CORES=0 "$Q" bench decode --shape llama2-7b --layers 4 --tokens 4 --prompt-tokens 4 --prefill-ctx 512 --iterations 2 --backend cuda --json "$out/prefill-simt.json"
step bq-7b-2 90 "$Q" bench quantize --shape llama2-7b --layers 2 --backend cuda --json "$out/bq-7b-2.json"
step bq-7b-4 170 "$Q" bench quantize --shape llama2-7b --layers 4 --backend cuda --json "$out/bq-7b-4.json"
step eval-nano-tc 25 "$Q" eval --model models/llama-nano --data data/corpus/valid.txt --ctx 128 --max-windows 32 --backend cuda --weights f16 --json "$out/eval-nano-tc.json"
step eval-nano-simt 25 env QTIP_TENSOR_CORES=0 "$Q" eval --model models/llama-nano --data data/corpus/valid.txt --ctx 128 --max-windows 32 --backend cuda --weights f16 --json "$out/eval-nano-simt.json"
step bq-70b-1 150 "$Q" bench quantize --shape llama2-70b --layers 1 --forward fp16 --calib-windows 8 --backend cuda --json "$out/bq-70b-1.json"
step bq-70b-2 200 "$Q" bench quantize --shape llama2-70b --layers 2 --forward fp16 --calib-windows 8 --backend cuda --json "$out/bq-70b-2.json"
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$sum"
