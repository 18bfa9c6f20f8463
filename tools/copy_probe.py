#!/usr/bin/env python3
"""Can a model copy? Next-token accuracy on the second copy of a repeated span.

A tool call needs the model to copy the user's numbers and words into the call's arguments.
Copying is what induction heads do (attend to what followed the last occurrence of the current
token, and say it again). This measures it directly: each probe row is 40 tokens of val text,
then a span of L tokens, then the same span again; a model that copies predicts the second copy
far better than the first.

    /tmp/venv/bin/python tools/copy_probe.py R [--stages base,sft] [--rows 64] [--span 16]

Three kinds of span, from R's val shard and tokenizer:
  natural  a stretch of val text (the first copy is partly predictable from language alone)
  iid      val tokens drawn independently (only copying predicts the second copy)
  digits   random digit strings (the numbers a calculator call copies)

It prints, per stage and kind, the greedy next-token accuracy on the first copy and on the
second (n = rows * (L - 1) predictions each), with a 95 % Wilson interval on the second.
"""
import argparse
import math
import os

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def load_tokens(path):
    b = open(path, "rb").read()
    if b[:8] != b"CFTOKENS":
        raise SystemExit(f"{path}: not a chatforge token shard")
    width = int.from_bytes(b[12:16], "little")
    return np.frombuffer(b[24:], dtype=np.uint16 if width == 2 else np.uint32).astype(np.int64)


def wilson(k, n, z=1.96):
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--stages", default="base")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--span", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    val = load_tokens(os.path.join(a.run, "tokens", "val.bin"))
    tok = Tokenizer.from_file(os.path.join(a.run, "tokenizer.json"))
    digits = np.array([tok.token_to_id(str(i)) for i in range(10)])
    if any(d is None for d in digits):
        raise SystemExit("the tokenizer has no single-digit tokens")
    L, pre = a.span, 40
    for stage in a.stages.split(","):
        model = AutoModelForCausalLM.from_pretrained(os.path.join(a.run, stage)).eval()
        rng = np.random.default_rng(a.seed)
        for kind in ("natural", "iid", "digits"):
            rows = []
            for _ in range(a.rows):
                if kind == "natural":
                    s = rng.integers(0, len(val) - L)
                    span = val[s : s + L]
                elif kind == "iid":
                    span = val[rng.integers(0, len(val), L)]
                else:
                    span = digits[rng.integers(0, 10, L)]
                o = rng.integers(0, len(val) - pre)
                rows.append(np.concatenate([val[o : o + pre], span, span]))
            x = torch.tensor(np.stack(rows))
            with torch.no_grad():
                pred = model(x).logits.argmax(-1)
            first = (pred[:, pre : pre + L - 1] == x[:, pre + 1 : pre + L]).sum().item()
            second = (pred[:, pre + L : pre + 2 * L - 1] == x[:, pre + L + 1 : pre + 2 * L]).sum().item()
            n = a.rows * (L - 1)
            lo, hi = wilson(second, n)
            print(f"{stage:6} {kind:8} first copy {first / n:6.1%}  second copy {second / n:6.1%} [{lo:.1%}, {hi:.1%}]  (n={n})")


if __name__ == "__main__":
    main()
