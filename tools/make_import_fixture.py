#!/usr/bin/env python3
"""A tiny random Qwen2-shaped HF model folder for `chatforge import` tests.

Writes crates/cli/tests/fixtures/qwen2_tiny/ as `save_pretrained` lays out a real checkpoint:
bf16 weights in two shards with model.safetensors.index.json, config.json (Qwen2ForCausalLM,
q/k/v biases), generation_config.json (two stop ids), tokenizer.json (the data crate's fixture
tokenizer) and tokenizer_config.json whose chat_template is the Qwen2.5-form test template
(crates/data/tests/fixtures/templates/chatml_tools.jinja: a default system message, tools).
Plus golden.safetensors: input_ids [1, 16] and the logits `transformers` computes from the
bf16 weights in float32 (what chatforge's import, which converts bf16 to f32, must give).

    /tmp/venv/bin/python tools/make_import_fixture.py
    /tmp/venv/bin/python tools/make_import_fixture.py --llama2-sp   (llama2_sp_tiny/, below)
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT = REPO_ROOT / "crates" / "cli" / "tests" / "fixtures" / "qwen2_tiny"
DATA = REPO_ROOT / "crates" / "data" / "tests" / "fixtures"


def main():
    torch.manual_seed(2024)
    torch.set_num_threads(1)
    tok = json.loads((DATA / "tokenizer.json").read_text())
    vocab = len(tok["model"]["vocab"])
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_theta=1000000.0, tie_word_embeddings=False, bos_token_id=None, eos_token_id=2,
                         attn_implementation="eager")
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.05)  # HF initialises biases to zero; make them matter
    model = model.to(torch.bfloat16)
    model.generation_config.eos_token_id = [2, 0]
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, max_shard_size="200KB")
    shutil.copy(DATA / "tokenizer.json", OUT / "tokenizer.json")
    template = (DATA / "templates" / "chatml_tools.jinja").read_text()
    (OUT / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "model_max_length": 512, "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template,
    }, indent=2) + "\n")
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model.float()(input_ids=ids).logits
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()}, str(OUT / "golden.safetensors"))
    for f in sorted(OUT.iterdir()):
        print(f.relative_to(REPO_ROOT), f.stat().st_size)


def llama2_sentencepiece():
    """crates/cli/tests/fixtures/llama2_sp_tiny/: a tiny random Llama-2-shaped model (f32, one
    file) for the data crate's SentencePiece-style tokenizer (byte fallback, `▁` for spaces)
    and its Llama-2-form template (crates/data/tests/fixtures/sentencepiece/, made by
    tools/make_sentencepiece_fixture.py), and golden.safetensors as above. The tokenizer files
    are not copied: the test puts them beside the weights, so they are committed once."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = REPO_ROOT / "crates" / "cli" / "tests" / "fixtures" / "llama2_sp_tiny"
    sp = DATA / "sentencepiece"
    torch.manual_seed(2025)
    vocab = len(json.loads((sp / "tokenizer.json").read_text())["model"]["vocab"])
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                         attn_implementation="eager")
    model = LlamaForCausalLM(config)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()}, str(out / "golden.safetensors"))
    for f in sorted(out.iterdir()):
        print(f.relative_to(REPO_ROOT), f.stat().st_size)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--llama2-sp"]:
        llama2_sentencepiece()
    else:
        main()
