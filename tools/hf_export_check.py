#!/usr/bin/env python3
"""Loads a `chatforge export --format hf` folder with transformers and reports what the Rust test
(crates/cli/tests/export.rs) compares with chatforge's own figures.

Usage: python3 tools/hf_export_check.py FOLDER REQUEST.json
REQUEST.json: {"ids": [[...], ...], "texts": [...], "conversations": [[{"role", "content"}, ...], ...]}
Prints one JSON object: "logits" (per id list, [T][V] float32 values from AutoModelForCausalLM),
"encoded" (AutoTokenizer ids of each text, no special tokens added), "rendered" and "rendered_ids"
(apply_chat_template with add_generation_prompt, as text and as ids), the tokenizer's special
tokens and the model class.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, request = sys.argv[1], json.load(open(sys.argv[2]))
torch.set_num_threads(1)
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
model.eval()
out = {"model_class": type(model).__name__, "tokenizer_class": type(tok).__name__,
       "bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token, "eos_id": tok.eos_token_id}
with torch.no_grad():
    out["logits"] = [model(torch.tensor([ids])).logits[0].tolist() for ids in request["ids"]]
out["encoded"] = [tok(t, add_special_tokens=False)["input_ids"] for t in request["texts"]]
out["rendered"] = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in request["conversations"]]
ids = [tok.apply_chat_template(c, tokenize=True, add_generation_prompt=True) for c in request["conversations"]]
# transformers 5 returns a BatchEncoding; 4 returns a list.
out["rendered_ids"] = [list(x["input_ids"]) if hasattr(x, "keys") else list(x) for x in ids]
print(json.dumps(out))
