#!/usr/bin/env python3
"""PyTorch peer of `chatforge bench train`.

Trains a randomly initialised LlamaForCausalLM (fp32 master weights) on random tokens on the
CPU, in each of PyTorch's modes a user would pick, and reports training and forward throughput,
so chatforge's engine can be compared against PyTorch's fastest mode on the same shape and
threads.

    /tmp/venv/bin/python tools/bench_torch.py                  # every mode, defaults below
    /tmp/venv/bin/python tools/bench_torch.py --modes compile-bf16 --threads 2

Modes: eager-fp32, eager-bf16 (bf16 autocast), compile-fp32 (torch.compile), compile-bf16
(torch.compile + bf16 autocast). Every mode uses fused AdamW (fp32 moments) and
F.cross_entropy on shifted targets (context-1 targets per row), the loss in fp32.

Each mode prints

    pytorch <mode> train tokens/s: <value>
    pytorch <mode> forward tokens/s: <value>

and the last three lines printed are always

    pytorch best train mode: <mode>
    pytorch forward tokens/s: <best over modes>
    pytorch train tokens/s: <best over modes>

A mode that fails (e.g. torch.compile without a C++ compiler) prints `pytorch <mode> failed: ...`
and is left out of the best.

With --lora R, `peft` wraps the model in a LoRA of rank R (alpha 16, the seven linear layers
of every block, as `chatforge bench train --lora R`): the base is frozen and AdamW steps the
adapters only.

Token accounting: tokens/step = batch * context, i.e. every input position is counted (the
forward/backward work covers all of them), as `chatforge bench train` counts.
"""

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

MODES = ["eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (compile happens here)")
    p.add_argument("--tied", action="store_true", help="tie LM head to the token embedding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora", type=int, default=0, help="LoRA rank (peft); 0: a full fine-tune")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from " + ", ".join(MODES))
    return p.parse_args()


def bench_mode(args, mode):
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.context,
        tie_word_embeddings=args.tied,
        attn_implementation="sdpa",  # HF's default: torch scaled_dot_product_attention
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=args.lora, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    compiled = mode.startswith("compile")
    bf16 = mode.endswith("bf16")

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def loss_fn(ids):
        with autocast():
            logits = model(input_ids=ids).logits
        # Shifted targets; the loss in fp32 whatever the matmuls ran in.
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, args.vocab), ids[:, 1:].reshape(-1))

    def logits_fn(ids):
        with autocast():
            return model(input_ids=ids).logits

    if compiled:
        loss_fn = torch.compile(loss_fn)
        logits_fn = torch.compile(logits_fn)

    gen = torch.Generator().manual_seed(args.seed + 1)

    def train_step():
        ids = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
        loss = loss_fn(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() also forces the step to finish

    for i in range(args.warmup):
        t0 = time.perf_counter()
        loss = train_step()
        print(f"{mode} warmup step {i}: loss {loss:.4f}  {(time.perf_counter() - t0) * 1e3:.1f} ms", flush=True)
    step_s = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = train_step()
        step_s.append(time.perf_counter() - t0)
    tokens = args.batch * args.context * args.steps
    print(f"{mode} per-step ms: mean {1e3 * sum(step_s) / len(step_s):.1f}, min {1e3 * min(step_s):.1f}, "
          f"max {1e3 * max(step_s):.1f}, last loss {loss:.4f}")
    train_tps = tokens / sum(step_s)

    # The forward alone, in inference mode (no autograd graph): logits of every position.
    model.eval()
    fwd_s = 0.0
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            ids = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
            t0 = time.perf_counter()
            logits_fn(ids)  # CPU ops are synchronous: the logits exist on return
            if i >= args.warmup:
                fwd_s += time.perf_counter() - t0
    return train_tps, tokens / fwd_s


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; modes are {', '.join(MODES)}")
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, tied={args.tied}, "
          f"cpu capability={torch.backends.cpu.get_cpu_capability()}")
    if args.lora:
        print(f"lora: rank {args.lora}, alpha 16, all seven linear layers (peft)")
    print(f"shape: layers={args.layers} hidden={args.hidden} heads={args.heads}/{args.kv_heads} "
          f"intermediate={args.intermediate} vocab={args.vocab} batch={args.batch} context={args.context}")
    results = {}
    for m in modes:
        try:
            results[m] = bench_mode(args, m)
        except Exception as e:  # a mode this machine can't run is reported, not fatal
            print(f"pytorch {m} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        print(f"pytorch {m} train tokens/s: {results[m][0]:.1f}")
        print(f"pytorch {m} forward tokens/s: {results[m][1]:.1f}", flush=True)
    if not results:
        raise SystemExit("no mode ran")
    best = max(results, key=lambda m: results[m][0])
    print(f"pytorch best train mode: {best}")
    print(f"pytorch forward tokens/s: {max(r[1] for r in results.values()):.1f}")
    print(f"pytorch train tokens/s: {results[best][0]:.1f}")


if __name__ == "__main__":
    main()
