#!/usr/bin/env python3
"""Writes the tiny random checkpoints of the non-Llama-2 families (Mistral with sliding-window attention, Qwen2 with
q/k/v biases and tied embeddings, a Llama-3-style model with GQA and rope_type llama3) with transformers, in bf16, with
llama-nano's tokenizer, and their fp32 reference: per-position logits summaries and greedy ids. Run where torch and
transformers are installed (the GPU machine); the CPU is enough. Usage:
  make-tiny-families.py OUTDIR [--tokenizer-from models/llama-nano]
Each model is OUTDIR/<name>/ (config.json, generation_config.json, model.safetensors, tokenizer files) and
OUTDIR/<name>/reference.json.

Weights: N(0, 0.1) projections, N(0, 1) embeddings, N(0, 0.3) lm_head, norms 1 + N(0, 0.1), biases N(0, 0.5): logits
spread over several units (far from uniform) so that argmax and greedy ids are well separated, then rounded to bf16;
the reference runs the bf16 weights in fp32 with eager attention."""
import argparse, json, os, shutil
import torch
import transformers
from tokenizers import Tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--tokenizer-from", default="models/llama-nano")
a = ap.parse_args()

TEXT = ("Fellow-Citizens of the Senate and of the House of Representatives: Among the vicissitudes incident to life no "
        "event could have filled me with greater anxieties than that of which the notification was transmitted by your order")
PROMPTS = ["The", "Once upon a time", "Fellow-Citizens of the Senate"]
GREEDY_STEPS = 32
tok = Tokenizer.from_file(os.path.join(a.tokenizer_from, "tokenizer.json"))
VOCAB = tok.get_vocab_size()

common = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=1024,
              bos_token_id=1, eos_token_id=2, hidden_act="silu", attn_implementation="eager")


def rope(cfg_kwargs, theta, scaling=None):
    """transformers 5 reads rope_parameters, 4 reads rope_theta/rope_scaling: set what this version has."""
    if int(transformers.__version__.split(".")[0]) >= 5:
        p = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            p.update(scaling)
        cfg_kwargs["rope_parameters"] = p
    else:
        cfg_kwargs["rope_theta"] = theta
        if scaling:
            cfg_kwargs["rope_scaling"] = scaling
    return cfg_kwargs


MODELS = {
    "mistral-tiny": (transformers.MistralConfig, transformers.MistralForCausalLM,
                     rope(dict(common, num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=8,
                               rms_norm_eps=1e-5, tie_word_embeddings=False), 10000.0)),
    "qwen2-tiny": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                   rope(dict(common, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                             tie_word_embeddings=True, use_sliding_window=False), 1000000.0)),
    "llama3-tiny": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                    rope(dict(common, num_attention_heads=8, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                              tie_word_embeddings=False, eos_token_id=[2, 0]), 500000.0,
                         {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64})),
}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def summary(logits):
    """Per position: the first 8 logits, the top 5 [id, logit], the logsumexp, 16 fixed spread ids, the top-2 margin."""
    out = []
    spread = list(range(17, VOCAB, VOCAB // 16))[:16]
    for row in logits:
        top = torch.topk(row, 5)
        out.append(dict(logits_first8=[float(x) for x in row[:8]],
                        top5=[[int(i), float(v)] for v, i in zip(top.values, top.indices)],
                        spread=[[i, float(row[i])] for i in spread],
                        logsumexp=float(torch.logsumexp(row.double(), 0)),
                        top2_margin=float(top.values[0] - top.values[1])))
    return out


torch.manual_seed(0)
info = {"transformers": transformers.__version__, "torch": torch.__version__}
for seed, (name, (cfg_cls, model_cls, kw)) in enumerate(MODELS.items()):
    cfg = cfg_cls(**kw)
    cfg.torch_dtype = "bfloat16"
    model = model_cls(cfg).eval()
    randomize(model, 1000 + seed)
    d = os.path.join(a.out, name)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        src = os.path.join(a.tokenizer_from, f)
        if os.path.exists(src):
            shutil.copy(src, d)
    # The reference: the saved bf16 weights, run in fp32.
    ref = model_cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
    ids = tok.encode(TEXT).ids[:40]
    with torch.no_grad():
        out = ref(torch.tensor([ids]), output_hidden_states=True)
        logits = out.logits[0]
        r = dict(model=name, config=json.load(open(os.path.join(d, "config.json"))),
                 positions=dict(input_ids=ids, positions=summary(logits),
                                hidden_l2=[[float(x) for x in h[0].norm(dim=-1)] for h in out.hidden_states]))
        if name == "mistral-tiny":
            # The sliding window must change something, or the check proves nothing.
            full = model_cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
            full.config.sliding_window = None
            for layer in full.model.layers:
                layer.self_attn.sliding_window = None
            lf = full(torch.tensor([ids])).logits[0]
            diff = (lf - logits).abs().max(dim=-1).values
            r["positions"]["no_window_max_diff"] = [float(x) for x in diff]
            print(name, "logit change without the window by position:", [round(float(x), 3) for x in diff])
        gens = []
        for p in PROMPTS:
            pids = tok.encode(p).ids
            seq = list(pids)
            margins = []
            for _ in range(GREEDY_STEPS):  # plain full recompute: no cache semantics involved
                lg = ref(torch.tensor([seq])).logits[0, -1]
                top = torch.topk(lg, 2)
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(int(top.indices[0]))
            gen = ref.generate(torch.tensor([pids]), max_new_tokens=GREEDY_STEPS, do_sample=False)
            cached = [int(x) for x in gen[0][len(pids):]]
            gens.append(dict(prompt=p, prompt_ids=pids, generated_ids=seq[len(pids):], generate_ids=cached,
                             min_top2_margin=min(margins)))
            print(name, repr(p), "greedy == generate():", cached == seq[len(pids):], "min margin", round(min(margins), 4))
        r["generations"] = gens
    r.update(info)
    json.dump(r, open(os.path.join(d, "reference.json"), "w"), indent=1)
    am = [p["top5"][0][0] for p in r["positions"]["positions"]]
    print(name, "params", sum(p.numel() for p in model.parameters()), "argmax", am[:12], "min margin",
          round(min(p["top2_margin"] for p in r["positions"]["positions"]), 4),
          "logit std", round(float(logits.std()), 3))
