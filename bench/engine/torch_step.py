"""PyTorch peer of bench/engine: the same LoRA training step (forward, backward, clipping, AdamW)
on the same model and batch, in float32, written in plain torch with the reference model of
libs/engine's tests (torch 1.13 has no fused attention; the reference writes it out as HF's eager
path does).

Its speed is mostly the BLAS under torch. Debian's torch calls whatever libblas.so.3 is, so this
script names the library it actually loaded (from /proc/self/maps) and, for OpenBLAS, its build
and core type (openblas_get_config). Thread splits are tried in this one process: OpenBLAS's own
threads (openblas_set_num_threads) x torch's intra-op threads; each split gets a warm-up step and
a timed step, and the fastest one is timed for STEPS steps.

usage: torch_step.py MODEL_DIR BATCH SEQ R STEPS SPLITS
  SPLITS: comma-separated BLASxINTRA, e.g. 2x1,1x2,1x1,2x2 (the first is used when BLAS is not OpenBLAS)
Prints one JSON line.
"""
import ctypes
import json
import math
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "libs", "engine", "test"))
import reference  # noqa: E402


def loaded_blas():
    """The path of the BLAS library this process mapped, and the OpenBLAS handle when it is OpenBLAS."""
    with open("/proc/self/maps") as f:
        paths = sorted({line.split()[-1] for line in f if "blas" in line.split()[-1].lower() and "/" in line})
    for path in paths:
        lib = ctypes.CDLL(path)
        if hasattr(lib, "openblas_set_num_threads"):
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return path, lib
    return (paths[0] if paths else "none"), None


model_dir, batch, seq, r, steps = sys.argv[1], *map(int, sys.argv[2:6])
splits = [tuple(map(int, s.split("x"))) for s in sys.argv[6].split(",")]
torch.manual_seed(0)
with open(os.path.join(model_dir, "config.json")) as f:
    raw = json.load(f)
cfg = reference.model_config(raw)
vocab = raw["vocab_size"]
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
    ids.append(state % vocab)
tokens = torch.tensor(ids).view(batch, seq)
labels = torch.cat([tokens[:, 1:], torch.full((batch, 1), -100)], dim=1)
positions = torch.arange(seq).repeat(batch, 1)
segments = torch.zeros(batch, seq, dtype=torch.int64)


trained = 0


def step():
    global trained
    trained += 1
    opt.zero_grad()
    logits = reference.forward(cfg, weights, params, lora, tokens, positions, segments)
    loss, _ = reference.masked_loss(logits, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
    opt.step()
    return float(loss)


def use(split):
    if blas_lib is not None:
        blas_lib.openblas_set_num_threads(split[0])
    torch.set_num_threads(split[1])


def timed(n):
    start = time.perf_counter()
    for _ in range(n):
        loss = step()
    return batch * seq * n / (time.perf_counter() - start), loss


blas_path, blas_lib = loaded_blas()
if blas_lib is None:
    splits = splits[:1]
tried = []
for split in splits:
    use(split)
    step()  # warm-up (first use of this thread count)
    tried.append({"blas_threads": split[0], "torch_threads": split[1], "tokens_per_s": timed(1)[0]})
best = max(tried, key=lambda t: t["tokens_per_s"])
use((best["blas_threads"], best["torch_threads"]))
tokens_per_s, loss = timed(steps)


def blas_error():
    """Largest relative error of an f32 product at the step's shape against the same product in
    float64: an OpenBLAS kernel that misbehaves on this CPU shows here, not only in its speed."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(256, raw["hidden_size"], generator=g), torch.randn(raw["hidden_size"], raw["intermediate_size"], generator=g)
    want = a.double() @ b.double()
    return float(((a @ b).double() - want).abs().max() / want.abs().max())


def matmul_gflops(m, k, n, reps):
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * m * k * n / (time.perf_counter() - t0) / 1e9


H, I = raw["hidden_size"], raw["intermediate_size"]
print(json.dumps({
    "tokens_per_s": tokens_per_s,
    "loss": loss,
    "steps_trained": trained,
    "split": {"blas_threads": best["blas_threads"], "torch_threads": best["torch_threads"]},
    "tried": tried,
    "blas": blas_path,
    "openblas_config": blas_lib.openblas_get_config().decode() if blas_lib else None,
    "openblas_core": blas_lib.openblas_get_corename().decode() if blas_lib else None,
    "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
    "blas_max_rel_err": blas_error(),
    "torch": torch.__version__,
    # The step's own GEMM shape (tokens x hidden @ hidden x intermediate) and a square one.
    "matmul_gflops": matmul_gflops(batch * seq, H, I, 10),
    "matmul_square_gflops": matmul_gflops(512, 512, 512, 20),
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
