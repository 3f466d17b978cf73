"""PyTorch peer of bench/engine: the same LoRA training step (forward, backward, AdamW) on the
same model, in float32, written in plain torch with the reference model of libs/engine's tests.
Prints one JSON line: {"tokens_per_s": …, "loss": …}.

usage: torch_step.py MODEL_DIR BATCH SEQ R THREADS STEPS
"""
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "libs", "engine", "test"))
import reference  # noqa: E402

model_dir, batch, seq, r, threads, steps = sys.argv[1], *map(int, sys.argv[2:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
with open(os.path.join(model_dir, "config.json")) as f:
    cfg = reference.model_config(json.load(f))
weights = {k: v.float() for k, v in reference.read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
lora = {"r": r, "alpha": 2 * r, "useRslora": False, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
params = {}
for name, shape in reference.lora_shapes(cfg, weights, lora).items():
    t = torch.empty(shape)
    if ".lora_A." in name:
        torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    else:
        t.zero_()
    params[name] = t.requires_grad_()
opt = torch.optim.AdamW(params.values(), lr=1e-4, weight_decay=0.0)
# The same tokens as the engine's run (a 32-bit LCG), so both train on the same batch.
state, ids = 1, []
for _ in range(batch * seq):
    state = (state * 1103515245 + 12345) % (1 << 32)
    ids.append(state % 512)
tokens = torch.tensor(ids).view(batch, seq)
labels = torch.cat([tokens[:, 1:], torch.full((batch, 1), -100)], dim=1)
positions = torch.arange(seq).repeat(batch, 1)
segments = torch.zeros(batch, seq, dtype=torch.int64)


def step():
    opt.zero_grad()
    logits = reference.forward(cfg, weights, params, lora, tokens, positions, segments)
    loss, _ = reference.masked_loss(logits, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
    opt.step()
    return float(loss)


step()  # warm-up
start = time.perf_counter()
for _ in range(steps):
    loss = step()
elapsed = time.perf_counter() - start
# How fast this PyTorch multiplies matrices, to say what kind of peer it is (Debian's build uses
# a generic BLAS; a pip build with MKL is much faster).
m = torch.randn(512, 512)
t0 = time.perf_counter()
for _ in range(20):
    m @ m
gflops = 20 * 2 * 512**3 / (time.perf_counter() - t0) / 1e9
print(json.dumps({"tokens_per_s": batch * seq * steps / elapsed, "loss": loss, "matmul_gflops": gflops}))
