#!/usr/bin/python3
"""PyTorch reference of Lathe's engine (test-only; Debian's python3-torch, torch 1.13, CPU).

The model of include/lathe_engine.h written out in plain torch, as Hugging Face transformers
computes LlamaForCausalLM / Qwen2ForCausalLM and PEFT computes LoRA:

- RMSNorm x * rsqrt(mean(x^2) + eps) * w; rotate-half RoPE, inv_freq with llama3 scaling as HF's
  `_compute_llama3_parameters`; grouped-query causal attention (query head h reads kv head
  h // (heads / kv_heads), as HF's repeat_kv) that never crosses packing segments; SwiGLU MLP
  down(silu(gate(x)) * up(x)); final norm; LM head (lm_head.weight, or the embeddings when tied);
  Qwen2's q/k/v biases.
- LoRA as PEFT: y = W x (+ b) + scale * B(A(dropout(x))), scale alpha/r, or alpha/sqrt(r) with
  rsLoRA (dropout is 0 in the golden cases). The base is frozen.
- Loss: mean cross-entropy over labels != -100 (labels already shifted by the caller).
- Optimiser: torch.nn.utils.clip_grad_norm_(max_norm 1.0), then torch.optim.AdamW.
- Merge: PEFT's merge_and_unload, W + scale * B @ A of the initial LoRA tensors (lm_head of a
  tied model starts from the embeddings).
- Hidden states: transformers' output_hidden_states=True tuple, layers + 1 entries: the
  embeddings, the output of each decoder layer, and the last one after the final norm.

Golden values are computed in float64 from the same f32 inputs the engine gets, and stored as f32.

Usage:
  /usr/bin/python3 test/reference.py --out test/golden          # regenerate every case
  /usr/bin/python3 test/reference.py --case test/golden/a/case.json --model DIR --out DIR
                                                               # one case on a given model folder
  /usr/bin/python3 test/reference.py --hidden-states REQUEST.json --model DIR [--adapter DIR] --out FILE
                                                               # hidden states (HF's output_hidden_states)

Regenerating needs node and a built libs/models (the tiny model folders are written by
@lathe/models' writeTinyModel, which is deterministic, so only the case files are kept).
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STEPS = 3

# ---- safetensors by hand: 8-byte little-endian header length, JSON header, raw data ---------

_DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "I32": (torch.int32, 4)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}; the reference reads F32 models only")
        dtype, _ = _DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + start : base + end]), dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    """Tensors in name order, f32, header padded with spaces to 8 bytes, as the reference writer does."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        raw = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


# ---- the model --------------------------------------------------------------------------------


def model_config(raw):
    heads = raw["num_attention_heads"]
    cfg = {
        "vocab": raw["vocab_size"],
        "hidden": raw["hidden_size"],
        "layers": raw["num_hidden_layers"],
        "heads": heads,
        "kv_heads": raw.get("num_key_value_heads", heads),
        "head_dim": raw.get("head_dim") or raw["hidden_size"] // heads,
        "eps": raw.get("rms_norm_eps", 1e-6),
        "theta": raw.get("rope_theta", 10000.0),
        "rope_scaling": raw.get("rope_scaling"),
        "tied": raw.get("tie_word_embeddings", False),
    }
    return cfg


def inv_freq(cfg, dtype):
    dim = cfg["head_dim"]
    inv = 1.0 / (cfg["theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype) / dim))
    s = cfg["rope_scaling"]
    if s is None:
        return inv
    kind = s.get("rope_type", s.get("type"))
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not implemented")
    # transformers' _compute_llama3_parameters
    factor = s["factor"]
    low_freq_factor = s["low_freq_factor"]
    high_freq_factor = s["high_freq_factor"]
    old_context_len = s["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv
    inv_llama = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_llama / factor + smooth * inv_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_llama)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def lora_scale(lora):
    return lora["alpha"] / (math.sqrt(lora["r"]) if lora["useRslora"] else lora["r"])


def hidden_states(cfg, weights, lora_params, lora, tokens, positions, segments):
    """HF's output_hidden_states: layers + 1 tensors [batch, seq, hidden]; [0] the embeddings, [i]
    the output of model.layers[i-1], the last one after the final norm (model.norm)."""
    scale = lora_scale(lora)
    dtype = weights["model.embed_tokens.weight"].dtype
    b, s = tokens.shape
    H, KV, D = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]

    def linear(x, path):
        y = x @ weights[path + ".weight"].T
        if path + ".bias" in weights:
            y = y + weights[path + ".bias"]
        a = lora_params.get(path + ".lora_A.weight")
        if a is not None:
            y = y + scale * ((x @ a.T) @ lora_params[path + ".lora_B.weight"].T)
        return y

    freqs = positions.to(dtype)[..., None] * inv_freq(cfg, dtype)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # [b, 1, s, D]
    idx = torch.arange(s)
    mask = (idx[None, :] <= idx[:, None])[None] & (segments[:, :, None] == segments[:, None, :])  # [b, s, s]

    x = weights["model.embed_tokens.weight"][tokens]
    states = [x]
    for layer in range(cfg["layers"]):
        p = f"model.layers.{layer}"
        h = rms_norm(x, weights[p + ".input_layernorm.weight"], cfg["eps"])
        q = linear(h, p + ".self_attn.q_proj").view(b, s, H, D).transpose(1, 2)
        k = linear(h, p + ".self_attn.k_proj").view(b, s, KV, D).transpose(1, 2)
        v = linear(h, p + ".self_attn.v_proj").view(b, s, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        attn = torch.softmax(scores, dim=-1) @ v
        x = x + linear(attn.transpose(1, 2).reshape(b, s, H * D), p + ".self_attn.o_proj")
        h = rms_norm(x, weights[p + ".post_attention_layernorm.weight"], cfg["eps"])
        x = x + linear(F.silu(linear(h, p + ".mlp.gate_proj")) * linear(h, p + ".mlp.up_proj"), p + ".mlp.down_proj")
        states.append(x)
    states[-1] = rms_norm(x, weights["model.norm.weight"], cfg["eps"])
    return states


def forward(cfg, weights, lora_params, lora, tokens, positions, segments):
    """Logits [batch, seq, vocab]. `weights` and `lora_params` hold tensors of the compute dtype."""
    scale = lora_scale(lora)
    x = hidden_states(cfg, weights, lora_params, lora, tokens, positions, segments)[-1]
    head = weights["model.embed_tokens.weight"] if cfg["tied"] else weights["lm_head.weight"]
    logits = x @ head.T
    if "lm_head.lora_A.weight" in lora_params:
        logits = logits + scale * ((x @ lora_params["lm_head.lora_A.weight"].T) @ lora_params["lm_head.lora_B.weight"].T)
    return logits


def masked_loss(logits, labels):
    keep = labels.reshape(-1) != -100
    count = int(keep.sum())
    flat = logits.reshape(-1, logits.shape[-1])[keep]
    return F.cross_entropy(flat, labels.reshape(-1)[keep].long(), reduction="sum") / count, count


def lora_names(cfg, lora):
    names = []
    for layer in range(cfg["layers"]):
        for m in MODULES:
            if m in lora["targetModules"]:
                block = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
                names.append(f"model.layers.{layer}.{block}.{m}")
    if "lm_head" in lora["targetModules"]:
        names.append("lm_head")
    return names


def lora_shapes(cfg, weights, lora):
    """PEFT name -> shape: lora_A [r, in], lora_B [out, r] of each adapted linear layer."""
    shapes = {}
    for path in lora_names(cfg, lora):
        w = weights["model.embed_tokens.weight"] if (path == "lm_head" and cfg["tied"]) else weights[path + ".weight"]
        out_f, in_f = w.shape
        shapes[path + ".lora_A.weight"] = (lora["r"], in_f)
        shapes[path + ".lora_B.weight"] = (out_f, lora["r"])
    return shapes


def merged_weights(cfg, weights, lora_init, lora):
    """PEFT's merge_and_unload: W + scale * B @ A for every adapted linear (lm_head of a tied model starts from the embeddings)."""
    scale = lora_scale(lora)
    out = {}
    for path in lora_names(cfg, lora):
        w = weights["model.embed_tokens.weight"] if (path == "lm_head" and cfg["tied"]) else weights[path + ".weight"]
        b, a = lora_init[path + ".lora_B.weight"].to(w.dtype), lora_init[path + ".lora_A.weight"].to(w.dtype)
        out[f"merged/{path}.weight"] = w + scale * (b @ a)
    return out


def run_case(case, model_dir, lora_init, dtype=torch.float64):
    """Golden outputs of one case: logits, loss, grads of the first step, params after STEPS steps, the merged weights."""
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    cfg = model_config(raw)
    weights = {k: v.to(dtype) for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    b, s = case["batch"], case["seq"]
    tokens = torch.tensor(case["tokens"], dtype=torch.int64).view(b, s)
    labels = torch.tensor(case["labels"], dtype=torch.int64).view(b, s)
    positions = torch.tensor(case["positions"], dtype=torch.int64).view(b, s)
    segments = torch.zeros(b, s, dtype=torch.int64) if case["segments"] is None else torch.tensor(case["segments"]).view(b, s)
    lora = case["lora"]
    params = {k: lora_init[k].to(dtype).clone().requires_grad_(True) for k in sorted(lora_init)}
    opt_cfg = case["optimizer"]
    opt = torch.optim.AdamW(
        list(params.values()),
        lr=opt_cfg["lr"],
        betas=(opt_cfg["beta1"], opt_cfg["beta2"]),
        eps=opt_cfg["eps"],
        weight_decay=opt_cfg["weightDecay"],
    )
    out = {"losses": [], "gradNorms": []}
    tensors = {}
    for step in range(STEPS):
        opt.zero_grad(set_to_none=False)
        logits = forward(cfg, weights, params, lora, tokens, positions, segments)
        loss, count = masked_loss(logits, labels)
        loss.backward()
        if step == 0:
            tensors["logits"] = logits.detach()
            out["loss"] = float(loss)
            out["labelCount"] = count
            for k, p in params.items():
                tensors["grad/" + k] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), opt_cfg["maxGradNorm"])
        out["losses"].append(float(loss))
        out["gradNorms"].append(float(norm))
        opt.step()
    for k, p in params.items():
        tensors[f"step{STEPS}/" + k] = p.detach().clone()
    tensors.update(merged_weights(cfg, weights, lora_init, lora))
    return out, tensors


# ---- the golden cases ---------------------------------------------------------------------------

ADAMW = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "maxGradNorm": 1.0}
ALL7 = MODULES

CASES = [
    {
        "name": "a-llama-gqa-untied",
        "description": "llama, GQA (4 heads, 2 kv heads), untied head, 2 rows, LoRA on all 7 projections",
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "kvHeads": 2, "intermediate": 64, "vocab": 512, "seed": 11, "tied": False},
        "configPatch": None,
        "rows": [[12], [12]],
        "prompt": [4, 0],
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "useRslora": False, "targetModules": ALL7},
        "weightDecay": 0.0,
    },
    {
        "name": "b-qwen2-bias-tied",
        "description": "qwen2 (q/k/v biases, rope_theta 1e6, eps 1e-6), tied head, LoRA on q/k/v/o",
        "model": {"arch": "qwen2", "layers": 2, "hidden": 32, "heads": 4, "kvHeads": 2, "intermediate": 64, "vocab": 512, "seed": 12, "tied": True},
        "configPatch": None,
        "rows": [[10], [10]],
        "prompt": [3, 2],
        "lora": {"r": 4, "alpha": 16, "dropout": 0.0, "useRslora": False, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "weightDecay": 0.01,
    },
    {
        "name": "c-llama-packing",
        "description": "llama, one row of 3 packed sequences (5 + 6 + 5 tokens): positions restart, attention stays within a segment",
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "kvHeads": 2, "intermediate": 64, "vocab": 512, "seed": 13, "tied": False},
        "configPatch": None,
        "rows": [[5, 6, 5]],
        "prompt": [2],
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "useRslora": False, "targetModules": ALL7},
        "weightDecay": 0.01,
    },
    {
        "name": "d-llama3-rope",
        "description": "llama with rope_scaling llama3 (factor 8, low 1, high 4, original 64: the 4 frequencies fall in all 3 bands), multi-query (1 kv head), positions 100..113",
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "kvHeads": 1, "intermediate": 64, "vocab": 512, "seed": 14, "tied": False},
        "configPatch": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
        "rows": [[14]],
        "prompt": [0],
        "positionOffset": 100,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "useRslora": False, "targetModules": ALL7},
        "weightDecay": 0.0,
    },
    {
        "name": "e-rslora-lm-head",
        "description": "llama, tied head, 2 heads of 16 without GQA, rsLoRA r 8 alpha 16 (scale 16/sqrt(8)) on all 7 projections and lm_head",
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 2, "kvHeads": 2, "intermediate": 64, "vocab": 512, "seed": 15, "tied": True},
        "configPatch": None,
        "rows": [[9], [9]],
        "prompt": [1, 3],
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "useRslora": True, "targetModules": ALL7 + ["lm_head"]},
        "weightDecay": 0.01,
    },
]


def build_case(spec, index):
    """The engine's inputs for one spec, drawn from a generator seeded by the case's index."""
    g = torch.Generator().manual_seed(1000 + index)
    vocab = spec["model"]["vocab"]
    seq = sum(spec["rows"][0])
    tokens, labels, positions, segments = [], [], [], []
    for row, prompt in zip(spec["rows"], spec["prompt"]):
        assert sum(row) == seq
        for seg, length in enumerate(row):
            ids = torch.randint(0, vocab, (length,), generator=g).tolist()
            tokens += ids
            # Label of t is the next token of its own sequence; the sequence's last token and the
            # first `prompt` ones (a prompt) are not trained.
            labels += [ids[t + 1] if (t + 1 < length and t >= prompt) else -100 for t in range(length)]
            positions += [spec.get("positionOffset", 0) + t for t in range(length)]
            segments += [seg] * length
    packed = any(len(r) > 1 for r in spec["rows"])
    case = {
        "name": spec["name"],
        "description": spec["description"],
        "model": spec["model"],
        "configPatch": spec["configPatch"],
        "batch": len(spec["rows"]),
        "seq": seq,
        "tokens": tokens,
        "labels": labels,
        "positions": positions,
        "segments": segments if packed else None,
        "lora": spec["lora"],
        "optimizer": dict(ADAMW, weightDecay=spec["weightDecay"], steps=STEPS),
    }
    return case, g


def lora_init_values(shapes, g):
    """A as PEFT's kaiming-uniform(a=sqrt(5)) bound 1/sqrt(in); B NON-zero (uniform ±0.05) so every gradient flows."""
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        bound = 1.0 / math.sqrt(shape[1]) if name.endswith("lora_A.weight") else 0.05
        out[name] = ((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bound).to(torch.float32)
    return out


def write_tiny_model(model_dir, opts, config_patch):
    script = "const m = await import('@lathe/models'); await m.writeTinyModel(process.argv[1], JSON.parse(process.argv[2]));"
    subprocess.run(["node", "--input-type=module", "-e", script, model_dir, json.dumps(opts)], cwd=ENGINE_DIR, check=True)
    if config_patch:
        path = os.path.join(model_dir, "config.json")
        with open(path) as f:
            raw = json.load(f)
        raw.update(config_patch)
        with open(path, "w") as f:
            f.write(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def case_text(case):
    """One key per line with compact values: small, stable diffs."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in case.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_outputs(out_dir, out, tensors):
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "expected.safetensors"), tensors)
    summary = {"torch": torch.__version__, "dtype": "float64", **out}
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")


def generate_all(out_root):
    for index, spec in enumerate(CASES):
        case, g = build_case(spec, index)
        case_dir = os.path.join(out_root, spec["name"])
        os.makedirs(case_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="lathe-golden-")
        try:
            write_tiny_model(tmp, spec["model"], spec["configPatch"])
            with open(os.path.join(tmp, "config.json")) as f:
                cfg = model_config(json.load(f))
            weights = read_safetensors(os.path.join(tmp, "model.safetensors"))
            init = lora_init_values(lora_shapes(cfg, weights, case["lora"]), g)
            out, tensors = run_case(case, tmp, init)
        finally:
            shutil.rmtree(tmp)
        with open(os.path.join(case_dir, "case.json"), "w") as f:
            f.write(case_text(case))
        write_safetensors(os.path.join(case_dir, "lora-init.safetensors"), init)
        write_outputs(case_dir, out, tensors)
        print(f"{spec['name']}: loss {out['loss']:.6f} over {out['labelCount']} labels, grad norms {['%.4f' % n for n in out['gradNorms']]}")


# ---- hidden states (Hugging Face's output_hidden_states) of a model folder, for ts/hidden-states.test.ts


def read_adapter(adapter_dir):
    """A PEFT adapter folder: (settings as a case's `lora`, tensors without `base_model.model.`)."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        raw = json.load(f)
    lora = {"r": raw["r"], "alpha": raw["lora_alpha"], "useRslora": raw.get("use_rslora", False)}
    tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    return lora, {k.replace("base_model.model.", "", 1): v for k, v in tensors.items()}


def run_hidden_states(request, model_dir, adapter_dir, dtype=torch.float64):
    """`seq{i}/layer{k}` [len, hidden] for each sequence and requested layer: each sequence alone,
    positions 0..len-1, in eval mode (LoRA dropout, when the adapter has one, is not applied)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = model_config(json.load(f))
    weights = {k: v.to(dtype) for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    lora, params = {"r": 1, "alpha": 0.0, "useRslora": False}, {}
    if adapter_dir:
        lora, params = read_adapter(adapter_dir)
        params = {k: v.to(dtype) for k, v in params.items()}
    out = {}
    with torch.no_grad():
        for i, seq in enumerate(request["sequences"]):
            tokens = torch.tensor([seq], dtype=torch.int64)
            positions = torch.arange(len(seq), dtype=torch.int64)[None]
            states = hidden_states(cfg, weights, params, lora, tokens, positions, torch.zeros_like(tokens))
            for k in request["layers"]:
                out[f"seq{i}/layer{k}"] = states[k][0]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder of the golden cases (or of one case's outputs with --case)")
    parser.add_argument("--case", help="one case.json (its lora-init.safetensors beside it) to run on --model")
    parser.add_argument("--model", help="model folder for --case (written by writeTinyModel)")
    parser.add_argument("--hidden-states", help='a JSON request {"sequences": [[ids]], "layers": [k]} to run on --model; --out is a .safetensors file')
    parser.add_argument("--adapter", help="PEFT adapter folder applied with --hidden-states")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: reproducible sums)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.hidden_states:
        if not args.model:
            parser.error("--hidden-states needs --model")
        with open(args.hidden_states) as f:
            request = json.load(f)
        write_safetensors(args.out, run_hidden_states(request, args.model, args.adapter))
    elif args.case:
        if not args.model:
            parser.error("--case needs --model")
        with open(args.case) as f:
            case = json.load(f)
        init = read_safetensors(os.path.join(os.path.dirname(args.case), "lora-init.safetensors"))
        out, tensors = run_case(case, args.model, init)
        write_outputs(args.out, out, tensors)
    else:
        generate_all(args.out)


if __name__ == "__main__":
    sys.exit(main())
