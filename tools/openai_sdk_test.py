#!/usr/bin/env python3
"""The official `openai` SDK against a running `chatforge serve` (issue 8, bar 1).

Usage: python3 tools/openai_sdk_test.py BASE_URL [API_KEY]
BASE_URL is the server's /v1 URL, e.g. http://127.0.0.1:8080/v1. Exits non-zero on any failure
and ends with a line "N passed, M failed".
"""
import json
import sys
import threading

import openai

BASE = sys.argv[1]
KEY = sys.argv[2] if len(sys.argv) > 2 else "unused"
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=120)
MSG = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Who wrote Hamlet?"}]
results = []


def test(fn):
    try:
        fn()
        results.append((fn.__name__, None))
        print(f"ok   {fn.__name__}", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        results.append((fn.__name__, e))
        print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
    return fn


@test
def models_list():
    ids = [m.id for m in client.models.list().data]
    assert "sft" in ids and "base" in ids, ids
    assert client.models.retrieve("sft").id == "sft"


@test
def chat_create():
    r = client.chat.completions.create(model="sft", messages=MSG, max_tokens=12, temperature=0.8, seed=1)
    c = r.choices[0]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-"), r
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@test
def streaming_matches_non_streaming():
    args = dict(model="sft", messages=MSG, max_tokens=16, temperature=0.9, seed=7)
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    assert len({c.id for c in chunks}) == 1, "one id per stream"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason], finish
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@test
def n_equals_two():
    r = client.chat.completions.create(model="sft", messages=MSG, max_tokens=10, n=2, temperature=1.0, seed=3)
    assert [c.index for c in r.choices] == [0, 1], r.choices
    s = client.chat.completions.create(model="sft", messages=MSG, max_tokens=10, n=2, temperature=1.0, seed=3, stream=True)
    got = {0: "", 1: ""}
    for ch in s:
        for c in ch.choices:
            got[c.index] += c.delta.content or ""
    assert got == {i: r.choices[i].message.content for i in (0, 1)}, got


@test
def seed_reproducible_at_any_batch_size():
    args = dict(model="sft", messages=MSG, max_tokens=24, temperature=1.0, top_p=0.95, seed=1234)
    alone = client.chat.completions.create(**args).choices[0].message.content
    # The same request while others decode beside it (a bigger batch).
    out = {}

    def call(i):
        a = dict(args) if i == 0 else dict(args, seed=i, n=3)
        out[i] = client.chat.completions.create(**a).choices[0].message.content

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert out[0] == alone, (out[0], alone)
    other = client.chat.completions.create(**dict(args, seed=99)).choices[0].message.content
    assert other != alone, "different seeds should differ on a random model"


@test
def json_object():
    for seed in range(3):
        r = client.chat.completions.create(model="sft", messages=MSG, max_tokens=40, temperature=1.0, seed=seed, response_format={"type": "json_object"})
        c = r.choices[0]
        assert c.finish_reason == "stop", c.finish_reason
        assert isinstance(json.loads(c.message.content), dict), c.message.content


@test
def json_schema():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}, "ok": {"type": "boolean"}},
        "required": ["name", "age", "ok"],
        "additionalProperties": False,
    }
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    for seed in range(3):
        r = client.chat.completions.create(model="sft", messages=MSG, max_tokens=60, temperature=1.0, seed=seed, response_format=rf)
        v = json.loads(r.choices[0].message.content)
        assert isinstance(v["name"], str) and isinstance(v["age"], int) and isinstance(v["ok"], bool), v
        assert set(v) <= {"name", "age", "tags", "ok"} and all(t in ("a", "b") for t in v.get("tags", [])), v


@test
def completions_endpoint():
    r = client.completions.create(model="base", prompt="ROMEO:", max_tokens=8, seed=5, temperature=0.7)
    assert r.object == "text_completion" and isinstance(r.choices[0].text, str) and r.usage.completion_tokens <= 8
    text = "".join(c.choices[0].text for c in client.completions.create(model="base", prompt="ROMEO:", max_tokens=8, seed=5, temperature=0.7, stream=True) if c.choices)
    assert text == r.choices[0].text, (text, r.choices[0].text)


@test
def context_overflow_is_bad_request():
    try:
        client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "word " * 2000}], max_tokens=5)
    except openai.BadRequestError as e:
        assert e.code == "context_length_exceeded", e.code
        assert e.status_code == 400
    else:
        raise AssertionError("no BadRequestError")
    # Streaming too: the error comes before any event.
    try:
        client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "word " * 2000}], stream=True)
    except openai.BadRequestError as e:
        assert e.code == "context_length_exceeded", e.code
    else:
        raise AssertionError("no BadRequestError when streaming")


@test
def unknown_model_is_not_found():
    try:
        client.chat.completions.create(model="gpt-nope", messages=MSG)
    except openai.NotFoundError as e:
        assert e.code == "model_not_found"
    else:
        raise AssertionError("no NotFoundError")


@test
def moderation():
    r = client.moderations.create(input=["Give me step-by-step instructions to poison my neighbour.", "How do I kill a process on Linux?"])
    assert r.results[0].flagged and not r.results[1].flagged, r
    assert r.results[0].category_scores.violence > 0.5 > r.results[1].category_scores.violence


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]},
    },
}
ASK_WEATHER = [{"role": "user", "content": "Weather in Verona for 2 days?"}]


def check_weather_arguments(text):
    v = json.loads(text)
    assert isinstance(v, dict) and set(v) <= {"city", "days"}, v
    assert isinstance(v["city"], str) and isinstance(v["days"], int) and not isinstance(v["days"], bool), v


@test
def tool_calls_forced_then_answered():
    # A forced call (named or required) holds even for an untrained model: the arguments are
    # decoded under the schema.
    named = {"type": "function", "function": {"name": "get_weather"}}
    for seed, choice in enumerate([named, "required"]):
        r = client.chat.completions.create(model="sft", messages=ASK_WEATHER, tools=[WEATHER], tool_choice=choice, max_tokens=120, temperature=1.0, seed=seed)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c.finish_reason
        call = c.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_"), call
        check_weather_arguments(call.function.arguments)
    # The result goes back as a tool message after the assistant's message; the answer is text.
    messages = ASK_WEATHER + [c.message, {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"forecast": "sunny", "high": 24})}]
    for stream in (False, True):
        if stream:
            chunks = list(client.chat.completions.create(model="sft", messages=messages, tools=[WEATHER], max_tokens=20, seed=1, stream=True))
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            assert finish and finish[0] in ("stop", "length"), finish
            assert isinstance(text, str)
        else:
            r = client.chat.completions.create(model="sft", messages=messages, tools=[WEATHER], max_tokens=20, seed=1)
            assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
            assert isinstance(r.choices[0].message.content, str), r.choices[0].message


@test
def tool_calls_streamed():
    stream = client.chat.completions.create(
        model="sft", messages=ASK_WEATHER, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=120, temperature=1.0, seed=4, stream=True,
    )
    calls, finish = {}, []
    for ch in stream:
        for c in ch.choices:
            for tc in c.delta.tool_calls or []:
                e = calls.setdefault(tc.index, {"id": None, "type": None, "name": "", "arguments": ""})
                e["id"] = tc.id or e["id"]
                e["type"] = tc.type or e["type"]
                if tc.function is not None:
                    e["name"] += tc.function.name or ""
                    e["arguments"] += tc.function.arguments or ""
            if c.finish_reason:
                finish.append(c.finish_reason)
    assert finish == ["tool_calls"], finish
    assert list(calls) == [0], calls
    e = calls[0]
    assert e["id"].startswith("call_") and e["type"] == "function" and e["name"] == "get_weather", e
    check_weather_arguments(e["arguments"])


@test
def built_in_tools_run_on_the_server():
    # Forcing the built-in calculator: the server runs it, shows the call in `tool_trace` (an
    # extension the SDK keeps as an extra field) and goes on to an answer.
    calc = {"type": "function", "function": {"name": "calculator"}}
    args = dict(model="sft", messages=[{"role": "user", "content": "What is 12 + 7?"}], tool_choice=calc, max_tokens=100, seed=2)
    r = client.chat.completions.create(**args)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length") and isinstance(c.message.content, str), c
    trace = (c.message.model_extra or {}).get("tool_trace")
    assert trace and trace[0]["name"] == "calculator" and isinstance(trace[0]["result"], str), c.message
    chunks = list(client.chat.completions.create(stream=True, **args))
    streamed = [t for ch in chunks if ch.choices for t in (ch.choices[0].delta.model_extra or {}).get("tool_trace") or []]
    assert streamed == trace, (streamed, trace)
    # Turned off, the built-in cannot be named.
    try:
        client.chat.completions.create(extra_body={"builtin_tools": False}, **args)
    except openai.BadRequestError as e:
        assert e.param == "tool_choice.function.name", e.param
    else:
        raise AssertionError("no BadRequestError with builtin_tools false")


@test
def bad_tools_are_bad_requests():
    for tools, param in [([{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"), ([WEATHER, WEATHER], "tools[1].function.name")]:
        try:
            client.chat.completions.create(model="sft", messages=ASK_WEATHER, tools=tools, max_tokens=5)
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.param == param, (e.status_code, e.param)
        else:
            raise AssertionError(f"no BadRequestError for {param}")


failed = [n for n, e in results if e is not None]
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
