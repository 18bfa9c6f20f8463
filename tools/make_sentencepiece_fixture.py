#!/usr/bin/env python3
"""A tiny SentencePiece-style tokenizer (Llama 2 / Mistral / TinyLlama form) and golden ids.

Those models' tokenizer.json is not byte-level: a BPE over UTF-8 text whose normalizer writes
spaces as "▁" (and prepends one), with `byte_fallback`: a character the vocabulary lacks becomes
its UTF-8 bytes, tokens "<0x00>" .. "<0xFF>". Their decoder turns "▁" back into spaces, fuses
the byte tokens and strips the prepended space.

Writes crates/data/tests/fixtures/sentencepiece/:
  tokenizer.json         BPE with byte_fallback trained here on tokenizer_corpus.txt by HF
                         `tokenizers` (vocab: <unk> <s> </s>, the 256 byte tokens, 300 merges' worth),
                         laid out as Llama 2's is
  tokenizer_config.json  bos/eos and a Llama-2-form chat template ([INST] ... [/INST])
  ids.json               [{"text", "ids", "decoded"}]: what `tokenizers` gives, add_special_tokens=False
  chat.json              [{"messages", "ids", "text"}]: `transformers`' apply_chat_template, tokenized

    /tmp/venv/bin/python tools/make_sentencepiece_fixture.py

The crate test `sentencepiece_tokenizers_import_and_match_python` checks chatforge against it.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, trainers

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/data/tests/fixtures"
OUT = FIX / "sentencepiece"

TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

TEXTS = [
    "Hello world",
    "A tokenizer turns text into numbers.",
    "  two leading spaces and a tab\there",
    "line one\nline two\r\n",
    "café, naïve, ÉCOLE",
    "中文 and 🙂 fall back to bytes",
    "x=1+2; y = x*3",
    "<s> and </s> typed by a user",
]


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "General Kenobi!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    [{"role": "user", "content": "  spaced\nlines  "}, {"role": "assistant", "content": "ok 🦀"}],
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = (FIX / "tokenizer_corpus.txt").read_text()
    # Merges learned on the corpus, as Llama 2's are on theirs.
    learn = Tokenizer(models.BPE(unk_token="<unk>"))
    learn.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    learn.train_from_iterator(corpus.splitlines(), trainer)
    learned = json.loads(learn.to_str())["model"]
    # Llama 2's id order: <unk> <s> </s>, then the 256 byte tokens, then the merged pieces.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<unk>", "<s>", "</s>"]])
    tok.save(str(OUT / "tokenizer.json"))
    (OUT / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": TEMPLATE}, indent=1) + "\n"
    )
    tok = Tokenizer.from_file(str(OUT / "tokenizer.json"))
    tok.encode_special_tokens = True
    rows = []
    for t in TEXTS:
        ids = tok.encode(t, add_special_tokens=False).ids
        rows.append({"text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    (OUT / "ids.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    # The template's rendering as transformers tokenizes it (the whole text at once).
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(OUT / "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.chat_template = TEMPLATE
    chats = []
    for messages in CONVERSATIONS:
        ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        if hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
            ids = ids["input_ids"]
        chats.append({"messages": messages, "ids": list(ids), "text": hf.apply_chat_template(messages, tokenize=False)})
    (OUT / "chat.json").write_text(json.dumps(chats, ensure_ascii=False, indent=1) + "\n")
    print(f"{OUT}: vocab {tok.get_vocab_size()}, {len(rows)} texts")


if __name__ == "__main__":
    main()
