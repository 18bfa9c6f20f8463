//! chatforge-serve: the server. An OpenAI-compatible API over the engine's continuous batching
//! (`api/`, `engine.rs`), constrained JSON decoding (`constrained/`), moderation with an operator
//! policy (`moderation.rs`), API-key auth and Prometheus metrics (`metrics.rs`). The web chat
//! and its feedback into `feedback.sqlite` (`web.rs`); the rater page of `chatforge label` (`label.rs`).
//!
//! [`app`] builds the axum `Router` from an [`AppState`]; other parts (the web pages) add their
//! routes to it. [`run`] loads a run, binds and serves until SIGINT/SIGTERM.

pub mod api;
pub mod constrained;
pub mod engine;
mod error;
pub mod label;
pub mod loadtest;
pub mod metrics;
pub mod moderation;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_rundir::layout::CONFIG;
use chatforge_rundir::RunDir;

pub use error::{ApiError, Error, Result};

use engine::{Engine, EngineConfig};
use metrics::Metrics;
use moderation::{ModerationPolicy, Moderator};

/// The stages of a run that generate text, in the order `/v1/models` lists them.
pub const GENERATIVE_STAGES: &[&str] = &["sft", "ppo", "dpo", "base"];

/// Per-request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request bodies over this many bytes get 413.
    pub max_body_bytes: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Largest `max_tokens` (and the default, when the context allows).
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 1 << 20, max_n: 8, max_tokens: 1024 }
    }
}

/// How to serve a run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub run: RunDir,
    /// The default model (stage) when a request names none.
    pub stage: String,
    pub api_key: Option<String>,
    pub policy: Option<PathBuf>,
    pub limits: Limits,
    pub engine: EngineConfig,
}

impl ServeConfig {
    pub fn new(run: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            run: RunDir::new(run),
            stage: "sft".into(),
            api_key: None,
            policy: None,
            limits: Limits::default(),
            engine: EngineConfig::default(),
        }
    }
}

/// A model the server offers.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The stage name (`sft`, `base`, ...), which is the model id of the API.
    pub id: String,
    pub context: usize,
    /// Unix time of the checkpoint.
    pub created: u64,
}

/// What every handler shares.
pub struct AppState {
    pub run: RunDir,
    pub tok: Arc<Tokenizer>,
    pub models: Vec<ModelInfo>,
    /// Index into `models` of the default model.
    pub default_model: usize,
    pub engine: Engine,
    pub limits: Limits,
    pub api_key: Option<String>,
    pub moderator: Moderator,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Loads the run's tokenizer, every generative stage it has, the moderation classifier
    /// (`R/moderation.json`) and the policy, and starts the engine.
    pub fn load(cfg: &ServeConfig) -> Result<AppState> {
        let tok = Arc::new(Tokenizer::load(&cfg.run.tokenizer())?);
        let mut infos = Vec::new();
        let mut models = Vec::new();
        for stage in GENERATIVE_STAGES {
            let dir = cfg.run.stage(stage);
            if !dir.join(CONFIG).exists() {
                continue;
            }
            let model = load_model(Cpu, &dir)?;
            if model.cfg.vocab_size < tok.vocab_size() {
                return Err(Error::Config(format!(
                    "{}: vocabulary {} < the tokenizer's {}",
                    dir.display(),
                    model.cfg.vocab_size,
                    tok.vocab_size()
                )));
            }
            let created = std::fs::metadata(cfg.run.model(stage))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            infos.push(ModelInfo { id: stage.to_string(), context: model.cfg.max_position_embeddings, created });
            models.push(model);
        }
        let default_model = infos.iter().position(|m| m.id == cfg.stage).ok_or_else(|| {
            let have: Vec<&str> = infos.iter().map(|m| m.id.as_str()).collect();
            Error::Config(format!(
                "{} has no {} model (it has: {})",
                cfg.run.root().display(),
                cfg.stage,
                if have.is_empty() { "none".into() } else { have.join(", ") }
            ))
        })?;
        let policy = match &cfg.policy {
            Some(p) => ModerationPolicy::load(p)?,
            None => ModerationPolicy::default(),
        };
        let classifier = moderation_classifier(&cfg.run)?;
        let metrics = Arc::new(Metrics::default());
        let engine = Engine::start(models, tok.clone(), cfg.engine.clone(), metrics.clone());
        Ok(AppState {
            run: cfg.run.clone(),
            tok,
            models: infos,
            default_model,
            engine,
            limits: cfg.limits.clone(),
            api_key: cfg.api_key.clone(),
            moderator: Moderator { classifier, policy },
            metrics,
        })
    }
}

/// The run's moderation classifier, `R/moderation.json`. It is made by its own stage
/// (`chatforge moderation train`, or the speedrun), never as a side effect of serving.
pub fn moderation_classifier(run: &RunDir) -> Result<moderation::Classifier> {
    let path = run.moderation();
    if !path.exists() {
        return Err(Error::Config(format!(
            "{} has no moderation classifier ({}): make one with `chatforge moderation train --run {}`",
            run.root().display(),
            path.display(),
            run.root().display()
        )));
    }
    moderation::Classifier::load(&path)
}

/// The whole application: the API (behind the key, when one is set) and `/health`.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = api::routes().route_layer(axum::middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/health", axum::routing::get(api::health))
        .merge(protected)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// Middleware: 401 unless the request carries `Authorization: Bearer <key>` (when a key is set).
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let ok = given.is_some_and(|g| g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
        if !ok {
            let msg =
                if given.is_none() { "No API key provided: send Authorization: Bearer <key>." } else { "Incorrect API key provided." };
            return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", msg).code("invalid_api_key").into_response();
        }
    }
    next.run(req).await
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let res = next.run(req).await;
    state.metrics.count_request(&route, res.status().as_u16());
    res
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.map_err(|e| Error::Server(e.to_string()))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Loads `cfg.run`, binds `addr` and serves until SIGINT/SIGTERM. Prints
/// `listening on http://ADDR` (the bound address: port 0 picks a free one) once ready.
pub fn run(cfg: &ServeConfig, addr: SocketAddr, extra: impl FnOnce(Router, Arc<AppState>) -> Router) -> Result<()> {
    let state = Arc::new(AppState::load(cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::Server(e.to_string()))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::Server(format!("binding {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| Error::Server(e.to_string()))?;
        let models: Vec<&str> = state.models.iter().map(|m| m.id.as_str()).collect();
        println!("serving {} (models: {}; default {})", cfg.run.root().display(), models.join(", "), state.models[state.default_model].id);
        println!("listening on http://{local}");
        let router = extra(app(state.clone()), state);
        serve(listener, router, shutdown_signal()).await?;
        println!("shut down");
        Ok(())
    })
}
