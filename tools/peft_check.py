#!/usr/bin/env python3
"""Check a chatforge LoRA stage with `peft`: the adapters it saved load onto its base with
PeftModel.from_pretrained and give the logits of the merged model it saved beside them, and
merge_and_unload() gives its merged weights.

    python tools/peft_check.py BASE_DIR STAGE_DIR

BASE_DIR: the frozen base (`R/base` for SFT, `R/sft` for DPO); STAGE_DIR: the LoRA stage,
holding the merged model (config.json, model.safetensors) and adapter/ (adapter_config.json,
adapter_model.safetensors). transformers loads STAGE_DIR as a plain model.
Prints one JSON line of figures; exits non-zero when a check fails.
"""

import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    base_dir, stage_dir = sys.argv[1], sys.argv[2]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, f"{stage_dir}/adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(stage_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (2, 16), generator=g)
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        theirs = merged(input_ids=ids).logits
        without = model.get_base_model()
        with model.disable_adapter():
            base_logits = without(input_ids=ids).logits
    logit_err = (with_adapter - theirs).abs().max().item()
    moved = (with_adapter - base_logits).abs().max().item()
    unloaded = model.merge_and_unload().state_dict()
    saved = load_file(f"{stage_dir}/model.safetensors")
    weight_err = max((unloaded[k] - saved[k]).abs().max().item() for k in saved)
    adapters = len(load_file(f"{stage_dir}/adapter/adapter_model.safetensors"))
    out = {"logit_max_abs_diff": logit_err, "adapter_moves_logits_by": moved, "merged_weight_max_abs_diff": weight_err, "adapter_tensors": adapters}
    print(json.dumps(out))
    ok = logit_err < 1e-4 and weight_err < 1e-5 and moved > 1e-6 and adapters > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
