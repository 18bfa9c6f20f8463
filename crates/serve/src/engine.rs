//! The engine: one thread owns the models and runs continuous batching.
//!
//! Requests arrive on a bounded queue (full: the API answers 429). Between two decoding steps the
//! engine admits waiting sequences into the running batch (prefill with `Llama::decode`, one
//! sequence at a time), then advances every live sequence by one token with one
//! `Llama::decode_batch` call per model. Each sequence streams its text back over its own
//! channel; a sequence whose receiver is gone (the client disconnected) is dropped at the next
//! step, which frees its slot and its KV cache. Each sequence samples with its own seeded RNG, so
//! a seed gives the same output whatever else is in the batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chatforge_core::cpu::Cpu;
use chatforge_core::model::{KvCache, Llama};
use chatforge_core::sample::{sample, SamplingParams};
use chatforge_data::tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::constrained::{JsonConstraint, TokenTable};
use crate::metrics::Metrics;

/// One sequence to generate.
pub struct Job {
    /// Index of the model (stage) in the engine's list.
    pub model: usize,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub params: SamplingParams,
    pub seed: u64,
    /// Token ids that end the output (not included): `<|im_end|>`, `<|endoftext|>`.
    pub stop_ids: Vec<u32>,
    /// Strings that end the output (not included).
    pub stop: Vec<String>,
    /// Log-probabilities: `Some(k)` gives each token's and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    pub constraint: Option<JsonConstraint>,
    /// Which choice of its request this is (events are sent as `(index, event)`).
    pub index: usize,
    pub tx: mpsc::UnboundedSender<(usize, Event)>,
}

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
    /// The end: `stop` (a stop token or string, or a complete constrained output) or `length`.
    Done { finish_reason: &'static str, prompt_tokens: usize, completion_tokens: usize },
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
            .spawn(move || Runner { models, tok, table, cfg, metrics, seqs: Vec::new() }.run(rx))
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
    TokenTable {
        bytes: (0..n as u32).map(|i| tok.token_bytes(i).unwrap_or_default()).collect(),
        special: (0..n as u32).map(|i| tok.is_special(i)).collect(),
    }
}

struct Seq {
    job: Job,
    cache: KvCache<Cpu>,
    rng: ChaCha8Rng,
    out: Vec<u32>,
    /// The sampled token not yet accepted, and its log-probabilities.
    next: u32,
    next_lp: Option<TokenLogprob>,
    /// Bytes of the decoded text already sent.
    sent: usize,
    pending_lp: Vec<TokenLogprob>,
}

struct Runner {
    models: Vec<Llama<Cpu>>,
    tok: Arc<Tokenizer>,
    table: Arc<TokenTable>,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    seqs: Vec<Seq>,
}

impl Runner {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            if self.seqs.is_empty() {
                match rx.blocking_recv() {
                    Some(job) => self.admit(job),
                    None => return,
                }
            }
            while self.seqs.len() < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => break,
                }
            }
            self.metrics.queued.store(rx.len() as u64, Ordering::Relaxed);
            self.accept();
            self.metrics.running.store(self.seqs.len() as u64, Ordering::Relaxed);
            self.step();
            self.metrics.running.store(self.seqs.len() as u64, Ordering::Relaxed);
        }
    }

    /// Prefills a new sequence and samples its first token.
    fn admit(&mut self, job: Job) {
        if job.tx.is_closed() {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let model = &self.models[job.model];
        let ctx = model.cfg.max_position_embeddings;
        if job.prompt.is_empty() || job.prompt.len() >= ctx || job.max_tokens == 0 {
            // The API checks this; an empty budget ends at once.
            let _ =
                job.tx.send((job.index, Event::Done { finish_reason: "length", prompt_tokens: job.prompt.len(), completion_tokens: 0 }));
            return;
        }
        let t0 = std::time::Instant::now();
        let mut cache = model.new_cache((job.prompt.len() + job.max_tokens).min(ctx));
        let logits = model.decode(&mut cache, &job.prompt);
        self.metrics.prompt_tokens.fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
        self.metrics.prefill_seconds.add(t0.elapsed().as_secs_f64());
        let rng = ChaCha8Rng::seed_from_u64(job.seed);
        let mut seq = Seq { job, cache, rng, out: vec![], next: 0, next_lp: None, sent: 0, pending_lp: vec![] };
        self.pick(&mut seq, logits);
        self.seqs.push(seq);
    }

    /// Masks (constrained decoding), samples and records log-probabilities.
    fn pick(&self, seq: &mut Seq, mut logits: Vec<f32>) {
        if let Some(c) = &seq.job.constraint {
            c.mask(&mut logits, &self.table, seq.job.max_tokens - seq.out.len(), self.tok.im_end_id());
        }
        seq.next = sample(&logits, &seq.job.params, &mut seq.rng);
        seq.next_lp = seq.job.logprobs.map(|k| self.logprob(&logits, seq.next, k));
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

    /// Accepts each sequence's sampled token: streams text, ends sequences that stop, ran out of
    /// budget or lost their client.
    fn accept(&mut self) {
        let tok = self.tok.clone();
        let metrics = self.metrics.clone();
        self.seqs.retain_mut(|s| {
            if s.job.tx.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            let t = s.next;
            let done = |s: &Seq, reason: &'static str| {
                let _ = s.job.tx.send((
                    s.job.index,
                    Event::Done { finish_reason: reason, prompt_tokens: s.job.prompt.len(), completion_tokens: s.out.len() },
                ));
            };
            if s.job.stop_ids.contains(&t) {
                flush(s, &tok, None);
                done(s, "stop");
                return false;
            }
            s.out.push(t);
            metrics.completion_tokens.fetch_add(1, Ordering::Relaxed);
            if let Some(lp) = s.next_lp.take() {
                s.pending_lp.push(lp);
            }
            if let Some(c) = &mut s.job.constraint {
                c.advance(&tok_bytes(&tok, t));
            }
            let text = tok.decode(&s.out, true);
            // The earliest stop string in the text ends the output before it.
            if let Some(cut) = s.job.stop.iter().filter_map(|st| text.find(st.as_str())).min() {
                flush(s, &tok, Some(cut));
                done(s, "stop");
                return false;
            }
            // A closed JSON value: nothing may follow (an open top-level number may still grow,
            // or end with <|im_end|>, which the mask allows once the value is complete).
            let complete = s.job.constraint.as_ref().is_some_and(|c| c.state.finished());
            if complete {
                flush(s, &tok, None);
                done(s, "stop");
                return false;
            }
            if s.out.len() >= s.job.max_tokens || s.cache.len >= s.cache.capacity {
                flush(s, &tok, None);
                done(s, "length");
                return false;
            }
            // Hold back an incomplete UTF-8 character and a tail that may begin a stop string.
            let base = text.trim_end_matches('\u{FFFD}').len();
            let hold = s
                .job
                .stop
                .iter()
                .filter_map(|st| (1..st.len()).rev().find(|&k| st.is_char_boundary(k) && text[..base].ends_with(&st[..k])))
                .max();
            let end = base - hold.unwrap_or(0);
            if end > s.sent || !s.pending_lp.is_empty() {
                let delta = if end > s.sent { text[s.sent..end].to_string() } else { String::new() };
                s.sent = s.sent.max(end);
                let lps = std::mem::take(&mut s.pending_lp);
                if s.job.tx.send((s.job.index, Event::Delta { text: delta, logprobs: lps })).is_err() {
                    metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            true
        });
    }

    /// One decoding step of every live sequence, batched per model.
    fn step(&mut self) {
        if self.seqs.is_empty() {
            return;
        }
        let t0 = std::time::Instant::now();
        let mut logits: Vec<Option<Vec<f32>>> = vec![None; self.seqs.len()];
        for m in 0..self.models.len() {
            let idx: Vec<usize> = (0..self.seqs.len()).filter(|&i| self.seqs[i].job.model == m).collect();
            if idx.is_empty() {
                continue;
            }
            let tokens: Vec<u32> = idx.iter().map(|&i| self.seqs[i].next).collect();
            let mut caches: Vec<&mut KvCache<Cpu>> = self.seqs.iter_mut().filter(|s| s.job.model == m).map(|s| &mut s.cache).collect();
            let out = self.models[m].decode_batch(&mut caches, &tokens);
            for (i, l) in idx.into_iter().zip(out) {
                logits[i] = Some(l);
            }
        }
        let mut seqs = std::mem::take(&mut self.seqs);
        for (s, l) in seqs.iter_mut().zip(logits) {
            self.pick(s, l.expect("every sequence belongs to a model"));
        }
        self.seqs = seqs;
        self.metrics.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.metrics.decode_seconds.add(t0.elapsed().as_secs_f64());
    }
}

fn tok_bytes(tok: &Tokenizer, id: u32) -> Vec<u8> {
    tok.token_bytes(id).unwrap_or_default()
}

/// Sends the rest of a finished sequence's text (up to byte `cut` of it, if given).
fn flush(s: &mut Seq, tok: &Tokenizer, cut: Option<usize>) {
    let text = tok.decode(&s.out, true);
    let end = cut.unwrap_or(text.len()).max(s.sent);
    let delta = text.get(s.sent..end).unwrap_or("").to_string();
    s.sent = end;
    let lps = std::mem::take(&mut s.pending_lp);
    if !delta.is_empty() || !lps.is_empty() {
        let _ = s.job.tx.send((s.job.index, Event::Delta { text: delta, logprobs: lps }));
    }
}
