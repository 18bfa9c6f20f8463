#!/usr/bin/env python3
"""Golden fixture for the reward model's scalar head: a tiny random HF
`LlamaForSequenceClassification` (num_labels=1) and the Bradley-Terry loss.

Writes crates/core/tests/fixtures/rm_tiny/ with config.json, model.safetensors and
golden.safetensors:
    input_ids int64 [4, T]   rows 0,1 = (chosen, rejected) of pair 1; rows 2,3 of pair 2;
                             right-padded with pad_token_id 0
    rewards   float32 [4]    the score at each row's last non-pad token (HF's pooling)
    loss      float32 [1]    mean over pairs of -log sigmoid(r_chosen - r_rejected)
    grad.<name>              d loss / d param

Run from the repository root:  /tmp/venv/bin/python tools/make_rm_fixture.py
(pinned versions: tools/requirements.txt; the output is deterministic).
"""

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForSequenceClassification

OUT = Path(__file__).resolve().parent.parent / "crates" / "core" / "tests" / "fixtures" / "rm_tiny"
T = 12
LENGTHS = [12, 9, 7, 10]

config = LlamaConfig(
    vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
    tie_word_embeddings=False, num_labels=1, pad_token_id=0, attn_implementation="eager",
)
torch.manual_seed(4321)
model = LlamaForSequenceClassification(config).to(torch.float32)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        else:
            p.normal_(0.0, 0.2)
model.eval()

gen = torch.Generator().manual_seed(99)
ids = torch.randint(1, config.vocab_size, (len(LENGTHS), T), generator=gen, dtype=torch.int64)
for row, n in enumerate(LENGTHS):
    ids[row, n:] = 0

out = model(input_ids=ids)
rewards = out.logits[:, 0]
loss = -F.logsigmoid(rewards[0::2] - rewards[1::2]).mean()
model.zero_grad(set_to_none=True)
loss.backward()

if OUT.exists():
    shutil.rmtree(OUT)
OUT.mkdir(parents=True)
model.save_pretrained(OUT, safe_serialization=True)
for entry in OUT.iterdir():
    if entry.name not in ("config.json", "model.safetensors"):
        entry.unlink()
golden = {"input_ids": ids, "rewards": rewards.detach().contiguous(), "loss": loss.detach().reshape(1)}
for name, p in model.named_parameters():
    golden[f"grad.{name}"] = p.grad.detach().contiguous()
save_file(golden, OUT / "golden.safetensors")
print(f"wrote {OUT}: rewards {rewards.tolist()} loss {loss.item():.6f}")
