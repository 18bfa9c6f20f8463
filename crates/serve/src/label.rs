//! The rater page (`chatforge label`): people compare two sampled answers or rank several.
//!
//! A background thread keeps a few items ready per K (the number of answers): it draws a prompt,
//! samples K answers from the checkpoint (one batched decode, seed per answer), stores the prompt
//! and the samples in `feedback.sqlite`, and queues the item. Each item is handed to one rater.
//!
//! - `GET /label`: the page. `GET /` redirects to it.
//! - `GET /label/api/next?k=K`: the next item, `{prompt_id, messages, model, samples: [{id, text}]}`
//!   (K = 2..=9; waits while one is sampled).
//! - `POST /label/api/compare {prompt_id, sample_a, sample_b, choice, rater, reason}`: a vote
//!   (`choice` is `a`, `b`, `tie` or `both_bad`) into `comparisons`.
//! - `POST /label/api/rank {prompt_id, ranked: [sample ids, best first], rater}` into `rankings`.
//! - `GET /label/api/progress`: how many votes the store holds.
//!
//! A vote is answered 201 only after its row is committed, so a vote acknowledged before a crash
//! is never lost. Votes name their samples by id, so a page left open across a restart of the
//! server can still vote.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::sample::{generate_batch, GenOptions, SamplingParams};
use chatforge_data::chat::{encode_prompt, Conversation, Message};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::{Choice, NewComparison, NewRanking, NewSample};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::web::{self, bad_request, internal, note, parse_body, rater_name, store_error, with_store, SharedStore};
use crate::{ApiError, Error, Result};

/// The most answers one item shows (rankings of K = 2..=9, as InstructGPT's labelers ranked).
pub const MAX_K: usize = 9;

/// Failures in a row after which the sampler's error is shown to raters.
const MAX_FAILURES: usize = 20;

/// Draws K answers to a prompt.
pub trait Sampler: Send + Sync + 'static {
    /// The model's name as the store records it, e.g. `speedrun/sft`.
    fn model(&self) -> &str;
    /// The sampling settings, stored with each sample.
    fn params(&self) -> serde_json::Value;
    /// One answer per seed, answer i drawn with `seeds[i]`.
    fn sample(&self, prompt: &Conversation, seeds: &[u64]) -> Result<Vec<String>>;
}

/// A [`Sampler`] over a checkpoint on the CPU: the K answers are decoded as one batch.
pub struct ModelSampler {
    name: String,
    model: Llama<Cpu>,
    tok: Tokenizer,
    opts: GenOptions,
}

impl ModelSampler {
    pub fn new(name: String, model: Llama<Cpu>, tok: Tokenizer, temperature: f32, top_p: f32, max_tokens: usize) -> ModelSampler {
        let opts =
            GenOptions { max_new: max_tokens, params: SamplingParams { temperature, top_k: 0, top_p }, stop_ids: tok.chat_stop_ids() };
        ModelSampler { name, model, tok, opts }
    }
}

impl Sampler for ModelSampler {
    fn model(&self) -> &str {
        &self.name
    }

    fn params(&self) -> serde_json::Value {
        let p = &self.opts.params;
        json!({"temperature": p.temperature, "top_p": p.top_p, "max_tokens": self.opts.max_new})
    }

    fn sample(&self, prompt: &Conversation, seeds: &[u64]) -> Result<Vec<String>> {
        let ids = encode_prompt(&self.tok, prompt);
        let context = self.model.cfg.max_position_embeddings;
        if ids.len() + 1 >= context {
            return Err(Error::PromptTooLong { tokens: ids.len(), context });
        }
        let prompts = vec![ids; seeds.len()];
        let out = generate_batch(&self.model, &prompts, &self.opts, seeds, |_, _| true);
        Ok(out.iter().map(|ids| self.tok.decode(ids, true).trim().to_string()).collect())
    }
}

/// An item to rate: a prompt and K answers, all already in the store.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub prompt_id: i64,
    pub messages: Vec<Message>,
    pub model: String,
    pub samples: Vec<ItemSample>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ItemSample {
    pub id: i64,
    pub text: String,
}

/// Settings of the rater server.
#[derive(Clone, Debug)]
pub struct RaterConfig {
    /// Items kept ready for each K in use.
    pub ahead: usize,
    /// Seeds the prompt order and the samples' seeds.
    pub seed: u64,
    /// Where the prompts come from (`suite:train`, `file:prompts.jsonl`), stored with each prompt.
    pub source: String,
    /// How long `next` waits for an item before answering 503.
    pub wait: Duration,
}

impl Default for RaterConfig {
    fn default() -> RaterConfig {
        RaterConfig { ahead: 2, seed: 0, source: "suite:train".into(), wait: Duration::from_secs(300) }
    }
}

#[derive(Default)]
struct Queues {
    /// Ready items per K; a K is present once someone asked for it.
    ready: BTreeMap<usize, VecDeque<Item>>,
    /// The last sampling or storing error, shown to raters waiting for an item.
    error: Option<String>,
    stop: bool,
}

/// The rater server's state.
pub struct Labeler {
    store: SharedStore,
    sampler: Arc<dyn Sampler>,
    prompts: Vec<Conversation>,
    cfg: RaterConfig,
    queues: Mutex<Queues>,
    changed: Condvar,
}

impl Labeler {
    /// Starts the sampling thread (ready for K = 2 at once). `prompts` end with a user message.
    pub fn start(store: SharedStore, sampler: Arc<dyn Sampler>, prompts: Vec<Conversation>, cfg: RaterConfig) -> Result<Arc<Labeler>> {
        if prompts.is_empty() {
            return Err(Error::NoPrompts);
        }
        for (i, p) in prompts.iter().enumerate() {
            p.validate_for_prompt().map_err(|e| Error::BadPrompt { index: i + 1, message: e })?;
        }
        let mut queues = Queues::default();
        queues.ready.insert(2, VecDeque::new());
        let labeler = Arc::new(Labeler { store, sampler, prompts, cfg, queues: Mutex::new(queues), changed: Condvar::new() });
        let worker = labeler.clone();
        std::thread::Builder::new()
            .name("label-sampler".into())
            .spawn(move || worker.fill())
            .map_err(|e| Error::Server(format!("starting the sampling thread: {e}")))?;
        Ok(labeler)
    }

    /// Stops the sampling thread (after the item it is sampling) and answers raters waiting for
    /// an item with an error, so that a graceful shutdown does not wait for them.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sampling loop: keeps `ahead` items ready for every K in use.
    fn fill(&self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
        let mut failures = 0;
        loop {
            let k = {
                let mut q = self.lock();
                loop {
                    if q.stop {
                        return;
                    }
                    // The K with the fewest items ready goes first.
                    let short = q.ready.iter().filter(|(_, v)| v.len() < self.cfg.ahead).min_by_key(|(_, v)| v.len()).map(|(&k, _)| k);
                    if let Some(k) = short {
                        break k;
                    }
                    q = self.changed.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            // On a pool worker, so that sampling's kernels split work with this thread.
            let result = chatforge_core::pool::on_pool(|| self.make_item(k, &mut rng));
            let mut q = self.lock();
            match result {
                Ok(item) => {
                    failures = 0;
                    q.error = None;
                    q.ready.entry(k).or_default().push_back(item);
                }
                Err(e) => {
                    // One bad prompt (say, too long for the context) is skipped; repeated failures
                    // are shown to the raters waiting for an item.
                    tracing::warn!("rater page: could not prepare an item: {e}");
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        q.error = Some(e.to_string());
                    }
                }
            }
            drop(q);
            self.changed.notify_all();
            if failures >= MAX_FAILURES {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Samples K answers to a random prompt and stores the prompt and the samples.
    fn make_item(&self, k: usize, rng: &mut ChaCha8Rng) -> Result<Item> {
        let prompt = self.prompts[rng.random_range(0..self.prompts.len())].clone();
        // Identical answers teach a reward model nothing: resample them (a few tries).
        let mut texts = Vec::new();
        let mut seeds = Vec::new();
        for _ in 0..3 {
            seeds = (0..k).map(|_| rng.next_u64() >> 1).collect();
            texts = self.sampler.sample(&prompt, &seeds)?;
            let mut distinct = texts.clone();
            distinct.sort();
            distinct.dedup();
            if distinct.len() == texts.len() {
                break;
            }
        }
        let model = self.sampler.model().to_string();
        let params = self.sampler.params();
        let source = self.cfg.source.clone();
        let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let prompt_id = s.add_prompt(&prompt, &source)?;
        let new: Vec<NewSample> = texts
            .iter()
            .zip(&seeds)
            .map(|(text, &seed)| NewSample { prompt_id, model: model.clone(), text: text.clone(), params: params.clone(), seed })
            .collect();
        let ids = s.add_samples(&new)?;
        let samples = ids.into_iter().zip(texts).map(|(id, text)| ItemSample { id, text }).collect();
        Ok(Item { prompt_id, messages: prompt.messages, model, samples })
    }

    /// Takes the next item with `k` answers, waiting up to the configured time for one.
    pub fn next_item(&self, k: usize) -> std::result::Result<Item, String> {
        let deadline = Instant::now() + self.cfg.wait;
        let mut q = self.lock();
        if let std::collections::btree_map::Entry::Vacant(e) = q.ready.entry(k) {
            e.insert(VecDeque::new());
            self.changed.notify_all();
        }
        loop {
            if q.stop {
                return Err("the rater server is shutting down".into());
            }
            if let Some(item) = q.ready.get_mut(&k).and_then(|v| v.pop_front()) {
                drop(q);
                self.changed.notify_all(); // the sampler refills
                return Ok(item);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(q.error.clone().unwrap_or_else(|| "no item was ready in time; try again".into()));
            }
            if let Some(e) = &q.error {
                return Err(e.clone());
            }
            q = self.changed.wait_timeout(q, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// The rater page and its API; `GET /` redirects to the page.
pub fn routes(labeler: Arc<Labeler>) -> Router {
    let api = Router::new()
        .route("/label", get(|| async { web::label_page() }))
        .route("/label/api/next", get(next))
        .route("/label/api/compare", post(compare))
        .route("/label/api/rank", post(rank))
        .route("/label/api/progress", get(progress))
        .with_state(labeler);
    let assets = web::assets().route("/", get(|| async { Redirect::to("/label") }));
    api.merge(assets)
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    k: Option<String>,
}

async fn next(State(l): State<Arc<Labeler>>, Query(q): Query<NextQuery>) -> std::result::Result<Response, ApiError> {
    let k = match q.k.as_deref() {
        None => 2,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|k| (2..=MAX_K).contains(k))
            .ok_or_else(|| bad_request(format!("k must be a number of answers from 2 to {MAX_K}, not {s:?}"), Some("k")))?,
    };
    let item = tokio::task::spawn_blocking(move || l.next_item(k))
        .await
        .map_err(|e| internal(format!("sampling task failed: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", e))?;
    Ok(Json(item).into_response())
}

#[derive(Deserialize)]
struct CompareVote {
    prompt_id: i64,
    sample_a: i64,
    sample_b: i64,
    choice: Choice,
    rater: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct RankVote {
    prompt_id: i64,
    ranked: Vec<i64>,
    rater: String,
}

fn votes(s: &chatforge_feedback::Store) -> std::result::Result<i64, ApiError> {
    let c = s.counts().map_err(store_error)?;
    Ok((c.comparisons + c.rankings) as i64)
}

async fn compare(State(l): State<Arc<Labeler>>, body: Bytes) -> std::result::Result<Response, ApiError> {
    let v: CompareVote = parse_body(&body)?;
    if v.sample_a == v.sample_b {
        return Err(bad_request("sample_a and sample_b are the same sample", Some("sample_b")));
    }
    let c = NewComparison {
        prompt_id: v.prompt_id,
        sample_a: v.sample_a,
        sample_b: v.sample_b,
        choice: v.choice,
        rater: rater_name(Some(&v.rater), true)?,
        simulated: false,
        reason: note(v.reason, "reason")?,
    };
    let (id, votes) = with_store(&l.store, move |s| {
        let id = s.add_comparison(&c).map_err(store_error)?;
        Ok((id, votes(s)?))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "votes": votes}))).into_response())
}

async fn rank(State(l): State<Arc<Labeler>>, body: Bytes) -> std::result::Result<Response, ApiError> {
    let v: RankVote = parse_body(&body)?;
    if !(2..=MAX_K).contains(&v.ranked.len()) {
        return Err(bad_request(format!("ranked must list 2 to {MAX_K} samples, not {}", v.ranked.len()), Some("ranked")));
    }
    let mut distinct = v.ranked.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != v.ranked.len() {
        return Err(bad_request("ranked lists a sample twice", Some("ranked")));
    }
    let r = NewRanking { prompt_id: v.prompt_id, ranked: v.ranked, rater: rater_name(Some(&v.rater), true)?, simulated: false };
    let (id, votes) = with_store(&l.store, move |s| {
        let id = s.add_ranking(&r).map_err(store_error)?;
        Ok((id, votes(s)?))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "votes": votes}))).into_response())
}

async fn progress(State(l): State<Arc<Labeler>>) -> std::result::Result<Response, ApiError> {
    let c = with_store(&l.store, |s| s.counts().map_err(store_error)).await?;
    Ok(Json(json!({"votes": c.comparisons + c.rankings, "comparisons": c.comparisons, "rankings": c.rankings,
                   "prompts": c.prompts, "samples": c.samples}))
    .into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use chatforge_data::chat::Message;

    /// Answers "answer <seed>", except that its first call answers the same text K times.
    struct Fake {
        calls: AtomicUsize,
        fail: Fail,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Fail {
        Never,
        Always,
        /// On the prompt about Hamlet only.
        Hamlet,
    }

    impl Sampler for Fake {
        fn model(&self) -> &str {
            "fake/sft"
        }
        fn params(&self) -> serde_json::Value {
            json!({"temperature": 1.0})
        }
        fn sample(&self, prompt: &Conversation, seeds: &[u64]) -> Result<Vec<String>> {
            let hamlet = prompt.messages.iter().any(|m| m.content.contains("Hamlet"));
            if self.fail == Fail::Always || (self.fail == Fail::Hamlet && hamlet) {
                return Err(Error::PromptTooLong { tokens: 300, context: 256 });
            }
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            Ok(seeds.iter().map(|s| if first { "same".to_string() } else { format!("answer {s}") }).collect())
        }
    }

    fn labeler(fail: Fail) -> (tempfile::TempDir, SharedStore, Arc<Labeler>) {
        let dir = tempfile::tempdir().unwrap();
        let store = web::open_store(&dir.path().join("feedback.sqlite")).unwrap();
        let prompts = vec![
            Conversation::new(vec![Message::system("Answer in one word."), Message::user("Who wrote Hamlet?")]),
            Conversation::new(vec![Message::user("What is 7 times 8?")]),
        ];
        let cfg = RaterConfig { ahead: 2, seed: 3, source: "test".into(), wait: Duration::from_secs(20) };
        let l = Labeler::start(store.clone(), Arc::new(Fake { calls: AtomicUsize::new(0), fail }), prompts, cfg).unwrap();
        (dir, store, l)
    }

    #[test]
    fn items_are_stored_distinct_and_handed_out_once() {
        let (_dir, store, l) = labeler(Fail::Never);
        let mut seen = Vec::new();
        for k in [2, 2, 5, 2] {
            let item = l.next_item(k).unwrap();
            assert_eq!(item.samples.len(), k);
            let mut texts: Vec<&str> = item.samples.iter().map(|s| s.text.as_str()).collect();
            texts.sort();
            texts.dedup();
            assert_eq!(texts.len(), k, "identical answers were resampled");
            let s = store.lock().unwrap();
            assert_eq!(s.prompt(item.prompt_id).unwrap().messages, item.messages);
            for smp in &item.samples {
                let row = s.sample(smp.id).unwrap();
                assert_eq!((row.prompt_id, row.text.as_str(), row.model.as_str()), (item.prompt_id, smp.text.as_str(), "fake/sft"));
                assert_eq!(row.text, format!("answer {}", row.seed));
                assert!(!seen.contains(&smp.id), "sample {} handed out twice", smp.id);
                seen.push(smp.id);
            }
        }
        l.stop();
    }

    #[test]
    fn a_sampling_error_reaches_the_rater() {
        let (_dir, _store, l) = labeler(Fail::Always);
        let t = Instant::now();
        let err = l.next_item(2).unwrap_err();
        assert!(err.contains("context"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
        l.stop();
    }

    #[test]
    fn a_prompt_that_fails_is_skipped() {
        let (_dir, _store, l) = labeler(Fail::Hamlet);
        for _ in 0..4 {
            let item = l.next_item(2).unwrap();
            assert_eq!(item.messages.last().unwrap().content, "What is 7 times 8?");
        }
        l.stop();
    }
}
