//! The engine: one thread owns the models and runs continuous batching.
//!
//! Requests arrive on a bounded queue (full: the API answers 429). Between two decoding steps the
//! engine admits waiting sequences into the running batch (the prompts waiting for a model
//! prefilled in one `Llama::decode_seqs_into` pass: TTFT p50 at 32 clients 0.14–0.17 s → 0.09–0.12 s),
//! then advances every live sequence by one token with one
//! `Llama::decode_batch_into` call per model, in one workspace reused from step to step (a
//! fresh one per step cost page faults: 32 clients got ~3.0k tokens/s, ~5.7–6.2k with it kept).
//! Each iteration runs on a pool worker (`chatforge_core::pool`). Each sequence streams its text back over its own
//! channel; a sequence whose receiver is gone (the client disconnected) is dropped at the next
//! step, which frees its slot and its KV cache. Each sequence samples with its own seeded RNG, so
//! a seed gives the same output whatever else is in the batch.
//!
//! Tools (chat sequences, [`ToolUse`]): each sequence has its own `chatforge_data::tools::Session`.
//! When a sequence samples its stop token, the session reads the turn; if the turn calls built-in
//! tools it runs them and gives the tokens of the `tool` turns and the next assistant header. The
//! sequence then decodes the stop token and those tokens in one `Llama::decode` call of its own at
//! the next step (the others still decode together) and goes on in the same KV cache; the calls
//! are sent back as an [`Event::Tools`]. A turn that calls a client-declared function ends the
//! answer with the calls ([`Event::Done`]'s `tool_calls`). Only the model's sampled tokens count
//! as completion tokens (and against `max_tokens`); the tool turns need room in the cache only.
//!
//! The streamed text of a chat sequence with tools is what its turns say before their calls: a
//! turn's text stops at `<tool_call>` (a tail that may begin one is held back until it is clear),
//! and a later turn's text is separated from the earlier by a blank line.
//!
//! Calls are decoded under a grammar ([`CallConstraint`]): the whole call when the first turn
//! must be one (`force`), or, from the moment the model has written `<tool_call>\n{"name": "`,
//! its name and arguments.

use rayon::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chatforge_core::cpu::Cpu;
use chatforge_core::model::{DecodeWs, KvCache, Llama};
use chatforge_core::sample::{sample, sample_where, SamplingParams};
use chatforge_data::chat::ToolCall;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_data::tools::{CallRecord, Session, Toolbox};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::constrained::{CallConstraint, CallGrammar, JsonConstraint, TokenTable, CALL_OPEN};
use crate::metrics::Metrics;

/// One sequence to generate.
pub struct Job {
    /// Index of the model (stage) in the engine's list.
    pub model: usize,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// The stop tokens are masked until this many tokens are sampled (`min_tokens`; `usize::MAX`
    /// for `ignore_eos`), unless a JSON constraint or a tool call decides what may come.
    pub min_tokens: usize,
    pub params: SamplingParams,
    pub seed: u64,
    /// Token ids that end the output (not included): `<|im_end|>`, `<|endoftext|>`.
    pub stop_ids: Vec<u32>,
    /// Strings that end the output (not included).
    pub stop: Vec<String>,
    /// Log-probabilities: `Some(k)` gives each token's and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    pub constraint: Option<JsonConstraint>,
    /// Tool calls (chat completions); `None`: the output is plain text (`/v1/completions`).
    pub tools: Option<ToolUse>,
    /// Which choice of its request this is (events are sent as `(index, event)`).
    pub index: usize,
    pub tx: mpsc::UnboundedSender<(usize, Event)>,
}

/// How a chat sequence calls tools.
#[derive(Clone)]
pub struct ToolUse {
    /// Built-ins on or off, the client's function names, the cap on calls per answer.
    pub toolbox: Toolbox,
    /// The functions a call the model opens may name, with their argument grammars: the rest of
    /// such a call is decoded under it (`None`: calls the model opens are not constrained).
    pub calls: Option<Arc<CallGrammar>>,
    /// The first turn is one call of these functions, forced whole (`tool_choice` `required` or
    /// a named function).
    pub force: Option<Arc<CallGrammar>>,
}

/// Tokens kept free in the cache per allowed call, for the `tool` turns put in.
pub const TOOL_TURN_RESERVE: usize = 96;

/// A token's log-probability and the most likely alternatives (token text, log-probability).
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// What a sequence sends back.
#[derive(Debug, Clone)]
pub enum Event {
    /// New text (possibly empty while a UTF-8 character or a possible stop string is held back)
    /// and the tokens emitted since the last event.
    Delta { text: String, logprobs: Vec<TokenLogprob> },
    /// Built-in tools the engine ran (errors included); the answer goes on.
    Tools { calls: Vec<CallRecord> },
    /// The end: `stop` (a stop token or string, or a complete constrained output), `length`, or
    /// `tool_calls` (the last turn calls client functions: `tool_calls`, ids `call_1`, ...).
    Done { finish_reason: &'static str, prompt_tokens: usize, completion_tokens: usize, tool_calls: Vec<ToolCall> },
}

/// Engine limits.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together at most; more wait in the queue.
    pub max_batch: usize,
    /// Requests (sequences) waiting at most; one more is refused with 429.
    pub queue: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_batch: 32, queue: 256 }
    }
}

/// The API's handle on the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    QueueFull,
    Stopped,
}

impl Engine {
    /// Starts the engine thread over `models`.
    pub fn start(models: Vec<Llama<Cpu>>, tok: Arc<Tokenizer>, cfg: EngineConfig, metrics: Arc<Metrics>) -> Engine {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let table = Arc::new(token_table(&tok));
        std::thread::Builder::new()
            .name("chatforge-engine".into())
            .spawn(move || {
                let ws = models[0].decode_ws();
                Runner { models, tok: &tok, table, cfg, metrics, seqs: Vec::new(), ws }.run(rx)
            })
            .expect("spawning the engine thread");
        Engine { tx }
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
        })
    }

    /// Queues several jobs (the `n` choices of a request) or none.
    pub fn submit_all(&self, jobs: Vec<Job>) -> Result<(), SubmitError> {
        let mut permits = Vec::with_capacity(jobs.len());
        for _ in 0..jobs.len() {
            permits.push(self.tx.try_reserve().map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
            })?);
        }
        for (p, j) in permits.into_iter().zip(jobs) {
            p.send(j);
        }
        Ok(())
    }
}

/// The vocabulary's byte strings (for constrained decoding and streamed text).
pub fn token_table(tok: &Tokenizer) -> TokenTable {
    let n = tok.vocab_size();
    TokenTable::new(
        (0..n as u32).map(|i| tok.token_bytes(i).unwrap_or_default()).collect(),
        (0..n as u32).map(|i| tok.is_special(i)).collect(),
    )
}

struct Seq<'t> {
    job: Job,
    cache: KvCache<Cpu>,
    rng: ChaCha8Rng,
    /// Every token after the prompt: sampled ones and the tool turns put in.
    out: Vec<u32>,
    /// Tokens the model sampled (the completion tokens).
    sampled: usize,
    /// The sampled token not yet accepted, and its log-probabilities.
    next: u32,
    next_lp: Option<TokenLogprob>,
    /// Tokens put in after `next` (tool turns): decoded with it at the next step.
    put: Vec<u32>,
    pending_lp: Vec<TokenLogprob>,
    /// Where the current turn starts in `out`, and bytes of its text already sent.
    turn_start: usize,
    sent: usize,
    /// Whether any text was sent (a later turn's text then starts with a blank line).
    said: bool,
    session: Option<Session<'t>>,
    /// The call being decoded under its grammar.
    call: Option<CallConstraint>,
    /// Bytes of the turn's text searched for a call the model opened.
    scanned: usize,
    /// Calls already sent in [`Event::Tools`].
    reported: usize,
}

impl Seq<'_> {
    fn tools_on(&self) -> bool {
        self.session.is_some()
    }

    /// Whether this turn is a forced call (the first turn, with `force`).
    fn forced_turn(&self) -> bool {
        self.turn_start == 0 && self.job.tools.as_ref().is_some_and(|t| t.force.is_some())
    }

    fn done(&self, reason: &'static str, tool_calls: Vec<ToolCall>) {
        let _ = self.job.tx.send((
            self.job.index,
            Event::Done { finish_reason: reason, prompt_tokens: self.job.prompt.len(), completion_tokens: self.sampled, tool_calls },
        ));
    }
}

struct Runner<'t> {
    models: Vec<Llama<Cpu>>,
    tok: &'t Tokenizer,
    table: Arc<TokenTable>,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    seqs: Vec<Seq<'t>>,
    /// The decoding calls' buffers, reused from step to step (no allocation per token).
    ws: DecodeWs<Cpu>,
}

impl<'t> Runner<'t> {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let first = match self.seqs.is_empty() {
                true => match rx.blocking_recv() {
                    Some(job) => Some(job),
                    None => return,
                },
                false => None,
            };
            // Each iteration runs on a pool worker (`chatforge_core::pool`); waiting does not.
            chatforge_core::pool::on_pool(|| self.iteration(first, &mut rx));
        }
    }

    /// Admits what is queued (up to the batch size), then one decoding step.
    fn iteration(&mut self, first: Option<Job>, rx: &mut mpsc::Receiver<Job>) {
        let mut jobs: Vec<Job> = first.into_iter().collect();
        while self.seqs.len() + jobs.len() < self.cfg.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        self.admit(jobs);
        self.metrics.queued.store(rx.len() as u64, Ordering::Relaxed);
        self.accept();
        self.metrics.running.store(self.seqs.len() as u64, Ordering::Relaxed);
        self.step();
        self.metrics.running.store(self.seqs.len() as u64, Ordering::Relaxed);
    }

    /// Prefills new sequences, all of a model's prompts in one pass (`Llama::decode_seqs_into`:
    /// one matmul over all their rows instead of one per prompt, the same bits), and samples
    /// each one's first token.
    fn admit(&mut self, jobs: Vec<Job>) {
        let jobs: Vec<Job> = jobs
            .into_iter()
            .filter(|job| {
                if job.tx.is_closed() {
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let ctx = self.models[job.model].cfg.max_position_embeddings;
                if job.prompt.is_empty() || job.prompt.len() >= ctx || job.max_tokens == 0 {
                    // The API checks this; an empty budget ends at once.
                    let _ = job.tx.send((
                        job.index,
                        Event::Done { finish_reason: "length", prompt_tokens: job.prompt.len(), completion_tokens: 0, tool_calls: vec![] },
                    ));
                    return false;
                }
                true
            })
            .collect();
        if jobs.is_empty() {
            return;
        }
        let t0 = std::time::Instant::now();
        let mut caches: Vec<KvCache<Cpu>> = jobs
            .iter()
            .map(|job| {
                let model = &self.models[job.model];
                let reserve = job.tools.as_ref().map_or(0, |t| TOOL_TURN_RESERVE * t.toolbox.max_calls.max(1));
                model.new_cache((job.prompt.len() + job.max_tokens + reserve).min(model.cfg.max_position_embeddings))
            })
            .collect();
        let mut logits: Vec<Vec<f32>> = vec![Vec::new(); jobs.len()];
        for (m, model) in self.models.iter().enumerate() {
            let idx: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].model == m).collect();
            if idx.is_empty() {
                continue;
            }
            let mut refs: Vec<&mut KvCache<Cpu>> =
                caches.iter_mut().enumerate().filter(|(i, _)| jobs[*i].model == m).map(|(_, c)| c).collect();
            let ids: Vec<&[u32]> = idx.iter().map(|&i| jobs[i].prompt.as_slice()).collect();
            model.decode_seqs_into(&mut refs, &ids, &mut self.ws);
            let v = model.cfg.vocab_size;
            for (k, &i) in idx.iter().enumerate() {
                logits[i] = self.ws.host[k * v..(k + 1) * v].to_vec();
            }
        }
        self.metrics.prompt_tokens.fetch_add(jobs.iter().map(|j| j.prompt.len() as u64).sum(), Ordering::Relaxed);
        self.metrics.prefill_seconds.add(t0.elapsed().as_secs_f64());
        for ((job, cache), logits) in jobs.into_iter().zip(caches).zip(logits) {
            self.start(job, cache, logits);
        }
    }

    /// A prefilled sequence joins the batch with its first token sampled.
    fn start(&mut self, job: Job, cache: KvCache<Cpu>, logits: Vec<f32>) {
        let rng = ChaCha8Rng::seed_from_u64(job.seed);
        let session = job.tools.as_ref().map(|t| Session::new(self.tok, t.toolbox.clone(), 1).ground(std::slice::from_ref(&job.prompt)));
        let call = job.tools.as_ref().and_then(|t| t.force.clone()).map(CallConstraint::forced);
        let mut seq = Seq {
            job,
            cache,
            rng,
            out: vec![],
            sampled: 0,
            next: 0,
            next_lp: None,
            put: vec![],
            pending_lp: vec![],
            turn_start: 0,
            sent: 0,
            said: false,
            session,
            call,
            scanned: 0,
            reported: 0,
        };
        self.pick(&mut seq, logits);
        self.seqs.push(seq);
    }

    /// Masks (constrained decoding), samples and records log-probabilities.
    ///
    /// Where the sampler draws from the whole softmax (greedy, or no top-k / top-p) and no
    /// log-probabilities are asked for, it draws before masking: up to [`DRAWS_BEFORE_MASKING`]
    /// draws, each checked against the masks one token at a time ([`Runner::grammar_allows`] and
    /// `Session::allows`: a few bytes' walk), the first allowed one taken, the masks computed only when all are
    /// refused. That is distributed exactly as the masked softmax (`sample_where`), and greedy
    /// keeps the masked argmax. Masking walks the 4,096-token trie: at 32 streams the masks were a
    /// fifth of the server's time (`perf` on `bench serve`).
    fn pick(&self, seq: &mut Seq<'t>, mut logits: Vec<f32>) {
        let left = seq.job.max_tokens - seq.sampled;
        // A call the model opened that can no longer be finished in the tokens left is left
        // unconstrained (it ends at the length; a forced call always fits, as the API checks).
        if !seq.forced_turn() && seq.call.as_ref().is_some_and(|c| c.min_remaining() + 1 > left) {
            seq.call = None;
        }
        // The stop tokens' mask under `min_tokens` (when no grammar masks) costs nothing.
        if seq.call.is_none() && seq.job.constraint.is_none() && seq.sampled < seq.job.min_tokens {
            for &id in &seq.job.stop_ids {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let p = &seq.job.params;
        let whole = p.temperature <= 0.0 || (p.top_k == 0 && p.top_p >= 1.0);
        let masked = seq.call.is_some() || seq.job.constraint.is_some() || seq.session.is_some();
        if whole && masked && seq.job.logprobs.is_none() {
            let mut rng = seq.rng.clone();
            let draw = sample_where(&logits, p, &mut rng, DRAWS_BEFORE_MASKING, |t| {
                self.grammar_allows(seq, t, left) && seq.session.as_ref().is_none_or(|s| s.allows(0, &seq.out, t))
            });
            seq.rng = rng;
            if let Some(t) = draw {
                seq.next = t;
                seq.next_lp = None;
                return;
            }
        }
        // Grounded arguments of the built-in tools (`chatforge_data::tools::Ground`) narrow the
        // grammar's tokens, never so that nothing is left. Where they allow few tokens (inside a
        // grounded value), those are checked against the grammar one by one: the same set as the
        // grammar's mask intersected with theirs, without walking the trie.
        let ground = seq.session.as_ref().and_then(|s| s.allowed(0, &seq.out));
        let grammar = seq.call.is_some() || seq.job.constraint.is_some();
        let few = ground.as_ref().filter(|g| grammar && g.iter().filter(|&&k| k).count() <= FEW_GROUNDED);
        let kept: Option<Vec<bool>> =
            few.map(|g| (0..g.len()).map(|t| g[t] && logits[t] > f32::NEG_INFINITY && self.grammar_allows(seq, t as u32, left)).collect());
        if let Some(k) = kept.filter(|k| k.contains(&true)) {
            apply(&mut logits, &k);
        } else {
            if let Some(c) = &seq.call {
                // One token stays free for the stop token after the call.
                c.mask(&mut logits, &self.table, left.saturating_sub(1), self.tok.im_end_id());
            } else if let Some(c) = &seq.job.constraint {
                c.mask(&mut logits, &self.table, left, self.tok.im_end_id());
            }
            if let Some(g) = ground.filter(|g| logits.iter().zip(g).any(|(l, &k)| k && *l > f32::NEG_INFINITY)) {
                apply(&mut logits, &g);
            }
        }
        seq.next = sample(&logits, &seq.job.params, &mut seq.rng);
        seq.next_lp = seq.job.logprobs.map(|k| self.logprob(&logits, seq.next, k));
    }

    /// Whether the grammar of [`Runner::pick`] keeps `t`: the call's, else the response format's
    /// (the stop tokens under `min_tokens` are masked before).
    fn grammar_allows(&self, seq: &Seq<'t>, t: u32, left: usize) -> bool {
        let end = self.tok.im_end_id();
        match (&seq.call, &seq.job.constraint) {
            // One token stays free for the stop token after the call.
            (Some(c), _) => c.allows(&self.table, t, left.saturating_sub(1), end),
            (None, Some(c)) => c.allows(&self.table, t, left, end),
            (None, None) => true,
        }
    }

    fn logprob(&self, logits: &[f32], tok: u32, k: usize) -> TokenLogprob {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = m + logits.iter().map(|&x| (x - m).exp()).sum::<f32>().ln();
        let entry = |i: u32| {
            let bytes = self.table.bytes.get(i as usize).cloned().unwrap_or_default();
            (String::from_utf8_lossy(&bytes).into_owned(), bytes, logits[i as usize] - lse)
        };
        let mut idx: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
        let k = k.min(idx.len());
        if k > 0 {
            idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        }
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let (token, bytes, logprob) = entry(tok);
        TokenLogprob { token, bytes, logprob, top: idx.into_iter().map(entry).collect() }
    }

    /// Accepts each sequence's sampled token: streams text, runs tool calls, ends sequences that
    /// stop, ran out of budget or lost their client.
    fn accept(&mut self) {
        let mut seqs = std::mem::take(&mut self.seqs);
        seqs.retain_mut(|s| self.accept_one(s));
        self.seqs = seqs;
    }

    /// [`Runner::accept`] for one sequence: whether it goes on.
    fn accept_one(&self, s: &mut Seq<'t>) -> bool {
        if s.job.tx.is_closed() {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let t = s.next;
        if s.job.stop_ids.contains(&t) {
            return self.end_turn(s, t);
        }
        s.out.push(t);
        s.sampled += 1;
        self.metrics.completion_tokens.fetch_add(1, Ordering::Relaxed);
        if let Some(lp) = s.next_lp.take() {
            s.pending_lp.push(lp);
        }
        let bytes = self.tok.token_bytes(t).unwrap_or_default();
        let forced = s.forced_turn();
        if let Some(c) = &mut s.call {
            let ok = c.feed(&bytes);
            debug_assert!(ok, "a masked token was emitted");
            // A call the model opened itself ends here; a forced call waits for the stop token.
            if !ok || (c.done() && !forced) {
                s.call = None;
            }
        } else if let Some(c) = &mut s.job.constraint {
            c.advance(&bytes);
        }
        let text = self.tok.decode(&s.out[s.turn_start..], true);
        self.open_call(s, &text);
        let visible = if s.tools_on() { &text[..text.find(CALL_OPEN_TAG).unwrap_or(text.len())] } else { &text[..] };
        // The earliest stop string in the text ends the output before it.
        if let Some(cut) = s.job.stop.iter().filter_map(|st| visible.find(st.as_str())).min() {
            self.flush(s, &text, Some(cut));
            s.done("stop", vec![]);
            return false;
        }
        // A closed JSON value: nothing may follow (an open top-level number may still grow,
        // or end with <|im_end|>, which the mask allows once the value is complete).
        let complete = s.call.is_none() && s.job.constraint.as_ref().is_some_and(|c| c.state.finished());
        if complete {
            self.flush(s, &text, None);
            s.done("stop", vec![]);
            return false;
        }
        if s.sampled >= s.job.max_tokens || s.cache.len >= s.cache.capacity {
            self.flush(s, &text, None);
            s.done("length", vec![]);
            return false;
        }
        // Hold back an incomplete UTF-8 character, a tail that may begin a stop string, and (with
        // tools) a tail that may begin a call and the spaces before it.
        let base = visible.trim_end_matches('\u{FFFD}').len();
        let shown = &visible[..base];
        let mut hold = s
            .job
            .stop
            .iter()
            .filter_map(|st| (1..st.len()).rev().find(|&k| st.is_char_boundary(k) && shown.ends_with(&st[..k])))
            .max()
            .unwrap_or(0);
        if s.tools_on() {
            if visible.len() < text.len() {
                hold = hold.max(base - shown.trim_end().len());
            } else {
                let call = (1..CALL_OPEN_TAG.len()).rev().find(|&k| shown.ends_with(&CALL_OPEN_TAG[..k])).unwrap_or(0);
                let spaces = shown[..base - call].len() - shown[..base - call].trim_end().len();
                hold = hold.max(call + if call > 0 { spaces } else { 0 });
            }
        }
        let end = base - hold.min(base);
        self.send_text(s, &text, end)
    }

    /// Sends the current turn's text up to byte `end` (from what was not sent yet), with the
    /// pending log-probabilities. False if the client is gone.
    fn send_text(&self, s: &mut Seq<'t>, text: &str, end: usize) -> bool {
        // A later turn starts after its leading spaces, a blank line after the earlier text.
        let lead = if s.turn_start > 0 { text.len() - text.trim_start().len() } else { 0 };
        let from = s.sent.max(lead);
        let mut delta = String::new();
        if end > from {
            if s.said && s.sent < lead.max(1) && s.turn_start > 0 {
                delta.push_str("\n\n");
            }
            delta.push_str(&text[from..end]);
            s.sent = end;
            s.said = true;
        }
        if delta.is_empty() && s.pending_lp.is_empty() {
            return true;
        }
        let lps = std::mem::take(&mut s.pending_lp);
        if s.job.tx.send((s.job.index, Event::Delta { text: delta, logprobs: lps })).is_err() {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Sends the rest of the turn's text that may be shown: up to byte `cut` if given, and up to
    /// its first call (without the spaces before it).
    fn flush(&self, s: &mut Seq<'t>, text: &str, cut: Option<usize>) {
        let end = match (s.tools_on(), text.find(CALL_OPEN_TAG)) {
            (true, Some(at)) => text[..at].trim_end().len(),
            _ => text.len(),
        };
        let end = cut.map_or(end, |c| c.min(end));
        self.send_text(s, text, end);
    }

    /// With `auto` calls: once the model has written the opening of a call, its name and
    /// arguments are decoded under the call grammar (when what it wrote so far fits it).
    fn open_call(&self, s: &mut Seq<'t>, text: &str) {
        let Some(grammar) = s.job.tools.as_ref().and_then(|t| t.calls.clone()) else { return };
        if s.call.is_none() {
            (s.scanned, s.call) = opened_call(grammar, text, s.scanned);
        }
    }

    /// The sequence sampled its stop token `t`: the answer ends, or (the turn called built-in
    /// tools) the tool turns are put in and the answer goes on.
    fn end_turn(&self, s: &mut Seq<'t>, t: u32) -> bool {
        let text = self.tok.decode(&s.out[s.turn_start..], true);
        self.flush(s, &text, None);
        let Some(session) = s.session.as_mut() else {
            s.done("stop", vec![]);
            return false;
        };
        let put = session.on_stop(0, &s.out);
        let answer = session.answer(0, &s.out);
        let ran = answer.calls[s.reported.min(answer.calls.len())..].to_vec();
        if !ran.is_empty() {
            s.reported = answer.calls.len();
            self.metrics.tool_calls.fetch_add(ran.len() as u64, Ordering::Relaxed);
            if s.job.tx.send((s.job.index, Event::Tools { calls: ran })).is_err() {
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        match put {
            Some(put) if s.cache.len + 1 + put.len() < s.cache.capacity && s.sampled < s.job.max_tokens => {
                s.out.push(t);
                s.out.extend_from_slice(&put);
                s.put = put;
                s.turn_start = s.out.len();
                s.sent = 0;
                s.scanned = 0;
                s.call = None;
                true
            }
            // No room for the results and an answer after them.
            Some(_) => {
                s.done("length", vec![]);
                false
            }
            None if !answer.client_calls.is_empty() => {
                s.done("tool_calls", answer.client_calls);
                false
            }
            None => {
                s.done("stop", vec![]);
                false
            }
        }
    }

    /// One decoding step of every live sequence, batched per model; a sequence with tool turns
    /// to put in decodes them with its token on its own.
    fn step(&mut self) {
        if self.seqs.is_empty() {
            return;
        }
        let t0 = std::time::Instant::now();
        let mut logits: Vec<Option<Vec<f32>>> = vec![None; self.seqs.len()];
        for (i, s) in self.seqs.iter_mut().enumerate() {
            if !s.put.is_empty() {
                let mut piece = vec![s.next];
                piece.append(&mut s.put);
                self.models[s.job.model].decode_into(&mut s.cache, &piece, &mut self.ws);
                logits[i] = Some(self.ws.host.clone());
            }
        }
        for m in 0..self.models.len() {
            let batched = |s: &Seq, i: usize| s.job.model == m && logits[i].is_none();
            let idx: Vec<usize> = (0..self.seqs.len()).filter(|&i| batched(&self.seqs[i], i)).collect();
            if idx.is_empty() {
                continue;
            }
            let tokens: Vec<u32> = idx.iter().map(|&i| self.seqs[i].next).collect();
            let mut caches: Vec<&mut KvCache<Cpu>> =
                self.seqs.iter_mut().enumerate().filter(|(i, s)| batched(s, *i)).map(|(_, s)| &mut s.cache).collect();
            self.models[m].decode_batch_into(&mut caches, &tokens, &mut self.ws);
            let v = self.models[m].cfg.vocab_size;
            for (k, i) in idx.into_iter().enumerate() {
                logits[i] = Some(self.ws.host[k * v..(k + 1) * v].to_vec());
            }
        }
        // The masks and the sampler, one sequence per task: at 32 streams they were as long as
        // the model's step on one core while the other waited.
        let mut seqs = std::mem::take(&mut self.seqs);
        seqs.par_iter_mut().zip(logits).for_each(|(s, l)| self.pick(s, l.expect("every sequence belongs to a model")));
        self.seqs = seqs;
        self.metrics.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.metrics.decode_seconds.add(t0.elapsed().as_secs_f64());
    }
}

/// Sets the logits of the tokens `keep` refuses to −∞.
fn apply(logits: &mut [f32], keep: &[bool]) {
    for (l, &k) in logits.iter_mut().zip(keep) {
        if !k {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// At most this many grounded tokens are checked one by one against the grammar instead of its
/// mask (one check is a few bytes' walk from a cloned state; the mask walks the whole trie).
const FEW_GROUNDED: usize = 512;

/// Draws [`Runner::pick`] tries before it masks. Inside a tool call the SFT model's draws at
/// T = 1 were refused about two times in three on the first try (`bench serve`, 32 streams).
const DRAWS_BEFORE_MASKING: usize = 8;

/// Looks for the opening of a call in `text` after byte `scanned`: where to look next time, and
/// the constraint for the rest of the call if one was opened and what follows fits the grammar.
fn opened_call(grammar: Arc<CallGrammar>, text: &str, scanned: usize) -> (usize, Option<CallConstraint>) {
    let Some(at) = text.get(scanned..).and_then(|r| r.find(CALL_OPEN)) else { return (scanned, None) };
    let after = scanned + at + CALL_OPEN.len();
    let mut c = CallConstraint::after_open(grammar);
    let fits = c.feed(text[after..].trim_end_matches('\u{FFFD}').as_bytes()) && !c.done();
    (after, fits.then_some(c))
}

/// `<tool_call>`: where a turn's shown text ends.
const CALL_OPEN_TAG: &str = chatforge_data::tools::CALL_OPEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constrained::Grammar;

    #[test]
    fn a_call_the_model_opens_is_constrained_from_there() {
        let args =
            Grammar::from_schema(&serde_json::json!({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}));
        let g = Arc::new(CallGrammar::new(vec![("f".into(), Arc::new(args.unwrap()))]));
        assert!(matches!(opened_call(g.clone(), "Let me see. <tool_call>\n{\"na", 0), (0, None)));
        // Opened, with part of the name in the same token: constrained from there.
        let text = "Sure. <tool_call>\n{\"name\": \"f";
        let (next, c) = opened_call(g.clone(), text, 0);
        assert_eq!(next, text.len() - 1);
        let mut c = c.expect("constrained");
        assert!(!c.clone().feed(b"g") && c.feed(b"\", \"arguments\": {\"x\": 4}}\n</tool_call>") && c.done());
        // A name the grammar does not know: left to the session (an error result).
        assert!(opened_call(g.clone(), "<tool_call>\n{\"name\": \"python", 0).1.is_none());
        // The second call of a turn is found after the first.
        let two = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"";
        let (first, _) = opened_call(g.clone(), two, 0);
        let (second, c) = opened_call(g, two, first);
        assert!(second == two.len() && c.is_some());
    }
}
