//! The web pages in a real browser (headless Chromium driven by Playwright, tools/web_test.mjs)
//! and the durability of votes: servers started from the `chatforge` binary on a free port, with
//! a tiny random model, and every check made against the rows in `feedback.sqlite`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatforge_core::checkpoint::save_model;
use chatforge_core::config::LlamaConfig;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_data::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// A run folder with a byte tokenizer and a tiny random model as its `sft` (and `base`) stage,
/// and a JSONL of prompts.
fn tiny_run(name: &str) -> PathBuf {
    let run = std::env::temp_dir().join(format!("chatforge-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    let tok = Tokenizer::bytes();
    tok.save(&run.join("tokenizer.json")).unwrap();
    chatforge_serve::moderation::train(1).unwrap().0.save(&run.join("moderation.json")).unwrap();
    let model = Llama::new(Cpu, LlamaConfig::from_depth(1, tok.vocab_size(), 512), 7);
    for stage in ["base", "sft"] {
        std::fs::create_dir_all(run.join(stage)).unwrap();
        save_model(&model, &run.join(stage)).unwrap();
    }
    let prompts = [
        json!({"messages": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Who wrote Hamlet?"}]}),
        json!({"messages": [{"role": "user", "content": "What is 7 times 8?"}, {"role": "assistant", "content": "56"}]}),
        json!({"messages": [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Name a colour."}]}),
    ];
    let text: String = prompts.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(run.join("prompts.jsonl"), text).unwrap();
    run
}

/// A `chatforge` server; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chatforge ARGS --port 0` and waits for the line with its address.
fn start(args: &[&std::ffi::OsStr]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(["--threads", "1"])
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("http://") {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("the server exited before printing its address: {:?}", child.wait());
        }
    }
    let addr = line.split("http://").nth(1).and_then(|r| r.split(['/', ' ', '\n']).next()).unwrap();
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Server { child, addr: addr.trim().parse().unwrap() }
}

/// `chatforge label` on the run's prompts.
fn start_label(run: &Path) -> Server {
    let prompts = run.join("prompts.jsonl");
    start(&[
        "label".as_ref(),
        "--run".as_ref(),
        run.as_os_str(),
        "--prompts".as_ref(),
        prompts.as_os_str(),
        "--max-tokens".as_ref(),
        "12".as_ref(),
        "--ahead".as_ref(),
        "3".as_ref(),
    ])
}

/// `chatforge serve` with an API key.
fn start_serve(run: &Path, key: &str) -> Server {
    start(&["serve".as_ref(), "--run".as_ref(), run.as_os_str(), "--api-key".as_ref(), key.as_ref()])
}

/// One HTTP/1.1 request (`Connection: close`); the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    http_key(addr, method, path, body, None)
}

fn http_key(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>, key: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status =
        out.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad response {out:?}")))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn db(run: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(run.join("feedback.sqlite")).unwrap()
}

/// Whether Chromium and playwright-core are here; without them the browser tests are skipped,
/// unless CHATFORGE_REQUIRE_BROWSER is set (as `.ci/run` does), where their absence fails.
fn browser() -> bool {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let have = Path::new(&chromium).exists()
        && tools.join("node_modules/playwright-core").exists()
        && Command::new("node").arg("--version").output().is_ok();
    if !have {
        assert!(
            std::env::var_os("CHATFORGE_REQUIRE_BROWSER").is_none(),
            "CHATFORGE_REQUIRE_BROWSER is set but {chromium} or tools/node_modules/playwright-core (npm ci --prefix tools) or node is missing"
        );
        eprintln!("SKIPPED: the browser test needs {chromium}, node and tools/node_modules/playwright-core (npm ci --prefix tools)");
    }
    have
}

/// Runs tools/web_test.mjs; its JSON report.
fn web_test(mode: &str, addr: SocketAddr, extra: &[&str]) -> Value {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools");
    let shots = std::env::var("CHATFORGE_SHOTS").ok();
    let mut cmd = Command::new("node");
    cmd.arg(tools.join("web_test.mjs")).arg(mode).arg(format!("http://{addr}")).args(extra);
    if let Some(dir) = &shots {
        cmd.args(["--shots", dir]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "web_test.mjs {mode} failed:\n{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn rater_page_votes_land_in_sqlite() {
    if !browser() {
        return;
    }
    let run = tiny_run("rater");
    let server = start_label(&run);
    let out = web_test("label", server.addr, &[]);
    let c = db(&run);
    let votes = out["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 4, "{out}");
    for v in votes {
        let row: (i64, i64, i64, String, String, i64, Option<String>) = c
            .query_row(
                "SELECT c.prompt_id, c.sample_a, c.sample_b, c.choice, r.name, r.simulated, c.reason
                 FROM comparisons c JOIN raters r ON r.id = c.rater_id WHERE c.id = ?1",
                [v["id"].as_i64().unwrap()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .unwrap_or_else(|e| panic!("vote {v} is not in comparisons: {e}"));
        assert_eq!(row.0, v["prompt_id"].as_i64().unwrap());
        assert_eq!((row.1, row.2), (v["sample_a"].as_i64().unwrap(), v["sample_b"].as_i64().unwrap()));
        assert_eq!(row.3, v["choice"].as_str().unwrap(), "{v}");
        assert_eq!((row.4.as_str(), row.5), ("pw-rater", 0));
        assert_eq!(row.6.as_deref(), v["reason"].as_str());
        // The samples answer the prompt, which the page showed with its system message.
        let prompt_of: i64 = c.query_row("SELECT prompt_id FROM samples WHERE id = ?1", [row.1], |r| r.get(0)).unwrap();
        assert_eq!(prompt_of, row.0);
    }
    let choices: Vec<&str> = votes.iter().map(|v| v["choice"].as_str().unwrap()).collect();
    assert_eq!(choices, ["a", "b", "tie", "both_bad"]);
    let n: i64 = c.query_row("SELECT COUNT(*) FROM comparisons", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 4);
    let rankings = out["rankings"].as_array().unwrap();
    assert_eq!(rankings.len(), 2);
    for r in rankings {
        let ranked: Vec<i64> = r["ranked"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        let mut st = c.prepare("SELECT sample_id FROM ranking_items WHERE ranking_id = ?1 ORDER BY rank").unwrap();
        let stored: Vec<i64> = st.query_map([r["id"].as_i64().unwrap()], |row| row.get(0)).unwrap().map(|x| x.unwrap()).collect();
        assert_eq!(stored, ranked, "the ranking is stored best first as the page ordered it");
    }
    assert!(out["progress"].as_str().unwrap().contains("in the store: 6"), "{out}");
    drop(server);
    std::fs::remove_dir_all(&run).ok();
}

#[test]
fn acknowledged_votes_survive_sigkill() {
    let run = tiny_run("durable");
    let mut server = start_label(&run);
    let addr = server.addr;
    // (comparison id, sample_a, sample_b, choice, rater) of every vote answered 201.
    type Vote = (i64, i64, i64, String, String);
    let acked: Arc<Mutex<Vec<Vote>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (acked, killed) = (acked.clone(), killed.clone());
            std::thread::spawn(move || {
                let choices = ["a", "b", "tie", "both_bad"];
                let rater = format!("client-{c}");
                let mut errors_after_kill = 0;
                for i in 0.. {
                    if killed.load(Ordering::SeqCst) && errors_after_kill > 0 {
                        break;
                    }
                    let item = match http(addr, "GET", "/label/api/next?k=2", None) {
                        Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap(),
                        Ok((status, body)) => panic!("next: {status} {body}"),
                        Err(_) => {
                            assert!(killed.load(Ordering::SeqCst), "the server failed before it was killed");
                            errors_after_kill += 1;
                            continue;
                        }
                    };
                    let s = &item["samples"];
                    // Several votes per item, as several raters would give.
                    for j in 0..3 {
                        let choice = choices[(i + j + c) % 4];
                        let vote = json!({"prompt_id": item["prompt_id"], "sample_a": s[0]["id"], "sample_b": s[1]["id"], "choice": choice, "rater": rater});
                        match http(addr, "POST", "/label/api/compare", Some(&vote)) {
                            Ok((201, body)) => {
                                let id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_i64().unwrap();
                                let (a, b) = (s[0]["id"].as_i64().unwrap(), s[1]["id"].as_i64().unwrap());
                                acked.lock().unwrap().push((id, a, b, choice.to_string(), rater.clone()));
                            }
                            Ok((status, body)) => panic!("vote: {status} {body}"),
                            Err(_) => {
                                // No answer: the server died with the vote in flight (it may or may not be stored).
                                assert!(killed.load(Ordering::SeqCst), "the server failed before it was killed");
                                errors_after_kill += 1;
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Kill the server in the middle of the traffic.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 150 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.store(true, Ordering::SeqCst);
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "only {} votes were acknowledged in 60 s", acked.len());

    // Every acknowledged vote is in the database, exactly as sent.
    let c = db(&run);
    for (id, a, b, choice, rater) in &acked {
        let row: (i64, i64, String, String) = c
            .query_row(
                "SELECT c.sample_a, c.sample_b, c.choice, r.name FROM comparisons c JOIN raters r ON r.id = c.rater_id WHERE c.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap_or_else(|e| panic!("acknowledged vote {id} was lost: {e}"));
        assert_eq!(row, (*a, *b, choice.clone(), rater.clone()));
    }
    let stored: i64 = c.query_row("SELECT COUNT(*) FROM comparisons", [], |r| r.get(0)).unwrap();
    // At most one vote per client was in flight (sent, not answered) at the kill.
    assert!(stored as usize >= acked.len() && stored as usize <= acked.len() + 6, "{stored} stored, {} acknowledged", acked.len());
    drop(c);
    eprintln!("{} votes acknowledged before SIGKILL, {stored} stored", acked.len());

    // After a restart the server counts them, and a page left open can still vote on its item.
    let server = start_label(&run);
    let (status, body) = http(server.addr, "GET", "/label/api/progress", None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["comparisons"].as_i64(), Some(stored));
    let (_, a, b, _, _) = &acked[0];
    let prompt: i64 = db(&run).query_row("SELECT prompt_id FROM samples WHERE id = ?1", [a], |r| r.get(0)).unwrap();
    let vote = json!({"prompt_id": prompt, "sample_a": a, "sample_b": b, "choice": "tie", "rater": "after-restart"});
    let (status, body) = http(server.addr, "POST", "/label/api/compare", Some(&vote)).unwrap();
    assert_eq!(status, 201, "{body}");
    drop(server);
    std::fs::remove_dir_all(&run).ok();
}

/// The OpenAI error shape of a 4xx body; its message.
fn error_message(status: u16, body: &str, want: u16) -> String {
    assert_eq!(status, want, "{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{body}");
    e["message"].as_str().unwrap().to_string()
}

#[test]
fn chat_page_streams_and_stores_feedback() {
    if !browser() {
        return;
    }
    let run = tiny_run("chat");
    let key = "test-key-123";
    let server = start_serve(&run, key);
    // The page and its assets need no key; the feedback endpoints do.
    for path in ["/", "/assets/chat.js", "/assets/style.css"] {
        assert_eq!(http(server.addr, "GET", path, None).unwrap().0, 200, "{path}");
    }
    let out = web_test("chat", server.addr, &["--api-key", key]);
    let c = db(&run);
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    // The thumbs-up: the whole conversation, with the system message and the streamed answer.
    let (model, messages, rating, rater): (String, String, i64, String) = c
        .query_row("SELECT f.model, f.messages, f.rating, r.name FROM chat_feedback f JOIN raters r ON r.id = f.rater_id", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((model.as_str(), rating, rater.as_str()), (format!("{name}/sft").as_str(), 1, "pw-chat"));
    let messages: Value = serde_json::from_str(&messages).unwrap();
    let want = json!([
        {"role": "system", "content": out["system"]},
        {"role": "user", "content": out["question"]},
        {"role": "assistant", "content": out["answer"]},
    ]);
    assert_eq!(messages, want, "{out}");
    // "Which is better?": B, over the prompt that ends with the second question.
    let (choice, a, b, seed_a, seed_b, prompt): (String, String, String, i64, i64, String) = c
        .query_row(
            "SELECT c.choice, sa.text, sb.text, sa.seed, sb.seed, p.messages FROM comparisons c
             JOIN samples sa ON sa.id = c.sample_a JOIN samples sb ON sb.id = c.sample_b JOIN prompts p ON p.id = c.prompt_id WHERE c.id = ?1",
            [out["vote_id"].as_i64().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    assert_eq!(choice, "b");
    assert_eq!((a.as_str(), b.as_str()), (out["pair"][0].as_str().unwrap(), out["pair"][1].as_str().unwrap()));
    assert_eq!((seed_a, seed_b), (out["seeds"][0].as_i64().unwrap(), out["seeds"][1].as_i64().unwrap()));
    let prompt: Value = serde_json::from_str(&prompt).unwrap();
    assert_eq!(prompt.as_array().unwrap().last().unwrap()["content"], out["question2"]);
    drop(server);
    std::fs::remove_dir_all(&run).ok();
}

/// A built-in tool call in the chat: the page forces a calculator call ("always call
/// calculator"), the server runs it and goes on, and the bubble shows the call's line with the
/// result, which is what running the calculator on those arguments gives.
#[test]
fn chat_page_shows_built_in_tool_calls() {
    if !browser() {
        return;
    }
    let run = tiny_run("tools");
    let key = "tools-key";
    let server = start_serve(&run, key);
    let out = web_test("tools", server.addr, &["--api-key", key]);
    let (name, args) = (out["name"].as_str().unwrap(), out["arguments"].as_str().unwrap());
    assert_eq!(name, "calculator", "{out}");
    let want = chatforge_data::tools::run_builtin(name, args);
    assert_eq!(out["ok"], want.is_ok(), "{out}");
    assert_eq!(out["result"].as_str().unwrap(), want.unwrap_or_else(|e| e), "{out}");
    let summary = out["summary"].as_str().unwrap();
    assert!(summary.starts_with("calculator: ") && summary.ends_with(&format!(" → {}", out["result"].as_str().unwrap())), "{summary}");
    drop(server);
    std::fs::remove_dir_all(&run).ok();
}

#[test]
fn feedback_and_vote_endpoints_reject_bad_input() {
    let run = tiny_run("bad");
    let key = "k";
    let serve = start_serve(&run, key);
    let post = |path: &str, body: Value| http_key(serve.addr, "POST", path, Some(&body), Some(key)).unwrap();
    let conv = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]);
    // No key: 401; with it: 201.
    let ok = json!({"model": "sft", "messages": conv, "rating": 1});
    let (status, body) = http(serve.addr, "POST", "/feedback/chat", Some(&ok)).unwrap();
    error_message(status, &body, 401);
    assert_eq!(post("/feedback/chat", ok).0, 201);
    let cases = [
        ("/feedback/chat", json!({"model": "sft", "messages": conv, "rating": 0}), 400),
        ("/feedback/chat", json!({"model": "nope", "messages": conv, "rating": 1}), 404),
        ("/feedback/chat", json!({"model": "sft", "messages": [{"role": "user", "content": "hi"}], "rating": 1}), 400),
        ("/feedback/chat", json!({"model": "sft", "messages": "hi", "rating": 1}), 400),
        ("/feedback/chat", json!({"model": "sft", "messages": conv, "rating": 1, "rater": "x".repeat(65)}), 400),
        (
            "/feedback/compare",
            json!({"model": "sft", "messages": conv, "answers": [{"text": "a", "seed": 1}, {"text": "b", "seed": 2}], "choice": "a"}),
            400,
        ),
        (
            "/feedback/compare",
            json!({"model": "sft", "messages": [{"role": "user", "content": "hi"}], "answers": [{"text": "a", "seed": 1}], "choice": "a"}),
            400,
        ),
        (
            "/feedback/compare",
            json!({"model": "sft", "messages": [{"role": "user", "content": "hi"}], "answers": [{"text": "a", "seed": 1}, {"text": "b", "seed": 2}], "choice": "c"}),
            400,
        ),
    ];
    for (path, body, want) in &cases {
        let (status, text) = post(path, body.clone());
        error_message(status, &text, *want);
    }
    let good = json!({"model": "sft", "messages": [{"role": "user", "content": "hi"}], "answers": [{"text": "a", "seed": 1}, {"text": "", "seed": 2}], "choice": "tie", "params": {"temperature": 0.7}});
    let (status, body) = post("/feedback/compare", good);
    assert_eq!(status, 201, "{body}");
    drop(serve);
    let c = db(&run);
    let n: (i64, i64) = c
        .query_row("SELECT (SELECT COUNT(*) FROM chat_feedback), (SELECT COUNT(*) FROM comparisons)", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(n, (1, 1), "only the good requests were stored");
    drop(c);

    let label = start_label(&run);
    let (status, body) = http(label.addr, "GET", "/label/api/next?k=1", None).unwrap();
    error_message(status, &body, 400);
    let (_, body) = http(label.addr, "GET", "/label/api/next?k=3", None).unwrap();
    let item: Value = serde_json::from_str(&body).unwrap();
    let (p, s) = (item["prompt_id"].as_i64().unwrap(), &item["samples"]);
    let (s0, s1, s2) = (s[0]["id"].as_i64().unwrap(), s[1]["id"].as_i64().unwrap(), s[2]["id"].as_i64().unwrap());
    let vote = |body: Value| http(label.addr, "POST", "/label/api/compare", Some(&body)).unwrap();
    let bad = [
        json!({"prompt_id": p, "sample_a": s0, "sample_b": s0, "choice": "a", "rater": "r"}),
        json!({"prompt_id": p, "sample_a": s0, "sample_b": 999_999, "choice": "a", "rater": "r"}),
        json!({"prompt_id": p + 1000, "sample_a": s0, "sample_b": s1, "choice": "a", "rater": "r"}),
        json!({"prompt_id": p, "sample_a": s0, "sample_b": s1, "choice": "maybe", "rater": "r"}),
        json!({"prompt_id": p, "sample_a": s0, "sample_b": s1, "choice": "a", "rater": "  "}),
        json!({"prompt_id": p, "sample_a": s0, "sample_b": s1, "choice": "a"}),
    ];
    for b in bad {
        let (status, text) = vote(b.clone());
        error_message(status, &text, 400);
    }
    let rank = |ranked: Value| {
        http(label.addr, "POST", "/label/api/rank", Some(&json!({"prompt_id": p, "ranked": ranked, "rater": "r"}))).unwrap()
    };
    for ranked in [json!([s0]), json!([s0, s0, s1]), json!([s0, 999_999])] {
        let (status, text) = rank(ranked);
        error_message(status, &text, 400);
    }
    let (status, body) = rank(json!([s2, s0, s1]));
    assert_eq!(status, 201, "{body}");
    let (_, body) = http(label.addr, "GET", "/label/api/progress", None).unwrap();
    let progress: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((progress["comparisons"].as_i64(), progress["rankings"].as_i64()), (Some(1), Some(1)), "{progress}");
    drop(label);
    std::fs::remove_dir_all(&run).ok();
}
