#!/usr/bin/env python3
"""PyTorch peer of `chatforge bench train`.

Trains a randomly initialised float32 LlamaForCausalLM on random tokens on the
CPU and reports training throughput, so chatforge's own engine can be
compared against PyTorch + HF transformers on the same model shape.

    /tmp/venv/bin/python tools/bench_torch.py            # defaults below
    /tmp/venv/bin/python tools/bench_torch.py --tied --threads 2

The last two lines printed are always

    pytorch forward tokens/s: <value>
    pytorch train tokens/s: <value>

(the forward alone runs after training, in inference mode, over fresh batches of the same shape).

Token accounting: tokens/step = batch * context, i.e. every input position
is counted. HF's causal-LM loss actually has only context-1 targets per row
(labels are shifted left by one), but the forward/backward work covers all
context positions, and `chatforge bench train` counts the same way.
"""

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


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
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--tied", action="store_true", help="tie LM head to the token embedding")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
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
    model.train()

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1
    )

    # parameters() deduplicates a tied embedding/LM head, so it is counted once.
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"attn={model.config._attn_implementation}, tied={args.tied}")
    print(f"params: {n_params} ({n_params / 1e6:.2f} M)")
    print(f"shape: layers={args.layers} hidden={args.hidden} heads={args.heads}/{args.kv_heads} "
          f"intermediate={args.intermediate} vocab={args.vocab} batch={args.batch} context={args.context}")

    # Fixed-seed source of random token batches (a fresh batch every step).
    gen = torch.Generator().manual_seed(args.seed + 1)

    def train_step():
        ids = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
        # labels == input_ids: HF shifts them internally for next-token prediction.
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() also forces the step to finish

    for i in range(args.warmup):
        t0 = time.perf_counter()
        loss = train_step()
        print(f"warmup step {i}: loss {loss:.4f}  {(time.perf_counter() - t0) * 1e3:.1f} ms")

    step_ms = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = train_step()
        dt = time.perf_counter() - t0
        step_ms.append(dt * 1e3)
        print(f"step {i}: loss {loss:.4f}  {dt * 1e3:.1f} ms")

    total_s = sum(step_ms) / 1e3
    tokens = args.batch * args.context * args.steps  # every input position counts
    print(f"per-step ms: mean {sum(step_ms) / len(step_ms):.1f}, "
          f"min {min(step_ms):.1f}, max {max(step_ms):.1f}")
    train_tps = tokens / total_s

    # The forward alone, in inference mode (no autograd graph): logits of every position.
    model.eval()
    fwd_s = 0.0
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            ids = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
            t0 = time.perf_counter()
            model(input_ids=ids).logits  # CPU ops are synchronous: the logits exist on return
            if i >= args.warmup:
                fwd_s += time.perf_counter() - t0
    print(f"pytorch forward tokens/s: {tokens / fwd_s:.1f}")
    print(f"pytorch train tokens/s: {train_tps:.1f}")


if __name__ == "__main__":
    main()
