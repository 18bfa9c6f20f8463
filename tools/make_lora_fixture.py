#!/usr/bin/env python3
"""Golden fixture for chatforge's LoRA adapters, made by `peft`.

Base: the tiny random Qwen2 of crates/core/tests/fixtures/qwen2 (q/k/v biases, GQA), so the
adapter sits beside a bias. `peft` wraps it in a LoRA of rank 4, alpha 8, on every linear
layer of every block, with *random* A and B (`init_lora_weights=False`; PEFT's default B = 0
would make the adapter invisible), and this writes crates/core/tests/fixtures/lora_qwen2/:

  adapter_config.json, adapter_model.safetensors -- exactly as save_pretrained() writes them
  golden.safetensors -- reference tensors computed by peft/PyTorch:
      input_ids  int64   [B, T]
      labels     int64   [B, T]   input_ids with a few positions = -100
      logits     float32 [B, T, V]
      loss       float32 [1]      HF's shifted causal-LM mean cross-entropy
      grad.<our name> float32     d loss / d A and d B of every adapter (the base is frozen),
                                  named as chatforge names them (`model.layers.0.self_attn.
                                  q_proj.lora_A.weight`)
      merged.<name>   float32     every weight after merge_and_unload()

Run from the repository root (needs torch, transformers and peft):

    /tmp/venv/bin/python tools/make_lora_fixture.py
"""

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "crates" / "core" / "tests" / "fixtures" / "qwen2"
OUT = ROOT / "crates" / "core" / "tests" / "fixtures" / "lora_qwen2"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(BASE, torch_dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT)
    (OUT / "README.md").unlink(missing_ok=True)  # peft's model card template
    # The base's path, relative to the adapter (peft records the absolute one it loaded).
    cfg_path = OUT / "adapter_config.json"
    saved = json.loads(cfg_path.read_text())
    saved["base_model_name_or_path"] = "../qwen2"
    cfg_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, 7] = -100
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    golden = {
        "input_ids": ids,
        "labels": labels,
        "logits": out.logits.detach().contiguous(),
        "loss": out.loss.detach().reshape(1),
    }
    for name, p in model.named_parameters():
        if p.requires_grad:
            # base_model.model.<module>.lora_A.default.weight -> <module>.lora_A.weight
            ours = name.removeprefix("base_model.model.").replace(".default.", ".")
            golden[f"grad.{ours}"] = p.grad.detach().contiguous()
    merged = model.merge_and_unload()
    for name, p in merged.state_dict().items():
        golden[f"merged.{name}"] = p.detach().contiguous()
    save_file(golden, OUT / "golden.safetensors")
    print(f"wrote {OUT} (loss {out.loss.item():.6f})")


if __name__ == "__main__":
    main()
