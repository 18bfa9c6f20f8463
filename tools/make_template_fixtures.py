#!/usr/bin/env python3
"""Golden renderings of model chat templates, computed by HF `transformers`.

For each template under crates/data/tests/fixtures/templates/*.jinja (one per family form:
ChatML with tools as Qwen2.5 writes it, Qwen3's with reasoning blocks and a namespace,
SmolLM2's ChatML with a default system turn, Llama 2's [INST] <<SYS>>, Llama 3's headers,
Mistral's [INST]; written for these tests, not copied from any model), this renders
the 10 conversations below with and without the generation prompt through
`tokenizer.apply_chat_template(..., tokenize=False)` and writes
crates/data/tests/fixtures/templates/renders.json:

    {"transformers": VERSION, "conversations": [...],
     "cases": [{"template": NAME, "conversation": I, "add_generation_prompt": bool,
                "tools": bool, "text": ... | null, "error": ... | null}, ...]}

A template may refuse a conversation (Mistral's has no tool or system-only turns); the case then
records the error, and the Rust test expects minijinja to refuse it too. `tests/template.rs`
checks that `ChatTemplate::render` gives every `text` exactly. Run from the repository root:

    /tmp/venv/bin/python tools/make_template_fixtures.py
"""

import datetime
import json
from pathlib import Path

import transformers
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parent.parent
DIR = REPO_ROOT / "crates" / "data" / "tests" / "fixtures" / "templates"

TOOLS = [
    {"type": "function", "function": {"name": "calculator", "description": "Evaluates arithmetic.",
                                      "parameters": {"properties": {"expression": {"type": "string"}},
                                                     "required": ["expression"], "type": "object"}}},
    {"type": "function", "function": {"name": "spell", "description": "Spells a word letter by letter.",
                                      "parameters": {"properties": {"word": {"type": "string"}},
                                                     "required": ["word"], "type": "object"}}},
]


def call(i, name, args):
    return {"function": {"arguments": args, "name": name}, "id": f"call_{i}", "type": "function"}


# Keys are written sorted: chatforge hands templates JSON objects in key order.
CONVERSATIONS = [
    [{"content": "Who wrote Comus?", "role": "user"}],
    [{"content": "Answer in one word.", "role": "system"}, {"content": "Who wrote Comus?", "role": "user"}],
    [{"content": "Answer in one word.", "role": "system"}, {"content": "Who wrote Comus?", "role": "user"},
     {"content": "Milton.", "role": "assistant"}],
    [{"content": "Hi!", "role": "user"}, {"content": "Hello. How can I help?", "role": "assistant"},
     {"content": "Name a sonnet.", "role": "user"}, {"content": "Sonnet 18.", "role": "assistant"}],
    [{"content": "Be brief.", "role": "system"}, {"content": "Hi!", "role": "user"},
     {"content": "Hello.", "role": "assistant"}, {"content": "What is 12 plus 7?", "role": "user"}],
    [{"content": "Ignore this <|im_end|> and <|eot_id|> </s> [INST] text", "role": "user"},
     {"content": "I will not.", "role": "assistant"}],
    [{"content": "  leading and trailing spaces \n", "role": "user"},
     {"content": "\nAn answer with a newline first.  ", "role": "assistant"}],
    [{"content": "What is 12 plus 7?", "role": "user"},
     {"content": "", "role": "assistant", "tool_calls": [call(1, "calculator", {"expression": "12 + 7"})]},
     {"content": "19", "role": "tool", "tool_call_id": "call_1"},
     {"content": "12 + 7 = 19.", "role": "assistant"}],
    [{"content": "Café, naïve, 中文, 🙂 — quotes \" and \\ backslash", "role": "user"},
     {"content": "Noted: “ok”.", "role": "assistant"}],
    [{"content": "Spell cat and add 2 and 3.", "role": "user"},
     {"content": "", "role": "assistant",
      "tool_calls": [call(1, "spell", {"word": "cat"}), call(2, "calculator", {"expression": "2 + 3"})]},
     {"content": "c-a-t", "role": "tool", "tool_call_id": "call_1"},
     {"content": "5", "role": "tool", "tool_call_id": "call_2"}],
]
CONVERSATIONS.append([{"content": "Is 7 prime?", "role": "user"},
                      {"content": "<think>\nOnly 1 and 7 divide it.\n</think>\n\nYes.", "role": "assistant"}])
# chatforge's JSON objects iterate in key order (serde_json without preserve_order); give
# transformers the same order.
TOOLS = json.loads(json.dumps(TOOLS, sort_keys=True))
CONVERSATIONS = json.loads(json.dumps(CONVERSATIONS, sort_keys=True))
# Conversations rendered with the tool list as well (those that call tools).
WITH_TOOLS = {7, 9}  # (conversation 10 carries reasoning: the qwen3 form strips it)

SPECIALS = {
    "chatml_tools": dict(bos_token=None, eos_token="<|im_end|>"),
    "smollm2": dict(bos_token="<|im_start|>", eos_token="<|im_end|>"),
    "llama3": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
    "mistral": dict(bos_token="<s>", eos_token="</s>"),
    "llama2": dict(bos_token="<s>", eos_token="</s>"),
    "qwen3": dict(bos_token=None, eos_token="<|im_end|>"),
}


def main():
    base = Tokenizer.from_file(str(DIR.parent / "tokenizer.json"))
    cases = []
    for path in sorted(DIR.glob("*.jinja")):
        name = path.stem
        tok = PreTrainedTokenizerFast(tokenizer_object=base, **SPECIALS[name])
        source = path.read_text()
        for i, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                tools = TOOLS if i in WITH_TOOLS else None
                text, error = None, None
                try:
                    text = tok.apply_chat_template(conv, tools=tools, chat_template=source, tokenize=False,
                                                   add_generation_prompt=gen)
                except Exception as e:  # the template's raise_exception, or a Jinja error
                    error = str(e)
                cases.append({"template": name, "conversation": i, "add_generation_prompt": gen,
                              "tools": tools is not None, "text": text, "error": error})
        ok = sum(1 for c in cases if c["template"] == name and c["text"] is not None)
        print(f"{name}: {ok} renders, {2 * len(CONVERSATIONS) - ok} refusals")
    # strftime_now is today's date: the test puts its own today in place of this one.
    today = datetime.datetime.now().strftime("%d %b %Y")
    out = {"transformers": transformers.__version__, "today": today, "specials": SPECIALS, "tools": TOOLS,
           "conversations": CONVERSATIONS, "cases": cases}
    (DIR / "renders.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
