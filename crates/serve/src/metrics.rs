//! Counters of the server, rendered as Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A sum of seconds.
#[derive(Default)]
pub struct Seconds(Mutex<f64>);

impl Seconds {
    pub fn add(&self, s: f64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += s;
    }

    pub fn get(&self) -> f64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Requests answered, by route and status: filled by the API.
    pub requests: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub decode_steps: AtomicU64,
    pub decode_seconds: Seconds,
    pub prefill_seconds: Seconds,
    /// Sequences dropped because their client went away.
    pub cancelled: AtomicU64,
    pub running: AtomicU64,
    pub queued: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub moderation_flagged: AtomicU64,
    pub moderation_refused: AtomicU64,
    /// Built-in tool calls the engine ran (errors included).
    pub tool_calls: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric("chatforge_prompt_tokens_total", "counter", "Prompt tokens prefilled.", g(&self.prompt_tokens));
        metric("chatforge_completion_tokens_total", "counter", "Tokens generated.", g(&self.completion_tokens));
        metric("chatforge_decode_steps_total", "counter", "Batched decoding steps.", g(&self.decode_steps));
        metric("chatforge_decode_seconds_total", "counter", "Time in batched decoding steps.", format!("{:.6}", self.decode_seconds.get()));
        metric("chatforge_prefill_seconds_total", "counter", "Time in prompt prefill.", format!("{:.6}", self.prefill_seconds.get()));
        metric("chatforge_sequences_cancelled_total", "counter", "Sequences dropped because the client disconnected.", g(&self.cancelled));
        metric("chatforge_sequences_running", "gauge", "Sequences in the running batch.", g(&self.running));
        metric("chatforge_sequences_queued", "gauge", "Sequences waiting in the queue.", g(&self.queued));
        metric("chatforge_rejected_queue_full_total", "counter", "Requests refused with 429 (queue full).", g(&self.rejected_queue_full));
        metric("chatforge_moderation_flagged_total", "counter", "Texts the moderation policy flagged.", g(&self.moderation_flagged));
        metric(
            "chatforge_moderation_refused_total",
            "counter",
            "Requests or outputs the moderation policy refused.",
            g(&self.moderation_refused),
        );
        metric("chatforge_tool_calls_total", "counter", "Built-in tool calls run (errors included).", g(&self.tool_calls));
        let _ = writeln!(s, "# HELP chatforge_requests_total HTTP requests answered.\n# TYPE chatforge_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "chatforge_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        s
    }
}
