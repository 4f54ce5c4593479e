#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training throughput: the reference to run side by side with the Rust trainer.

Builds a randomly initialised Qwen2ForCausalLM (float32) from the given shape, wraps it with a
PEFT LoRA (dropout 0), and trains on random token batches from a fixed generator with the causal
LM loss on all tokens (labels=input_ids): AdamW (torch defaults except lr, weight_decay=0),
constant lr (no warmup), global grad-norm clip 1.0. The first 3 steps are warm-up and not timed.
Prints one JSON line on stdout.

    /work/torch-venv/bin/python bench/lora_torch.py --vocab 2000 --hidden 128 --intermediate 352 \\
        --layers 4 --heads 4 --kv-heads 2 --seq 64 --batch 16 --steps 30 --rank 8 --alpha 16

GPU: --device cuda [--bf16] [--mfu --peak-tflops 989]  (989 = H100/H200 dense bf16).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

WARMUP = 3


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=352)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30, help="timed steps, after %d warm-up steps" % WARMUP)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (cuda; also allowed on cpu)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    ap.add_argument("--mfu", action="store_true", help="add an MFU estimate: 6 * params * tokens/s / peak")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s of the device, in TFLOP/s")
    args = ap.parse_args()
    if args.mfu and not args.peak_tflops:
        ap.error("--mfu needs --peak-tflops")
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    args = parse()
    torch.set_flush_denormal(True)  # without it LoRA on CPU runs ~100x slower (denormal B·A at init)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    transformers.logging.set_verbosity_error()
    config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.seq, 128), tie_word_embeddings=False, use_cache=False,
    )
    config._attn_implementation = args.attn
    model = Qwen2ForCausalLM(config).float()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    lora = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    optim = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)

    gen = torch.Generator().manual_seed(args.seed)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16)
    times, losses = [], []
    for step in range(WARMUP + args.steps):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device)
        sync(device)
        t0 = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        sync(device)
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if step >= WARMUP:
            times.append(dt)

    step_s = statistics.mean(times)
    tokens_per_s = args.batch * args.seq / step_s
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {
        "impl": "pytorch+peft",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": args.device if device.type == "cpu" else f"{args.device}:{torch.cuda.get_device_name(device)}",
        "threads": args.threads,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms_mean": round(step_s * 1000, 2),
        "step_ms_median": round(statistics.median(times) * 1000, 2),
        "step_ms_min": round(min(times) * 1000, 2),
        "steps": args.steps,
        "warmup_steps": WARMUP,
        "trainable_params": n_trainable,
        "total_params": n_total,
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "config": {
            "vocab": args.vocab, "hidden": args.hidden, "intermediate": args.intermediate, "layers": args.layers,
            "heads": args.heads, "kv_heads": args.kv_heads, "seq": args.seq, "batch": args.batch,
            "rank": args.rank, "alpha": args.alpha, "targets": targets, "lr": args.lr, "seed": args.seed,
            "bf16": args.bf16, "attn": args.attn, "optimizer": "AdamW(wd=0)", "clip": 1.0,
        },
    }
    if device.type == "cuda":
        out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if args.mfu:
        # 6·N·tokens counts forward + full backward of every weight (the usual convention); a LoRA
        # backward skips frozen weight grads (~4·N), and attention score FLOPs are left out.
        flops = 6 * n_total * tokens_per_s
        out["mfu"] = round(flops / (args.peak_tflops * 1e12), 5)
        out["model_tflops"] = round(flops / 1e12, 4)
        out["peak_tflops"] = args.peak_tflops
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
