// chatforge web chat: multi-turn, streamed from /v1/chat/completions (SSE), with thumbs up/down
// and "which is better?" comparisons stored in the run's feedback.sqlite. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const store = {
  get: (k, d) => { try { const v = localStorage.getItem("chatforge." + k); return v === null ? d : JSON.parse(v); } catch { return d; } },
  set: (k, v) => localStorage.setItem("chatforge." + k, JSON.stringify(v)),
};

// The conversation: {role: "user", content} | {role: "assistant", content, model, streaming, rating, stopped, calls}
// (calls: the built-in tool calls the server ran for the answer, its `tool_trace`: {name, arguments, result, ok})
// | {role: "compare", prompt, model, seeds, texts: [a, b], done: [bool, bool], errors: [..]}.
let turns = [];
let busy = false;
let controllers = [];
let answers = 0; // answers generated on this page: every 5th is a comparison
let compareNext = false;
const COMPARE_EVERY = 5;
// A thumb (the down button turns it over in CSS): drawn here, no icon font needed.
const THUMB = '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true"><path fill="currentColor" d="M2 10h4v11H2zM8 10l4-8c1.5 0 2.6 1.1 2.5 2.6L14 9h6c1.2 0 2.1 1.1 1.9 2.3l-1.6 7.9c-.3 1.1-1.2 1.8-2.3 1.8H8z"/></svg>';

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 1800);
}

function showError(text) {
  $("error").textContent = text || "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// The error message of a failed response, in OpenAI's shape {"error": {"message"}} when it is one.
async function errorText(res) {
  let msg = res.status + " " + res.statusText;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch { /* not JSON */ }
  if (res.status === 401) {
    msg += " — this server needs an API key: enter it at the top right.";
    $("apikey").focus();
  }
  return msg;
}

async function postJSON(path, body) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) throw new Error(await errorText(res));
  return res.json();
}

async function loadModels() {
  const sel = $("model");
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (!res.ok) throw new Error(await errorText(res));
    const ids = (await res.json()).data.map((m) => m.id);
    sel.innerHTML = "";
    for (const id of ids) sel.add(new Option(id, id));
    const saved = store.get("model", "");
    const pick = ids.includes(saved) ? saved : ids.find((id) => /(^|\/)sft$/.test(id)) || ids[0];
    if (pick) sel.value = pick;
    showError("");
  } catch (e) {
    showError("Could not list the models: " + e.message);
  }
}

function systemText() {
  return $("system").value.trim();
}

// The messages the API sees for turns[0..end): the system message, then user/assistant turns.
function apiMessages(end) {
  const msgs = [];
  const sys = systemText();
  if (sys) msgs.push({ role: "system", content: sys });
  for (const t of turns.slice(0, end)) {
    if (t.role === "user" || t.role === "assistant") msgs.push({ role: t.role, content: t.content });
  }
  return msgs;
}

function params() {
  const p = {
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value),
    max_tokens: Math.max(1, Math.floor(Number($("max_tokens").value))),
  };
  // The tools select: built-ins on (the server's default), off, or one built-in forced.
  const tools = $("tools").value;
  if (tools === "off") p.builtin_tools = false;
  else if (tools !== "on") p.tool_choice = { type: "function", function: { name: tools } };
  return p;
}

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

// Streams one completion; onText(fullTextSoFar) is called as deltas arrive, onCall(call) for each
// built-in tool call the server ran (a delta's `tool_trace`). Resolves to the text.
async function streamCompletion(messages, model, seed, signal, onText, onCall) {
  const body = { model, messages, stream: true, seed, ...params() };
  const res = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorText(res));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    // SSE: events are separated by a blank line; each has "data: ..." lines.
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      for (const line of event.split(/\r?\n/)) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return text;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "stream error");
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && Array.isArray(delta.tool_trace) && onCall) delta.tool_trace.forEach(onCall);
        if (delta && typeof delta.content === "string" && delta.content) {
          text += delta.content;
          onText(text);
        }
      }
    }
  }
  return text;
}

function setBusy(b) {
  busy = b;
  $("send").disabled = b;
  $("stop").disabled = !b;
}

function pendingCompare() {
  return turns.some((t) => t.role === "compare");
}

// Generates the assistant's answer to the conversation so far (which ends with a user turn).
async function generate() {
  showError("");
  answers += 1;
  const compare = compareNext || answers % COMPARE_EVERY === 0;
  compareNext = false;
  $("compare-next").classList.remove("on");
  const model = $("model").value;
  const prompt = apiMessages(turns.length);
  setBusy(true);
  if (compare) {
    const turn = { role: "compare", prompt, model, seeds: [randomSeed(), randomSeed()], params: params(), texts: ["", ""], done: [false, false], errors: [null, null] };
    turns.push(turn);
    render();
    await Promise.all([0, 1].map(async (i) => {
      const ctl = new AbortController();
      controllers.push(ctl);
      try {
        turn.texts[i] = await streamCompletion(prompt, model, turn.seeds[i], ctl.signal, (text) => {
          turn.texts[i] = text;
          updateText(turn, i);
        });
      } catch (e) {
        turn.errors[i] = e.name === "AbortError" ? "stopped" : e.message;
      }
      turn.done[i] = true;
    }));
    controllers = [];
    setBusy(false);
    if (turn.errors.every((e) => e && e !== "stopped")) showError(turn.errors[0]);
    render();
    return;
  }
  const turn = { role: "assistant", content: "", model, streaming: true, rating: 0, calls: [] };
  turns.push(turn);
  render();
  const ctl = new AbortController();
  controllers = [ctl];
  try {
    const onCall = (call) => {
      turn.calls.push(call);
      render();
    };
    turn.content = await streamCompletion(prompt, model, randomSeed(), ctl.signal, (text) => {
      turn.content = text;
      updateText(turn, 0);
    }, onCall);
  } catch (e) {
    if (e.name === "AbortError") {
      turn.stopped = true;
    } else {
      showError(e.message);
      if (!turn.content) turns.pop();
    }
  }
  turn.streaming = false;
  controllers = [];
  setBusy(false);
  render();
}

function stop() {
  for (const c of controllers) c.abort();
}

async function send(ev) {
  if (ev) ev.preventDefault();
  const text = $("input").value.trim();
  if (!text || busy) return;
  if (pendingCompare()) {
    showError("Pick the better answer above first (or skip).");
    return;
  }
  turns.push({ role: "user", content: text });
  $("input").value = "";
  await generate();
}

async function rate(turn, index, rating) {
  try {
    const body = { model: turn.model, messages: apiMessages(index + 1), rating, rater: raterName() };
    const out = await postJSON("/feedback/chat", body);
    turn.rating = rating;
    turn.feedbackId = out.id;
    toast(rating > 0 ? "Thanks! Saved: good answer" : "Thanks! Saved: bad answer");
    render();
  } catch (e) {
    showError("Feedback not saved: " + e.message);
  }
}

async function vote(turn, index, choice) {
  try {
    const body = {
      model: turn.model,
      messages: turn.prompt,
      answers: turn.texts.map((text, i) => ({ text, seed: turn.seeds[i] })),
      params: turn.params,
      choice,
      rater: raterName(),
    };
    const out = await postJSON("/feedback/compare", body);
    toast("Thanks! Vote saved (#" + out.id + ")");
    keepAnswer(turn, index, choice === "b" ? 1 : 0);
  } catch (e) {
    showError("Vote not saved: " + e.message);
  }
}

// Replaces a comparison by one of its answers, which the conversation continues from.
function keepAnswer(turn, index, which) {
  turns[index] = { role: "assistant", content: turn.texts[which], model: turn.model, streaming: false, rating: 0 };
  render();
}

function regenerate(index) {
  if (busy) return;
  turns = turns.slice(0, index);
  generate();
}

function editTurn(index) {
  if (busy) return;
  const t = turns[index];
  const box = document.querySelector(`[data-index="${index}"]`);
  const area = document.createElement("textarea");
  area.value = t.content;
  area.rows = Math.min(10, t.content.split("\n").length + 1);
  const save = button("Save & resend", () => {
    const text = area.value.trim();
    if (!text) return;
    turns = turns.slice(0, index);
    turns.push({ role: "user", content: text });
    generate();
  }, "small primary");
  const cancel = button("Cancel", render, "small");
  box.querySelector(".text").replaceWith(area);
  box.querySelector(".actions").replaceChildren(save, cancel);
  area.focus();
}

function raterName() {
  return $("rater").value.trim() || "anonymous";
}

function button(label, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

// A tool call's arguments, short: the values when they are plain ("12 + 7"; "castle, s"), else the JSON.
function shortArguments(text) {
  try {
    const v = Object.values(JSON.parse(text));
    if (v.length && v.every((x) => typeof x === "string" || typeof x === "number")) return v.join(", ");
  } catch { /* shown as it is */ }
  return text;
}

// A built-in tool call as a collapsible line: "calculator: 12 + 7 → 19", the details below it.
function callLine(call) {
  const d = el("details", "tool-call" + (call.ok ? "" : " failed"));
  d.dataset.name = call.name;
  d.dataset.arguments = call.arguments;
  d.dataset.result = call.result;
  d.dataset.ok = String(call.ok);
  d.append(el("summary", "", `${call.name}: ${shortArguments(call.arguments)} → ${call.result}`));
  const body = el("div", "tool-body");
  body.append(el("div", "", "arguments: " + call.arguments), el("div", "", "result: " + call.result));
  d.append(body);
  return d;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// Updates the streamed text of a turn in place (no full re-render per token).
function updateText(turn, which) {
  const i = turns.indexOf(turn);
  const box = document.querySelector(`[data-index="${i}"]`);
  if (!box) return;
  const texts = box.querySelectorAll(".text");
  const node = texts[turn.role === "compare" ? which : 0];
  if (node) node.textContent = turn.role === "compare" ? turn.texts[which] : turn.content;
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function render() {
  const list = $("messages");
  list.replaceChildren();
  if (!turns.length) {
    list.append(el("div", "empty", "Type a message below. Enter sends, Shift+Enter adds a line."));
  }
  const last = turns.length - 1;
  turns.forEach((t, i) => {
    const box = el("div", "msg " + t.role);
    box.dataset.index = i;
    if (t.role === "user") {
      box.append(el("div", "who", "you"), el("div", "text", t.content));
      const actions = el("div", "actions");
      const edit = button("edit", () => editTurn(i), "small");
      edit.title = "edit this message and answer again from here";
      edit.disabled = busy;
      actions.append(edit);
      box.append(actions);
    } else if (t.role === "assistant") {
      const who = el("div", "who", t.model || "assistant");
      box.append(who);
      for (const call of t.calls || []) box.append(callLine(call));
      box.append(el("div", "text", t.content));
      if (!t.streaming && !t.content) box.append(el("div", "muted", "(no answer)"));
      if (t.streaming) box.classList.add("streaming");
      if (t.stopped) who.append(el("span", "muted", "(stopped)"));
      if (!t.streaming) {
        const actions = el("div", "actions");
        const up = button("", () => rate(t, i, 1), "small thumb thumb-up" + (t.rating > 0 ? " on" : ""));
        const down = button("", () => rate(t, i, -1), "small thumb thumb-down" + (t.rating < 0 ? " on" : ""));
        up.innerHTML = THUMB;
        down.innerHTML = THUMB;
        up.title = "good answer";
        down.title = "bad answer";
        up.setAttribute("aria-label", "thumbs up: good answer");
        down.setAttribute("aria-label", "thumbs down: bad answer");
        up.disabled = down.disabled = t.rating !== 0 || !t.content;
        actions.append(up, down);
        if (i === last) {
          const regen = button("regenerate", () => regenerate(i), "small");
          regen.disabled = busy;
          actions.append(regen);
        }
        if (t.rating) actions.append(el("span", "muted saved", "saved"));
        box.append(actions);
      }
    } else if (t.role === "compare") {
      box.classList.add("assistant");
      box.append(el("div", "who", "Which is better? (" + t.model + ")"));
      const grid = el("div", "pair");
      ["A", "B"].forEach((name, k) => {
        const side = el("div", "side");
        side.append(el("h3", "", "Answer " + name + (t.errors[k] ? " — " + t.errors[k] : "")), el("div", "text", t.texts[k]));
        grid.append(side);
      });
      box.append(grid);
      const bar = el("div", "compare-buttons");
      const ready = t.done.every(Boolean) && !t.errors.some(Boolean);
      for (const [label, choice] of [["A is better", "a"], ["B is better", "b"], ["Tie", "tie"], ["Both bad", "both_bad"]]) {
        const b = button(label, () => vote(t, i, choice), "small vote-" + choice);
        b.disabled = !ready;
        bar.append(b);
      }
      const skip = button("skip (keep A)", () => keepAnswer(t, i, 0), "small");
      skip.disabled = !t.done.every(Boolean);
      bar.append(skip);
      box.append(bar);
    }
    list.append(box);
  });
  list.scrollTop = list.scrollHeight;
  for (const b of document.querySelectorAll(".msg.user .actions button")) b.disabled = busy;
}

// System-message presets: a user's own default instructions, kept in this browser.
function loadPresets() {
  const sel = $("presets");
  sel.replaceChildren(new Option("presets…", ""));
  store.get("presets", []).forEach((p, i) => sel.add(new Option(p.name, String(i))));
}

function savePreset() {
  const text = systemText();
  if (!text) {
    toast("Write a system message first");
    return;
  }
  const presets = store.get("presets", []).filter((p) => p.text !== text);
  const name = text.length > 40 ? text.slice(0, 39) + "…" : text;
  presets.push({ name, text });
  store.set("presets", presets);
  loadPresets();
  $("presets").value = String(presets.length - 1);
  toast("Preset saved");
}

function deletePreset() {
  const i = $("presets").value;
  if (i === "") return;
  const presets = store.get("presets", []);
  presets.splice(Number(i), 1);
  store.set("presets", presets);
  loadPresets();
}

function init() {
  $("system").value = store.get("system", "");
  $("rater").value = store.get("rater", "");
  $("apikey").value = store.get("apikey", "");
  for (const k of ["temperature", "top_p", "max_tokens", "tools"]) {
    const v = store.get(k, null);
    if (v !== null) $(k).value = v;
    $(k).addEventListener("change", () => store.set(k, $(k).value));
  }
  $("system").addEventListener("input", () => store.set("system", $("system").value));
  $("rater").addEventListener("change", () => store.set("rater", $("rater").value.trim()));
  $("apikey").addEventListener("change", () => {
    store.set("apikey", $("apikey").value.trim());
    loadModels();
  });
  $("model").addEventListener("change", () => store.set("model", $("model").value));
  $("presets").addEventListener("change", () => {
    const i = $("presets").value;
    if (i === "") return;
    $("system").value = store.get("presets", [])[Number(i)].text;
    store.set("system", $("system").value);
  });
  $("preset-save").addEventListener("click", savePreset);
  $("preset-delete").addEventListener("click", deletePreset);
  $("composer").addEventListener("submit", send);
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => {
    stop();
    turns = [];
    showError("");
    render();
  });
  $("compare-next").addEventListener("click", () => {
    compareNext = !compareNext;
    $("compare-next").classList.toggle("on", compareNext);
  });
  loadPresets();
  render();
  loadModels();
}

init();
