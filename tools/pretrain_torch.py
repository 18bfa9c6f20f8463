#!/usr/bin/env python3
"""PyTorch peer of `chatforge bench pretrain`.

Pretrains the model of a chatforge run folder with PyTorch + HF transformers
on the CPU, doing the same work as `chatforge pretrain`'s loop, and reports
end-to-end training throughput (data loading, evals and checkpoints inside
the timed loop).

    /tmp/venv/bin/python tools/pretrain_torch.py --run R --steps 60 --threads 2

It reads, from the run folder R that `chatforge pretrain` wrote:

    R/base/config.json   the HF LlamaConfig: the model is built from it, so
                         the shape is exactly chatforge's (float32, sdpa)
    R/tokens/train.bin   token shards (magic b"CFTOKENS", u32 version 1,
    R/tokens/val.bin     u32 dtype width 2|4, u64 count, little-endian ids)
    R/tokenizer.json     bytes per token, for bits per byte

The work per step matches chatforge's: `batch` random windows of context+1
tokens drawn from the train shard (numpy, seeded; the draws differ from
chatforge's ChaCha stream, the distribution is the same), forward, mean
cross-entropy over all batch*context next-token targets, backward, global
grad-norm clip 1.0, AdamW (betas 0.9/0.95, eps 1e-8, weight decay on 2-D
weights except the token embedding), linear warmup then cosine decay to
min-lr-frac * lr (AdamW fused=True by default: on a 2-core Xeon it gave
PyTorch ~6 % more tokens/s than the default implementation). Every --eval-every steps and after the last step: val loss
(nats/token) and bits per byte over the first --eval-tokens val tokens in
non-overlapping context windows, batch rows per forward (the last forward
padded like chatforge's), special-token targets left out. With
--checkpoint-every C it also saves model + optimizer state with torch.save
(written to a temp file, fsynced, renamed: R/torch/checkpoint.pt) every C
steps and after the last step, as chatforge does.

Initialisation follows chatforge's: N(0, 0.02) for embeddings and linear
layers, N(0, 0.02/sqrt(2*layers)) for the residual projections (o_proj,
down_proj), ones for RMSNorm weights.

Token accounting: tokens = steps * grad_accum * batch * context. The last
lines printed are

    pytorch final: val loss <nats/token>, <bits/byte> bits/byte, ...
    pytorch pretrain tokens/s: <value>
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

SHARD_MAGIC = b"CFTOKENS"
SHARD_HEADER = 8 + 4 + 4 + 8


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="chatforge run folder")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=None,
                   help="default: max_position_embeddings of R/base/config.json")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-tokens", type=int, default=32768)
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a torch checkpoint every N steps and at the end (0: never)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=20,
                   help="warmup steps (capped at steps/5, as chatforge does)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--adamw", choices=["fused", "default"], default="fused",
                   help="torch.optim.AdamW(fused=True) (the faster one on this CPU) or the default "
                        "for-loop implementation")
    return p.parse_args()


def read_shard(path):
    """Token ids of a chatforge shard, as a numpy array (u16 or u32)."""
    with open(path, "rb") as f:
        head = f.read(SHARD_HEADER)
        if len(head) < SHARD_HEADER or head[:8] != SHARD_MAGIC:
            raise SystemExit(f"{path}: not a chatforge token shard (bad magic)")
        version = int.from_bytes(head[8:12], "little")
        width = int.from_bytes(head[12:16], "little")
        count = int.from_bytes(head[16:24], "little")
        if version != 1 or width not in (2, 4):
            raise SystemExit(f"{path}: unsupported shard version {version} / width {width}")
        ids = np.fromfile(f, dtype="<u2" if width == 2 else "<u4")
    if len(ids) != count:
        raise SystemExit(f"{path}: header says {count} tokens, file holds {len(ids)}")
    return ids


def byte_level_alphabet():
    """The character that stands for each byte in a byte-level BPE vocabulary: printable
    Latin-1 bytes stand for themselves, the others are moved up to 256, 257, ... in order."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    char_of, extra = {}, 0
    for b in range(256):
        if b in keep:
            char_of[b] = chr(b)
        else:
            char_of[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in char_of.items()}


def token_byte_counts(tokenizer_path):
    """UTF-8 bytes each token id stands for (0 for special tokens), and the <|endoftext|> id."""
    tok = Tokenizer.from_file(str(tokenizer_path))
    eot = tok.token_to_id("<|endoftext|>")
    if eot is None:
        raise SystemExit(f"{tokenizer_path}: no <|endoftext|> token")
    byte_of = byte_level_alphabet()
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    counts = np.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        if i in special:
            continue
        if all(c in byte_of for c in piece):
            counts[i] = len(piece)  # one character per byte
        else:
            counts[i] = len(piece.encode("utf-8"))
    return counts, eot


def lr_at(step, total, lr, warmup, min_lr_frac):
    """chatforge's schedule: linear warmup, then cosine decay to min_lr_frac * lr."""
    warm = min(warmup, max(total - 1, 0))
    if step < warm:
        return lr * (step + 1) / warm
    floor = lr * min_lr_frac
    frac = min((step - warm) / max(total - warm, 1), 1.0)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def init_like_chatforge(model, layers):
    resid_std = 0.02 / math.sqrt(2 * layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, resid_std)
            else:
                p.normal_(0.0, 0.02)


def save_checkpoint(path, model, optimizer, step):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = args.run

    with open(os.path.join(run, "base", "config.json")) as f:
        cfg = json.load(f)
    cfg["attn_implementation"] = "sdpa"  # HF's default: torch scaled_dot_product_attention
    config = LlamaConfig(**cfg)
    T = args.context or config.max_position_embeddings
    B, accum = args.batch, args.grad_accum
    model = LlamaForCausalLM(config).to(torch.float32)
    init_like_chatforge(model, config.num_hidden_layers)
    model.train()

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed_tokens" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=(args.adamw == "fused") or None,
    )
    warmup = min(args.warmup, args.steps // 5)

    train = read_shard(os.path.join(run, "tokens", "train.bin"))
    val = read_shard(os.path.join(run, "tokens", "val.bin"))
    token_bytes, eot = token_byte_counts(os.path.join(run, "tokenizer.json"))

    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"attn={model.config._attn_implementation}, tied={config.tie_word_embeddings}, "
          f"adamw={args.adamw}")
    print(f"model: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_attention_heads} heads ({config.num_key_value_heads} kv), "
          f"mlp {config.intermediate_size}, context {T}, vocab {config.vocab_size}: {n_params / 1e6:.2f}M parameters")
    print(f"data: {len(train)} train + {len(val)} val tokens; steps {args.steps}, batch {B} x context {T} "
          f"x accum {accum}, lr {args.lr}, warmup {warmup}, seed {args.seed}")

    rng = np.random.default_rng(args.seed)
    offsets = np.arange(T + 1)

    def next_batch():
        starts = rng.integers(0, len(train) - T, size=B)
        w = torch.from_numpy(train[starts[:, None] + offsets].astype(np.int64))
        return w[:, :-1], w[:, 1:]

    # The eval set is fixed: the first eval_tokens of val in non-overlapping windows, padded to
    # whole forwards of B rows with <|endoftext|> inputs and ignored targets.
    windows = max(min((len(val) - 1) // T, -(-args.eval_tokens // T)), 1)
    rows = -(-windows // B) * B
    ev_x = np.full((rows, T), eot, dtype=np.int64)
    ev_y = np.full((rows, T), -100, dtype=np.int64)
    for w in range(windows):
        s = w * T
        n = min(s + T + 1, len(val)) - s - 1
        ev_x[w, :n] = val[s:s + n]
        y = val[s + 1:s + n + 1].astype(np.int64)
        ev_y[w, :n] = np.where(token_bytes[y] > 0, y, -100)
    ev_x, ev_y = torch.from_numpy(ev_x), torch.from_numpy(ev_y)
    ev_bytes = int(token_bytes[ev_y[ev_y >= 0].numpy()].sum())

    def evaluate():
        model.eval()
        nats = 0.0
        count = 0
        with torch.inference_mode():
            for r in range(0, rows, B):
                logits = model(input_ids=ev_x[r:r + B], use_cache=False).logits
                y = ev_y[r:r + B]
                nats += F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1),
                                        ignore_index=-100, reduction="sum").item()
                count += int((y >= 0).sum())
        model.train()
        return nats / max(count, 1), nats / math.log(2) / max(ev_bytes, 1)

    ckpt_path = os.path.join(run, "torch", "checkpoint.pt")
    val_loss = bpb = float("nan")
    started = time.perf_counter()
    for step in range(args.steps):
        t0 = time.perf_counter()
        loss_sum = 0.0
        for _ in range(accum):
            x, y = next_batch()
            logits = model(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
            (loss / accum).backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = lr_at(step, args.steps, args.lr, warmup, args.min_lr_frac)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        last = done == args.steps
        line = f"step {done:>5}: train {loss_sum / accum:.4f}, {(time.perf_counter() - t0) * 1e3:.0f} ms"
        if done % max(args.eval_every, 1) == 0 or last:
            val_loss, bpb = evaluate()
            line += f", val {val_loss:.4f} nats/token, {bpb:.4f} bits/byte"
        if args.checkpoint_every > 0 and (done % args.checkpoint_every == 0 or last):
            save_checkpoint(ckpt_path, model, optimizer, done)
        print(line, flush=True)
    wall = time.perf_counter() - started

    tokens = args.steps * accum * B * T
    print(f"pytorch final: val loss {val_loss:.4f} nats/token, {bpb:.4f} bits/byte, "
          f"{tokens} tokens in {wall:.1f}s")
    print(f"pytorch pretrain tokens/s: {tokens / wall:.1f}")


if __name__ == "__main__":
    main()
