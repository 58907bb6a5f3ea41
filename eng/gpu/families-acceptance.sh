#!/usr/bin/env bash
# The model families (Mistral, Qwen2, Llama-3-style tiny checkpoints in models/) on a backend: greedy ids of the three
# reference prompts against transformers' (reference.json), eval, then a 2-bit HYB quantize and its eval + greedy ids.
# Usage (repository root, Q pointing at the tool): families-acceptance.sh OUTDIR [MODEL...]; BACKEND=cuda by default.
set -uo pipefail
Q=${Q:-/tmp/q/qtip/qtip}
backend=${BACKEND:-cuda}
out=$1; shift
models=("$@"); [ ${#models[@]} -eq 0 ] && models=(mistral-tiny qwen2-tiny llama3-tiny)
mkdir -p "$out/json"
log="$out/families.log"
line() { echo "$*" | tee -a "$log"; }
gen_check() { # name model-dir reference.json: every prompt's greedy ids vs the reference
  python3 - "$1" "$2" "$3" "$out/json" "$Q" "$backend" <<'PY'
import json, subprocess, sys
name, model, ref, jdir, q, backend = sys.argv[1:]
r = json.load(open(ref))
same = 0
for i, g in enumerate(r["generations"]):
    j = f"{jdir}/gen-{name}-{i}.json"
    p = subprocess.run([q, "generate", "--model", model, "--prompt", g["prompt"], "-n", str(len(g["generated_ids"])),
                        "--ignore-eos", "--backend", backend, "--json", j], capture_output=True, text=True)
    if p.returncode != 0:
        print(f"prompt {i}: FAILED {p.stderr.strip()[-200:]}"); continue
    got = json.load(open(j))["generated_ids"]
    want = g["generated_ids"]
    k = next((t for t in range(len(want)) if t >= len(got) or got[t] != want[t]), len(want))
    same += k == len(want)
    print(f"prompt {i}: {'same' if k == len(want) else f'first difference at step {k}'} ({len(want)} ids)")
print(f"{same}/{len(r['generations'])} prompts give transformers' greedy ids")
PY
}
evalm() { # name model
  if timeout 200 $Q eval --model "$2" --data data/corpus/valid.txt --ctx 128 --max-windows 16 --backend "$backend" --json "$out/json/eval-$1.json" > "$out/json/eval-$1.txt" 2>&1; then
    python3 -c "import json;d=json.load(open('$out/json/eval-$1.json'));print('ppl', round(d.get('perplexity', 0), 4))"
  else echo "FAILED $(tail -2 "$out/json/eval-$1.txt" | tr '\n' ' ')"; fi
}
for m in "${models[@]}"; do
  dir=models/$m
  line "$m fp ($backend): $(gen_check $m $dir $dir/reference.json | tr '\n' ' ')| eval $(evalm $m $dir)"
  q=/tmp/fam-q-$m
  t0=$(date +%s%N)
  if timeout 300 $Q quantize --model $dir --out $q --calib data/corpus/calib.txt --calib-ctx 128 --calib-windows 32 --code hyb --bits 2 \
       --backend "$backend" --force > "$out/json/quant-$m.txt" 2>&1; then
    line "$m HYB 2-bit ($(( ($(date +%s%N) - t0) / 1000000 )) ms): eval $(evalm $m-q $q) | $(gen_check $m-q $q $dir/reference.json | tail -1)"
  else line "$m quantize FAILED $(tail -3 "$out/json/quant-$m.txt" | tr '\n' ' ')"; fi
done
tar -C "$out" -czf "$out/families-json.tgz" json && rm -rf "$out/json"
