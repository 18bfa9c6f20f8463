#!/usr/bin/env python3
"""Generate golden test fixtures for chatforge's Llama engine.

For each tiny random causal LM defined in FIXTURES below (Llama, and the Llama
family's relatives chatforge imports: Llama 3's rope scaling, Llama with biases,
Qwen2, Qwen3, Mistral), this writes
crates/core/tests/fixtures/<name>/ with:

  config.json, model.safetensors  -- exactly as save_pretrained() writes them
  golden.safetensors              -- reference tensors computed by HF/PyTorch:
      input_ids  int64   [B, T]
      labels     int64   [B, T]    input_ids with a few positions = -100
      logits     float32 [B, T, V] model(input_ids).logits
      loss       float32 [1]       HF shifted causal-LM mean cross-entropy
      grad.<param name> float32    d loss / d param for every named parameter

Run by hand from the repository root:

    /tmp/venv/bin/python tools/make_fixtures.py

The output is deterministic: running it twice produces byte-identical files
(given the versions pinned in tools/requirements.txt).
"""

import shutil
import sys
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TOOLS_DIR.parent
FIXTURES_DIR = REPO_ROOT / "crates" / "core" / "tests" / "fixtures"

# Packages whose versions affect the bytes we write; they must match the pins.
CHECKED_PACKAGES = ("torch", "transformers", "safetensors")


def read_pins(path):
    """Parse `name==version` lines of a requirements file into a dict."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def check_versions():
    """Exit with a clear message unless installed versions equal the pins."""
    import importlib

    pins = read_pins(TOOLS_DIR / "requirements.txt")
    problems = []
    for name in CHECKED_PACKAGES:
        installed = importlib.import_module(name).__version__
        # torch reports e.g. "2.15.0+cu132"; the local build tag is not pinned.
        installed_base = installed.split("+", 1)[0]
        pinned = pins.get(name)
        if pinned is None:
            problems.append(f"  {name}: not pinned in tools/requirements.txt")
        elif installed_base != pinned:
            problems.append(f"  {name}: installed {installed}, pinned {pinned}")
    if problems:
        sys.exit(
            "make_fixtures.py: package versions differ from tools/requirements.txt:\n"
            + "\n".join(problems)
            + "\nInstall the pinned versions, e.g.\n"
            "  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r tools/requirements.txt"
        )


check_versions()

import torch  # noqa: E402  (imported after the version check on purpose)
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# model family -> (config class, model class)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}

# Batch shape of the golden inputs.
BATCH = 2
SEQ = 16

# Shared model shape; each fixture overrides a few fields.
BASE_CONFIG = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
)

FIXTURES = [
    dict(
        name="tied_gqa",
        seed=1234,
        config=dict(
            tie_word_embeddings=True,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention: 2 q heads per kv head
            rope_theta=10000.0,
        ),
    ),
    dict(
        name="untied_mha",
        seed=5678,
        config=dict(
            tie_word_embeddings=False,
            num_attention_heads=4,
            num_key_value_heads=4,  # plain multi-head attention
            rope_theta=500000.0,
        ),
    ),
    # Llama 3.1's banded rope scaling. head_dim 16 and an original context of 64 put one
    # frequency in each band: kept (wavelength 6.3 < 64/4), interpolated (32.3), divided (> 64).
    dict(
        name="llama3_rope",
        seed=2468,
        config=dict(
            tie_word_embeddings=False,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                 low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=64),
        ),
    ),
    # Llama with attention_bias (q/k/v/o) and mlp_bias (gate/up/down).
    dict(
        name="llama_bias",
        seed=1357,
        config=dict(
            tie_word_embeddings=False,
            num_attention_heads=4,
            num_key_value_heads=2,
            attention_bias=True,
            mlp_bias=True,
        ),
    ),
    # Qwen2/2.5: q/k/v biases, no o bias.
    dict(
        name="qwen2",
        family="qwen2",
        seed=3579,
        config=dict(tie_word_embeddings=False, num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0),
    ),
    # Qwen3: RMSNorm over each head of q and k; head_dim 16 with 4 heads, so q is 64 wide
    # while the hidden size is 32; tied embeddings as in Qwen3-0.6B.
    dict(
        name="qwen3",
        family="qwen3",
        seed=4680,
        config=dict(tie_word_embeddings=True, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    ),
    # Mistral: a Llama whose sliding window (4096) is longer than the context, so attention is full.
    dict(
        name="mistral",
        family="mistral",
        seed=5791,
        config=dict(tie_word_embeddings=False, num_attention_heads=4, num_key_value_heads=2, sliding_window=4096),
    ),
]

# Positions (batch row, time step) whose label is set to the ignore index.
# Position 0 is avoided: HF shifts labels left, so labels[:, 0] is never a
# target and ignoring it would test nothing.
IGNORE_INDEX = -100
IGNORED_POSITIONS = [(0, 3), (0, 10), (1, 7), (1, 15)]

# Re-initialisation scales (see reinit_weights).
WEIGHT_STD = 0.2
NORM_JITTER = 0.1


def reinit_weights(model):
    """Re-initialise all parameters so the goldens are discriminating.

    HF's default init (std 0.02, norms = 1) gives nearly flat logits and
    norm gradients that barely depend on the norm weights. Instead:
      * every linear / embedding weight ~ N(0, 0.2^2)
      * every RMSNorm weight = 1 + 0.1 * N(0, 1)
    named_parameters() deduplicates shared tensors, so a tied LM head is
    initialised exactly once (through model.embed_tokens.weight).
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):  # input/post_attention layernorms, final norm, q/k norms
                param.copy_(1.0 + NORM_JITTER * torch.randn_like(param))
            elif param.dim() == 2 or name.endswith(".bias"):  # embedding, linear weights and biases
                param.normal_(mean=0.0, std=WEIGHT_STD)
            else:
                raise ValueError(f"unexpected parameter {name} with shape {tuple(param.shape)}")


def build_model(spec):
    """Build the fixture's float32 eager-attention model with deterministic weights."""
    # Eager attention: the plain matmul/softmax reference implementation.
    config_cls, model_cls = FAMILIES[spec.get("family", "llama")]
    config = config_cls(**{**BASE_CONFIG, **spec["config"]}, attn_implementation="eager")
    torch.manual_seed(spec["seed"])
    model = model_cls(config).to(torch.float32)
    assert model.config._attn_implementation == "eager"
    reinit_weights(model)
    model.eval()  # no dropout is configured anyway; eval() makes that explicit
    return model


def make_batch(spec, vocab_size):
    """Deterministic random token ids and labels with a few ignored targets."""
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    input_ids = torch.randint(0, vocab_size, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    labels = input_ids.clone()
    for row, col in IGNORED_POSITIONS:
        labels[row, col] = IGNORE_INDEX
    return input_ids, labels


def write_fixture(spec):
    name = spec["name"]
    out_dir = FIXTURES_DIR / name
    # Start from an empty folder so no stale files survive.
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    model = build_model(spec)
    model.save_pretrained(out_dir, safe_serialization=True)
    # Keep only the two files the Rust loader reads.
    for entry in out_dir.iterdir():
        if entry.name not in ("config.json", "model.safetensors"):
            entry.unlink()

    input_ids, labels = make_batch(spec, model.config.vocab_size)

    # One forward pass gives both the logits and the HF loss: labels do not
    # change the logits, and the loss is HF's own shifted causal-LM mean
    # cross-entropy over targets != -100.
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()

    golden = {
        "input_ids": input_ids,
        "labels": labels,
        "logits": out.logits.detach().to(torch.float32),
        "loss": out.loss.detach().to(torch.float32).reshape(1),
    }
    for pname, param in model.named_parameters():
        if param.grad is None:
            raise RuntimeError(f"{name}: parameter {pname} received no gradient")
        golden[f"grad.{pname}"] = param.grad.detach().to(torch.float32)
    golden = {k: v.contiguous() for k, v in golden.items()}
    save_file(golden, str(out_dir / "golden.safetensors"))

    n_params = sum(p.numel() for p in model.parameters())
    n_targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
    print(f"[{name}] params={n_params} tied={model.config.tie_word_embeddings} "
          f"heads={model.config.num_attention_heads}/{model.config.num_key_value_heads} "
          f"family={spec.get('family', 'llama')}")
    print(f"[{name}] max|logit|={golden['logits'].abs().max().item():.6f} "
          f"loss={golden['loss'].item():.8f} (over {n_targets} targets)")
    for entry in sorted(out_dir.iterdir()):
        print(f"[{name}]   {entry.relative_to(REPO_ROOT)}  {entry.stat().st_size} bytes")


def main():
    # Single-threaded CPU math so the goldens do not depend on the core count.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, writing fixtures under {FIXTURES_DIR.relative_to(REPO_ROOT)}")
    for spec in FIXTURES:
        write_fixture(spec)
    total = sum(f.stat().st_size for f in FIXTURES_DIR.rglob("*") if f.is_file())
    print(f"total fixture size: {total} bytes ({total / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
