// Drives chatforge's web pages in headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, as a person would, and prints what it did as one JSON line on stdout, for the
// Rust test (crates/cli/tests/web.rs) to check against feedback.sqlite.
//
//   node tools/web_test.mjs label http://127.0.0.1:PORT [--shots DIR]
//   node tools/web_test.mjs chat  http://127.0.0.1:PORT [--shots DIR] [--api-key KEY]
//   node tools/web_test.mjs tools http://127.0.0.1:PORT [--shots DIR] [--api-key KEY]
//
// Setup: `npm ci --prefix tools` (playwright-core only; it uses the system Chromium, it downloads
// no browser). Exits non-zero with a message on the first failed step.

import { chromium } from "playwright-core";

const [mode, base, ...rest] = process.argv.slice(2);
const opt = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const shots = opt("--shots");
const apiKey = opt("--api-key");
const TIMEOUT = 60_000;

function check(cond, msg) {
  if (!cond) throw new Error("check failed: " + msg);
}

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

// The rater page: compare two (click and keys 1 / 2 / t / b, a reason), then rank three.
async function label(page) {
  const votes = [];
  const rankings = [];
  await page.goto(base + "/label");
  await page.fill("#rater", "pw-rater");
  await page.dispatchEvent("#rater", "change");
  const items = async (k) => {
    await page.waitForFunction((k) => document.querySelectorAll("#answers [data-sample]").length === k && !document.querySelector("#votebar button:disabled"), k, { timeout: TIMEOUT });
    const ids = await page.$$eval("#answers [data-sample]", (els) => els.map((e) => Number(e.dataset.sample)));
    const meta = await page.textContent("#item-meta");
    return { ids, prompt_id: Number(/#(\d+)/.exec(meta)[1]) };
  };
  const saved = async (before) => {
    // The toast says "Saved #id"; then the next item replaces the answers.
    await page.waitForFunction((b) => {
      const t = document.getElementById("toast").textContent;
      return t.startsWith("Saved #") && t !== b;
    }, before, { timeout: TIMEOUT });
    return Number((await page.textContent("#toast")).slice("Saved #".length));
  };
  const actions = [
    ["click", "a", () => page.click("text=1 is better")],
    ["key", "b", () => page.keyboard.press("2")],
    ["key", "tie", () => page.keyboard.press("t")],
    ["key", "both_bad", async () => {
      await page.fill("#reason", "both ignore the question");
      await page.keyboard.press("Escape"); // leave the text field so the key is a shortcut
      await page.keyboard.press("b");
    }],
  ];
  for (const [how, choice, act] of actions) {
    const it = await items(2);
    if (!votes.length) await shot(page, "label-compare");
    const before = await page.textContent("#toast");
    await act();
    const id = await saved(before);
    votes.push({ id, how, choice, prompt_id: it.prompt_id, sample_a: it.ids[0], sample_b: it.ids[1], reason: choice === "both_bad" ? "both ignore the question" : null });
  }
  const progress = await page.textContent("#progress");
  check(progress.startsWith("this session: 4 "), "progress shows 4 votes this session: " + progress);

  // Rank three: key 3 then 1 (2 is last by elimination), Enter submits.
  await page.selectOption("#mode", "3");
  const it = await items(3);
  await page.keyboard.press("3");
  await page.keyboard.press("1");
  const order = await page.$$eval("#answers [data-sample]", (els) => els.map((e) => Number(e.dataset.sample)));
  check(order[0] === it.ids[2] && order[1] === it.ids[0] && order[2] === it.ids[1], "keys 3, 1 order the answers 3, 1, 2: " + order);
  await shot(page, "label-rank");
  const before = await page.textContent("#toast");
  await page.keyboard.press("Enter");
  rankings.push({ id: await saved(before), prompt_id: it.prompt_id, ranked: order });

  // Rank four by dragging: the last answer onto the first place.
  await page.selectOption("#mode", "4");
  const it4 = await items(4);
  const cards = page.locator("#answers [data-sample]");
  await cards.nth(3).dragTo(cards.nth(0));
  const order4 = await page.$$eval("#answers [data-sample]", (els) => els.map((e) => Number(e.dataset.sample)));
  check(order4[0] === it4.ids[3], "dragging answer 4 to the top ranks it first: " + order4);
  const before4 = await page.textContent("#toast");
  await page.click("text=Submit ranking");
  rankings.push({ id: await saved(before4), prompt_id: it4.prompt_id, ranked: order4 });
  return { votes, rankings, progress: await page.textContent("#progress") };
}

// The chat: a system message (saved as a preset), a streamed answer, thumbs up, and a
// "which is better?" comparison.
async function chat(page) {
  const requests = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/v1/chat/completions")) requests.push(JSON.parse(r.postData()));
  });
  const streamTypes = [];
  page.on("response", (r) => {
    if (r.url().endsWith("/v1/chat/completions")) streamTypes.push(r.headers()["content-type"] || "");
  });
  await page.goto(base + "/");
  if (apiKey) {
    await page.fill("#apikey", apiKey);
    await page.dispatchEvent("#apikey", "change");
  }
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0, null, { timeout: TIMEOUT });
  const model = await page.inputValue("#model");
  const system = "Answer in one word.";
  await page.fill("#system", system);
  await page.click("#preset-save");
  check((await page.$$eval("#presets option", (o) => o.map((x) => x.textContent))).includes(system), "the preset is listed");
  await page.fill("#rater", "pw-chat");
  await page.dispatchEvent("#rater", "change");
  await page.fill("#max_tokens", "24");
  await page.dispatchEvent("#max_tokens", "change");

  // Count how the answer's text grows while it streams.
  await page.evaluate(() => {
    window.__updates = 0;
    new MutationObserver(() => {
      if (document.querySelector(".msg.assistant.streaming")) window.__updates += 1;
    }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
  const question = "Who wrote Hamlet?";
  await page.fill("#input", question);
  await page.keyboard.press("Enter");
  await page.waitForSelector(".msg.assistant:not(.streaming) .thumb-up", { timeout: TIMEOUT });
  const updates = await page.evaluate(() => window.__updates);
  // An empty answer cannot be rated (a tiny random model may stop at once): regenerate it.
  for (let i = 0; i < 5 && (await page.isDisabled(".msg.assistant .thumb-up")); i++) {
    await page.click("text=regenerate");
    await page.waitForSelector(".msg.assistant:not(.streaming) .thumb-up", { timeout: TIMEOUT });
  }
  const answer = await page.textContent(".msg.assistant .text");
  const asked = requests.length;
  check(requests.every((r) => r.stream === true), "the page asked for a stream");
  check(requests[0].messages[0].role === "system" && requests[0].messages[0].content === system, "the system message was sent");
  check(streamTypes[0].startsWith("text/event-stream"), "the answer came as server-sent events: " + streamTypes[0]);
  await shot(page, "chat-answer");
  await page.click(".msg.assistant .thumb-up");
  await page.waitForSelector(".msg.assistant .saved", { timeout: TIMEOUT });

  // "Which is better?": two answers side by side; pick B.
  await page.click("#compare-next");
  const question2 = "And who wrote Macbeth?";
  await page.fill("#input", question2);
  await page.keyboard.press("Enter");
  await page.waitForSelector(".vote-b:not(:disabled)", { timeout: TIMEOUT });
  const pair = await page.$$eval(".pair .side .text", (els) => els.map((e) => e.textContent));
  await shot(page, "chat-compare");
  await page.click(".vote-b");
  await page.waitForFunction(() => document.getElementById("toast").textContent.startsWith("Thanks! Vote saved"), null, { timeout: TIMEOUT });
  const voteId = Number(/#(\d+)/.exec(await page.textContent("#toast"))[1]);
  // The conversation goes on from the chosen answer.
  const kept = await page.$$eval(".msg.assistant .text", (els) => els.map((e) => e.textContent));
  check(kept.length === 2 && kept[1] === pair[1], "answer B continues the conversation");
  check(requests.length === asked + 2 && requests[asked].seed !== requests[asked + 1].seed, "the two answers had their own seeds");
  // Regenerate the last answer and check the page asked again.
  await page.click("text=regenerate");
  await page.waitForFunction(() => !document.querySelector(".msg.streaming") && document.querySelectorAll(".thumb-up").length === 2, null, { timeout: TIMEOUT });
  check(requests.length === asked + 3, "regenerate asked for a new answer");
  await shot(page, "chat-final");
  // Edit the first message: the conversation is cut there and answered again.
  await page.locator(".msg.user").first().locator("text=edit").click();
  await page.fill(".msg.user textarea", "Who wrote Othello?");
  await page.click("text=Save & resend");
  await page.waitForFunction(() => !document.querySelector(".msg.streaming") && document.querySelectorAll(".msg").length === 2, null, { timeout: TIMEOUT });
  const last = requests[requests.length - 1].messages;
  check(requests.length === asked + 4 && last.length === 2 && last[1].content === "Who wrote Othello?", "the edited message was sent alone: " + JSON.stringify(last));
  check((await page.textContent(".msg.user .text")) === "Who wrote Othello?", "the edited message is shown");
  return { model, system, question, answer, updates, question2, pair, vote_id: voteId, seeds: [requests[asked].seed, requests[asked + 1].seed] };
}

// A built-in tool call in the chat: "always call calculator" makes the server force a calculator
// call (tool_choice names it), run it and go on; the answer's bubble shows the call as a
// collapsible line with the result the server sent. The Rust test reruns the call to check it.
async function tools(page) {
  const requests = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/v1/chat/completions")) requests.push(JSON.parse(r.postData()));
  });
  const traces = [];
  page.on("response", async (r) => {
    if (!r.url().endsWith("/v1/chat/completions")) return;
    const body = (await r.body()).toString("utf8"); // SSE is UTF-8 (text() may guess otherwise)
    for (const line of body.split("\n")) {
      if (!line.startsWith("data: {")) continue;
      const delta = JSON.parse(line.slice(6)).choices?.[0]?.delta;
      if (delta && delta.tool_trace) traces.push(...delta.tool_trace);
    }
  });
  await page.goto(base + "/");
  if (apiKey) {
    await page.fill("#apikey", apiKey);
    await page.dispatchEvent("#apikey", "change");
  }
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0, null, { timeout: TIMEOUT });
  await page.selectOption("#tools", "calculator");
  await page.fill("#max_tokens", "120");
  await page.dispatchEvent("#max_tokens", "change");
  await page.fill("#input", "What is 12 + 7?");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".msg.assistant:not(.streaming) .thumb-up", { timeout: TIMEOUT });
  const line = page.locator(".msg.assistant details.tool-call").first();
  await line.waitFor({ timeout: TIMEOUT });
  const shown = await line.evaluate((d) => ({
    summary: d.querySelector("summary").textContent,
    name: d.dataset.name,
    arguments: d.dataset.arguments,
    result: d.dataset.result,
    ok: d.dataset.ok === "true",
    open: d.open,
  }));
  check(!shown.open, "the call line starts collapsed");
  await line.locator("summary").click();
  const body = await line.locator(".tool-body").textContent();
  check(await line.evaluate((d) => d.open), "clicking the line opens it");
  check(body.includes(shown.arguments) && body.includes(shown.result), "the details show the arguments and the result: " + body);
  check(requests.length === 1 && requests[0].tool_choice?.function?.name === "calculator", "the page asked for a calculator call: " + JSON.stringify(requests));
  // The response listener reads the whole SSE body once it has ended.
  for (let i = 0; i < 200 && !traces.length; i++) await new Promise((r) => setTimeout(r, 25));
  check(traces.length >= 1, "the stream carried a tool_trace");
  check(traces[0].name === shown.name && traces[0].arguments === shown.arguments && traces[0].result === shown.result, "the line shows the server's trace: " + JSON.stringify({ traces, shown }));
  await shot(page, "chat-tool-call");
  const answer = await page.textContent(".msg.assistant .text");
  return { ...shown, body, answer, trace: traces };
}

const browser = await launch();
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on("pageerror", (e) => {
    console.error("page error: " + e.message);
    failed = true;
  });
  const out = mode === "label" ? await label(page) : mode === "chat" ? await chat(page) : mode === "tools" ? await tools(page) : null;
  check(out, "mode is label, chat or tools, not " + mode);
  check(!failed, "no JavaScript errors in the page");
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
