#!/usr/bin/env python3
"""bench/engine/peft_step.py — the peer of libs/engine/dev/gpu/cuda_bench.cpp: one LoRA training
step of a Llama-3.1-8B-shaped model with random weights (no download) in Hugging Face
transformers + PEFT on the same GPU, at the settings that make it fastest here:

- bf16 weights and compute, LoRA r 16 / alpha 32 / dropout 0 on all 7 projections
  (q, k, v, o, gate, up, down), as the engine's benchmark;
- gradient checkpointing (non-reentrant), one packed row of --seq tokens, labels = the tokens
  (transformers shifts them);
- attention: flash_attention_2 when the flash_attn package imports, else sdpa;
- torch.optim.AdamW (fused) on the LoRA parameters, gradient clipping at 1.0.

Prints one JSON line: tokens/s over --steps timed steps after one warm-up step, seconds per step,
peak allocated memory (torch.cuda.max_memory_allocated), MFU at 4 N FLOPs per token (N = every
parameter of the model) against --peak-tflops, the attention implementation and the versions.
"""
import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()

    import torch
    import transformers
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        import flash_attn  # noqa: F401

        attn = "flash_attention_2"
    except Exception:
        attn = "sdpa"

    cfg = LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=args.layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=max(8192, args.seq),
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        attn_implementation=attn,
    )
    try:  # transformers 4.x reads the private field when the model is built from a config
        cfg._attn_implementation = attn
    except Exception:
        pass
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16)  # a no-op unless this transformers built the model in its own dtype
    model.config.use_cache = False
    params = sum(p.numel() for p in model.parameters())
    base_dtype = str(next(model.parameters()).dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    lcfg = peft.LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, lcfg)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (1, args.seq), device="cuda")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return float(out.loss.detach())

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = 0.0
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    tps = args.steps * args.seq / secs
    print(
        json.dumps(
            {
                "engine": "transformers+peft",
                "mode": "lora",
                "layers": args.layers,
                "tokens_per_step": args.seq,
                "steps": args.steps,
                "params": params,
                "tokens_per_s": round(tps, 1),
                "step_s": round(secs / args.steps, 4),
                "peak_bytes": torch.cuda.max_memory_allocated(),
                "mfu": round(tps * 4 * params / (args.peak_tflops * 1e12), 4),
                "peak_tflops": args.peak_tflops,
                "loss": round(loss, 5),
                "attention": getattr(model.config, "_attn_implementation", attn),
                "base_dtype": base_dtype,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
