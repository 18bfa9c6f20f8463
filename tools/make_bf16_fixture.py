#!/usr/bin/env python3
"""The bf16 reference for chatforge's mixed precision: PyTorch bf16 autocast on a golden fixture.

Loads crates/core/tests/fixtures/untied_mha (written by make_fixtures.py), runs the same batch
as its golden.safetensors under `torch.autocast("cpu", dtype=torch.bfloat16)` -- the mode a
PyTorch user trains in -- and writes golden_bf16.safetensors beside it:

    logits  float32 [B, T, V]  autocast logits (bf16 matmuls), cast to fp32
    loss    float32 [1]        HF's shifted cross-entropy on them, in fp32
    grad.<param name>          fp32 gradients of the fp32 master weights

chatforge's bf16 differs from autocast by design (its matmul outputs stay fp32; autocast
rounds them to bf16), so the test (crates/core/tests/golden.rs) holds our bf16 within
autocast's own distance from fp32, not to autocast's bits.

    /tmp/venv/bin/python tools/make_bf16_fixture.py
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

FIXTURE = Path(__file__).resolve().parent.parent / "crates" / "core" / "tests" / "fixtures" / "untied_mha"


def main():
    torch.set_num_threads(1)
    golden = load_file(str(FIXTURE / "golden.safetensors"))
    model = LlamaForCausalLM.from_pretrained(str(FIXTURE), torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids, labels = golden["input_ids"], golden["labels"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    logits = logits.float()
    vocab = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        out[f"grad.{name}"] = p.grad.detach().float().contiguous()
    save_file(out, str(FIXTURE / "golden_bf16.safetensors"))
    fp32 = golden["logits"]
    rel = ((logits - fp32).norm() / fp32.norm()).item()
    print(f"torch {torch.__version__}: autocast bf16 logits vs fp32: relative RMS {rel:.3e}; "
          f"loss {loss.item():.6f} vs {golden['loss'].item():.6f}")


if __name__ == "__main__":
    main()
