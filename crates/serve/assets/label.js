// chatforge rater page: a prompt and K sampled answers; compare two (1 / 2 / t / b) or rank
// several (number keys or drag). Votes go to the run's feedback.sqlite. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

let item = null; // {prompt_id, messages, samples: [{id, text}], model}
let order = []; // rank mode: indices into item.samples, best first
let keyed = 0; // rank mode: how many places were set with number keys
let sending = false;
let session = Number(sessionStorage.getItem("chatforge.session_votes") || 0);
let loadSeq = 0;

function k() {
  return Number($("mode").value);
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 1500);
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = (localStorage.getItem("chatforge.apikey") || "").replace(/"/g, "").trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function call(path, body) {
  const opts = body === undefined ? { headers: headers() } : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  let out = null;
  try { out = await res.json(); } catch { /* empty */ }
  if (!res.ok) throw new Error((out && out.error && out.error.message) || res.status + " " + res.statusText);
  return out;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, onClick, cls, title) {
  const b = el("button", cls, label);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

function showProgress(total) {
  if (total !== undefined) showProgress.total = total;
  const t = showProgress.total === undefined ? "…" : showProgress.total;
  $("progress").textContent = `this session: ${session} · in the store: ${t}`;
}

async function refreshProgress() {
  try {
    const p = await call("/label/api/progress");
    showProgress(p.votes);
  } catch { /* shown on the next vote */ }
}

async function next() {
  const seq = ++loadSeq;
  item = null;
  render();
  $("error").textContent = "";
  try {
    const it = await call("/label/api/next?k=" + k());
    if (seq !== loadSeq) return; // the mode changed meanwhile
    item = it;
    order = item.samples.map((_, i) => i);
    keyed = 0;
    $("reason").value = "";
    render();
  } catch (e) {
    if (seq === loadSeq) $("error").textContent = "Could not load the next item: " + e.message;
  }
}

function rater() {
  const name = $("rater").value.trim();
  if (!name) {
    $("error").textContent = "Enter your name at the top right first (it is saved in this browser).";
    $("rater").focus();
  }
  return name;
}

async function submit(path, body) {
  if (sending || !item) return;
  const name = rater();
  if (!name) return;
  sending = true;
  setButtons();
  try {
    const out = await call(path, { ...body, rater: name });
    session += 1;
    sessionStorage.setItem("chatforge.session_votes", String(session));
    showProgress(out.votes);
    toast("Saved #" + out.id);
    sending = false;
    await next();
  } catch (e) {
    $("error").textContent = "Not saved: " + e.message;
    sending = false;
    setButtons();
  }
}

function vote(choice) {
  if (!item || item.samples.length !== 2) return;
  const reason = $("reason").value.trim();
  submit("/label/api/compare", {
    prompt_id: item.prompt_id,
    sample_a: item.samples[0].id,
    sample_b: item.samples[1].id,
    choice,
    reason: reason || null,
  });
}

function submitRanking() {
  if (!item || item.samples.length < 3) return;
  submit("/label/api/rank", { prompt_id: item.prompt_id, ranked: order.map((i) => item.samples[i].id) });
}

// Rank mode, number key n: answer n takes the next place.
function place(n) {
  const idx = n - 1;
  const at = order.indexOf(idx);
  if (at < 0 || at < keyed) return; // already placed
  order.splice(at, 1);
  order.splice(keyed, 0, idx);
  keyed += 1;
  if (keyed === order.length - 1) keyed = order.length; // the last one is placed by elimination
  render();
}

function resetRanking() {
  if (!item) return;
  order = item.samples.map((_, i) => i);
  keyed = 0;
  render();
}

function setButtons() {
  for (const b of document.querySelectorAll("#votebar button")) b.disabled = sending || !item;
}

function renderPrompt() {
  const box = $("prompt");
  box.replaceChildren();
  if (!item) {
    box.append(el("span", "muted", "Loading a prompt and sampling answers…"));
    $("item-meta").textContent = "";
    return;
  }
  $("item-meta").textContent = `#${item.prompt_id} · ${item.model}`;
  for (const m of item.messages) {
    const turn = el("div", "turn " + m.role);
    turn.append(el("div", "role", m.role === "system" ? "system message" : m.role), el("div", "text", m.content));
    box.append(turn);
  }
}

function answerCard(i, pos) {
  const card = el("div", "answer");
  card.dataset.sample = item.samples[i].id;
  const h = el("h3");
  h.append(el("span", "badge", String(i + 1)), document.createTextNode("Answer " + (i + 1)));
  card.append(h, el("div", "text", item.samples[i].text || "(empty answer)"));
  if (pos === undefined) return card;
  const wrap = el("div", "answer" + (pos < keyed ? " keyed" : ""));
  wrap.dataset.sample = item.samples[i].id;
  wrap.draggable = true;
  wrap.append(el("div", "pos", String(pos + 1)), card);
  card.className = "";
  delete card.dataset.sample;
  wrap.addEventListener("dragstart", (e) => {
    wrap.classList.add("dragging");
    e.dataTransfer.setData("text/plain", String(pos));
    e.dataTransfer.effectAllowed = "move";
  });
  wrap.addEventListener("dragend", () => wrap.classList.remove("dragging"));
  wrap.addEventListener("dragover", (e) => e.preventDefault());
  wrap.addEventListener("drop", (e) => {
    e.preventDefault();
    const from = Number(e.dataTransfer.getData("text/plain"));
    if (Number.isNaN(from) || from === pos) return;
    const [moved] = order.splice(from, 1);
    order.splice(pos, 0, moved);
    keyed = order.length; // a dragged order is a full ranking
    render();
  });
  return wrap;
}

function render() {
  renderPrompt();
  const answers = $("answers");
  const bar = $("votebar");
  answers.replaceChildren();
  bar.replaceChildren();
  const two = k() === 2;
  $("reason").parentElement.style.display = two ? "" : "none";
  if (two) {
    answers.className = "answers";
    if (item) for (let i = 0; i < item.samples.length; i++) answers.append(answerCard(i));
    bar.append(
      button("1 is better", () => vote("a"), "primary", "key 1"),
      button("2 is better", () => vote("b"), "primary", "key 2"),
      button("Tie", () => vote("tie"), "", "key t"),
      button("Both bad", () => vote("both_bad"), "", "key b"),
      button("Skip", next, "", "key s: another prompt"),
    );
    $("help").innerHTML = "Keys: <kbd>1</kbd> answer 1 is better · <kbd>2</kbd> answer 2 · <kbd>t</kbd> tie · <kbd>b</kbd> both bad · <kbd>s</kbd> skip · <kbd>Esc</kbd> leaves the reason field.";
  } else {
    answers.className = "ranklist";
    if (item) order.forEach((i, pos) => answers.append(answerCard(i, pos)));
    bar.append(
      button("Submit ranking", submitRanking, "primary", "key Enter"),
      button("Reset", resetRanking, "", "key r"),
      button("Skip", next, "", "key s: another prompt"),
    );
    $("help").innerHTML = `Best first. Press the answers' numbers in order of preference (<kbd>1</kbd>…<kbd>${k()}</kbd>), or drag them; <kbd>Enter</kbd> submits, <kbd>r</kbd> resets, <kbd>s</kbd> skips.`;
  }
  setButtons();
}

function onKey(e) {
  const tag = e.target.tagName;
  if (e.key === "Escape" && (tag === "INPUT" || tag === "TEXTAREA")) return e.target.blur(); // back to the shortcuts
  if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "s") return next();
  if (k() === 2) {
    const choice = { 1: "a", 2: "b", t: "tie", b: "both_bad" }[e.key];
    if (choice) {
      e.preventDefault();
      vote(choice);
    }
    return;
  }
  if (/^[1-9]$/.test(e.key) && item && Number(e.key) <= item.samples.length) place(Number(e.key));
  else if (e.key === "Enter") submitRanking();
  else if (e.key === "r") resetRanking();
}

function init() {
  $("rater").value = localStorage.getItem("chatforge.label_rater") || "";
  $("rater").addEventListener("change", () => localStorage.setItem("chatforge.label_rater", $("rater").value.trim()));
  const mode = localStorage.getItem("chatforge.label_mode");
  if (mode) $("mode").value = mode;
  $("mode").addEventListener("change", () => {
    localStorage.setItem("chatforge.label_mode", $("mode").value);
    $("mode").blur();
    next();
  });
  document.addEventListener("keydown", onKey);
  showProgress();
  refreshProgress();
  next();
}

init();
