#!/usr/bin/env python3
"""Writes a random-weight Llama checkpoint (config.json, model.safetensors, tokenizer files copied from a small model)
of a real model's shape, for quantize measurements at scale on the GPU machine's own disk (never carried).
Weights are made on the GPU with torch (N(0, 0.02) linears, norms 1) and saved tensor by tensor with safetensors,
in the layout transformers' LlamaForCausalLM writes. Usage:
  make-random-llama.py OUTDIR --shape llama2-7b [--layers N] [--tokenizer-from models/llama-nano]"""
import argparse, json, os, shutil
import torch
from safetensors.torch import save_file

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32, vocab_size=32000),
    "llama2-70b": dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=80, vocab_size=32000),
}

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--shape", default="llama2-7b", choices=SHAPES)
ap.add_argument("--layers", type=int)
ap.add_argument("--tokenizer-from", default="models/llama-nano")
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
s = dict(SHAPES[a.shape])
if a.layers:
    s["num_hidden_layers"] = a.layers
os.makedirs(a.out, exist_ok=True)
h, f, L, V = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
kv = h // s["num_attention_heads"] * s["num_key_value_heads"]
g = torch.Generator(device="cuda").manual_seed(a.seed)
dev = "cuda" if torch.cuda.is_available() else "cpu"
def rnd(*shape):
    return (torch.randn(*shape, generator=g, device=dev) * 0.02).to(torch.float16).cpu()
t = {"model.embed_tokens.weight": rnd(V, h), "lm_head.weight": rnd(V, h), "model.norm.weight": torch.ones(h, dtype=torch.float16)}
for l in range(L):
    p = f"model.layers.{l}."
    t[p + "input_layernorm.weight"] = torch.ones(h, dtype=torch.float16)
    t[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.float16)
    t[p + "self_attn.q_proj.weight"] = rnd(h, h)
    t[p + "self_attn.k_proj.weight"] = rnd(kv, h)
    t[p + "self_attn.v_proj.weight"] = rnd(kv, h)
    t[p + "self_attn.o_proj.weight"] = rnd(h, h)
    t[p + "mlp.gate_proj.weight"] = rnd(f, h)
    t[p + "mlp.up_proj.weight"] = rnd(f, h)
    t[p + "mlp.down_proj.weight"] = rnd(h, f)
save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", bos_token_id=1, eos_token_id=2, hidden_act="silu",
           max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
           torch_dtype="float16", **s)
json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
# The tokenizer of the small model (its vocabulary is smaller than 32000: ids beyond it are never produced, which is
# fine for calibration text; the shape is what is measured).
for name in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    src = os.path.join(a.tokenizer_from, name)
    if os.path.exists(src):
        shutil.copy(src, a.out)
print(f"{a.out}: {a.shape} {L} layers, {sum(v.numel() for v in t.values()) / 1e9:.2f} B parameters")
