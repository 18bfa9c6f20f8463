//! A loopback load test for any OpenAI-compatible server (chatforge's, or llama.cpp's
//! `llama-server` as the peer): many concurrent streaming chat requests, some of which hang up
//! mid-stream, over a small HTTP/1 client. Counts what each client got and the aggregate tokens/s.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `host:port` of the server.
    pub addr: String,
    pub api_key: Option<String>,
    /// The model id to ask for (`None`: the server's default).
    pub model: Option<String>,
    pub streams: usize,
    pub max_tokens: usize,
    /// Every `k`-th client (k > 0) hangs up after its third content chunk.
    pub disconnect_every: usize,
    /// Ask for answers of exactly `max_tokens` (`ignore_eos`, which chatforge and llama-server
    /// both take), so that two servers are measured on the same work.
    pub ignore_eos: bool,
}

/// What the run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub streams: usize,
    /// Clients that read their stream to `data: [DONE]`.
    pub completed: usize,
    /// Clients that hung up on purpose.
    pub disconnected: usize,
    /// Problems of clients that should have completed (status, malformed chunks, early EOF).
    pub errors: Vec<String>,
    /// Tokens received: the usage of completed streams, content chunks of the others.
    pub tokens: usize,
    pub seconds: f64,
    /// Median time to the first content chunk, seconds.
    pub ttft_median: f64,
}

impl LoadReport {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

enum Outcome {
    Completed { tokens: usize, ttft: Option<f64> },
    Disconnected { tokens: usize, ttft: Option<f64> },
    Failed(String),
}

/// Sends one request and returns the status and the whole body (small, non-streaming requests).
pub async fn request(addr: &str, method: &str, path: &str, api_key: Option<&str>, body: Option<&Value>) -> Result<(u16, String), String> {
    let mut resp = send(addr, method, path, api_key, body).await?;
    let status = resp.status().as_u16();
    let bytes = resp.body_mut().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

async fn send(
    addr: &str,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    body: Option<&Value>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr).header("content-type", "application/json");
    if let Some(k) = api_key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| e.to_string())
}

async fn one_client(cfg: &LoadConfig, i: usize) -> Outcome {
    let hang_up = cfg.disconnect_every > 0 && i % cfg.disconnect_every == cfg.disconnect_every - 1;
    let mut body = json!({
        "messages": [{"role": "user", "content": format!("Tell me about the plays, part {i}.")}],
        "max_tokens": cfg.max_tokens, "temperature": 1.0, "seed": i, "stream": true, "stream_options": {"include_usage": true},
    });
    if let Some(m) = &cfg.model {
        body["model"] = json!(m);
    }
    if cfg.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    let t0 = Instant::now();
    let mut resp = match send(&cfg.addr, "POST", "/v1/chat/completions", cfg.api_key.as_deref(), Some(&body)).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("client {i}: {e}")),
    };
    if resp.status() != 200 {
        let bytes = resp.body_mut().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Outcome::Failed(format!("client {i}: status {}: {}", resp.status(), String::from_utf8_lossy(&bytes)));
    }
    let (mut buf, mut chunks, mut ttft, mut usage, mut ids) = (Vec::new(), 0usize, None, None, std::collections::HashSet::new());
    loop {
        let frame = match resp.body_mut().frame().await {
            None => break,
            Some(Err(e)) => return Outcome::Failed(format!("client {i}: reading the stream: {e}")),
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            let text = String::from_utf8_lossy(&event);
            for line in text.lines() {
                let Some(payload) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) else { continue };
                if payload.trim() == "[DONE]" {
                    return match (usage, ids.len()) {
                        (Some(u), 1) => Outcome::Completed { tokens: u, ttft },
                        (None, _) => Outcome::Failed(format!("client {i}: no usage chunk before [DONE]")),
                        (_, n) => Outcome::Failed(format!("client {i}: {n} ids in one stream")),
                    };
                }
                let v: Value = match serde_json::from_str(payload) {
                    Ok(v) => v,
                    Err(e) => return Outcome::Failed(format!("client {i}: bad chunk {payload:?}: {e}")),
                };
                if let Some(id) = v["id"].as_str() {
                    ids.insert(id.to_string());
                }
                if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                    usage = Some(u as usize);
                }
                if v["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
                    chunks += 1;
                    ttft.get_or_insert(t0.elapsed().as_secs_f64());
                    if hang_up && chunks >= 3 {
                        // Dropping the response closes the connection mid-stream.
                        return Outcome::Disconnected { tokens: chunks, ttft };
                    }
                }
            }
        }
    }
    if hang_up {
        // The output ended before the third chunk: nothing to hang up on.
        return Outcome::Disconnected { tokens: chunks, ttft };
    }
    Outcome::Failed(format!("client {i}: the stream ended without [DONE]"))
}

/// Runs `cfg.streams` clients at once and gathers what they got.
pub async fn run_load(cfg: &LoadConfig) -> LoadReport {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..cfg.streams)
        .map(|i| {
            let cfg = cfg.clone();
            tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(600), one_client(&cfg, i)).await })
        })
        .collect();
    let mut r = LoadReport { streams: cfg.streams, ..Default::default() };
    let mut ttfts = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(Outcome::Completed { tokens, ttft })) => {
                r.completed += 1;
                r.tokens += tokens;
                ttfts.extend(ttft);
            }
            Ok(Ok(Outcome::Disconnected { tokens, ttft })) => {
                r.disconnected += 1;
                r.tokens += tokens;
                ttfts.extend(ttft);
            }
            Ok(Ok(Outcome::Failed(e))) => r.errors.push(e),
            Ok(Err(_)) => r.errors.push("a client timed out after 600 s".into()),
            Err(e) => r.errors.push(format!("a client panicked: {e}")),
        }
    }
    r.seconds = t0.elapsed().as_secs_f64();
    ttfts.sort_by(f64::total_cmp);
    r.ttft_median = ttfts.get(ttfts.len() / 2).copied().unwrap_or(0.0);
    r
}

/// One row of `chatforge bench serve`: the load report and whether `/health` answered 200 after it.
pub struct BenchRow {
    pub report: LoadReport,
    pub healthy_after: bool,
    /// Sequences the server dropped for disconnected clients during the run (in-process servers).
    pub cancelled: Option<u64>,
}

/// Runs the load at each of `streams` against `target` (an address), or against `serve` started
/// in-process on a free loopback port. `row` sees each row as it is done.
pub fn bench(
    serve: Option<&crate::ServeConfig>,
    target: Option<String>,
    streams: &[usize],
    base: &LoadConfig,
    mut row: impl FnMut(&BenchRow),
) -> crate::Result<Vec<BenchRow>> {
    use std::sync::atomic::Ordering;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| crate::Error::Server(e.to_string()))?;
    let state = serve.map(crate::AppState::load).transpose()?.map(std::sync::Arc::new);
    rt.block_on(async move {
        let (addr, stop) = match (&state, target) {
            (_, Some(t)) => (t, None),
            (Some(st), None) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| crate::Error::Server(e.to_string()))?;
                let addr = listener.local_addr().map_err(|e| crate::Error::Server(e.to_string()))?.to_string();
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let router = crate::app(st.clone());
                let handle = tokio::spawn(crate::serve(listener, router, async move {
                    let _ = rx.await;
                }));
                (addr, Some((tx, handle)))
            }
            (None, None) => return Err(crate::Error::Config("bench serve needs a run or a server address".into())),
        };
        let mut rows = Vec::new();
        for &n in streams {
            let before = state.as_ref().map(|s| s.metrics.cancelled.load(Ordering::Relaxed));
            let report = run_load(&LoadConfig { addr: addr.clone(), streams: n, ..base.clone() }).await;
            // Give the engine a moment to notice the hang-ups.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let healthy_after = matches!(request(&addr, "GET", "/health", None, None).await, Ok((200, _)));
            let cancelled = state.as_ref().zip(before).map(|(s, b)| s.metrics.cancelled.load(Ordering::Relaxed) - b);
            let r = BenchRow { report, healthy_after, cancelled };
            row(&r);
            rows.push(r);
        }
        if let Some((tx, handle)) = stop {
            let _ = tx.send(());
            let _ = handle.await;
        }
        Ok(rows)
    })
}
