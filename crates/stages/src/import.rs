//! Import: an open model from the Hugging Face ecosystem becomes a stage of a run, with its own
//! tokenizer, special tokens and chat template; every later stage (chat, sft, rm, dpo, ppo,
//! eval, serve, export) then works on it as on a model trained here.
//!
//! In order:
//! 1. the source: a local model folder, or a model id looked up in the HF cache
//!    (`$HF_HOME/hub/models--org--name/snapshots/<rev>/`, the layout `hf-hub` and
//!    `huggingface_hub` write), and fetched into it with `hf-hub` when it is not there;
//! 2. `config.json`, checked by `LlamaConfig::validate` (a family or feature we do not run is an
//!    error naming it), with the context capped (`Config::context`, and a sliding window, below
//!    which windowed and full attention agree);
//! 3. memory: the f32 weights must fit in what the machine has free, or the import is refused
//!    with both figures;
//! 4. the weights (bf16, f16 or f32; one file or shards), loaded and checked tensor by tensor;
//! 5. the tokenizer: `tokenizer.json`, and `R/tokenizer_config.json` with the model's
//!    `chat_template` (from `tokenizer_config.json` or `chat_template.jinja`), BOS, EOS and the
//!    stop tokens of `generation_config.json`; the template is tried on a sample conversation;
//! 6. the checkpoint, written as `R/<stage>/` (f32 safetensors and `config.json`), and
//!    `stages.import` in the report.
//!
//! Why f32 on disk: our engine trains and runs in f32; converting once at import keeps every
//! later stage's loading the same as for our own checkpoints.

use std::path::{Path, PathBuf};

use chatforge_core::checkpoint::{load_model, save_model};
use chatforge_core::cpu::Cpu;
use chatforge_core::LlamaConfig;
use chatforge_data::chat::{Conversation, Message};
use chatforge_data::tokenizer::{Tokenizer, TOKENIZER_CONFIG};
use chatforge_rundir::fs::write_atomic;
use chatforge_rundir::layout::{CONFIG, GENERATION_CONFIG};
use chatforge_rundir::Key;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// A model folder, or a model id (`org/name`) in the HF cache.
    pub source: String,
    /// The stage it becomes: `sft` (an instruct model, ready to chat) or `base`.
    pub stage: String,
    /// The longest sequence the run uses (training rows, prompts + answers): the model's own
    /// context, capped here so a 32k-context model does not train on 32k-token rows.
    pub context: usize,
    /// Replace a tokenizer the run already has.
    pub force: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { source: String::new(), stage: "sft".into(), context: 1024, force: false }
    }
}

/// `stages.import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub source: String,
    pub model_type: String,
    pub params: usize,
    pub context: usize,
    /// The model's own context before the cap.
    pub model_context: usize,
    pub dtype: String,
    pub shards: usize,
    pub vocab_size: usize,
    pub stop_tokens: Vec<String>,
}

/// The folder a source names: a folder as given, or the newest snapshot of a model id in the
/// HF cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn resolve(source: &str) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let cache =
        std::env::var_os("HF_HUB_CACHE").map(PathBuf::from).or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")));
    let cache = cache.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")));
    let Some(cache) = cache.filter(|_| source.split('/').count() == 2) else {
        return Err(Error::Input(format!("{source}: no such folder (give a model folder or an org/name model id)")));
    };
    let repo = cache.join(format!("models--{}", source.replace('/', "--")));
    // refs/main names the snapshot the cache's default branch points at.
    let snapshot = std::fs::read_to_string(repo.join("refs/main")).ok().map(|r| repo.join("snapshots").join(r.trim()));
    match snapshot.filter(|s| s.is_dir() && s.join(CONFIG).exists()) {
        Some(s) => Ok(s),
        None if std::env::var_os("HF_HUB_OFFLINE").is_some() => Err(Error::Input(format!(
            "{source}: not a folder, and not in the HF cache at {} (HF_HUB_OFFLINE is set, so it was not fetched)",
            repo.display()
        ))),
        None => download(source).map_err(|e| {
            Error::Input(format!("{source}: not a folder, not in the HF cache at {}, and fetching it failed: {e}", repo.display()))
        }),
    }
}

/// Fetches a model's files from the Hub into the standard cache with `hf-hub` (it honours
/// `HF_HOME`, `HF_ENDPOINT` and the token of `huggingface-cli login`); returns the snapshot.
fn download(source: &str) -> std::result::Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(|e| e.to_string())?;
    let repo = api.model(source.to_string());
    let get = |f: &str| repo.get(f).map_err(|e| format!("{f}: {e}"));
    let config = get(CONFIG)?;
    get("tokenizer.json")?;
    // Optional files: not every model has them.
    for f in [TOKENIZER_CONFIG, GENERATION_CONFIG, "chat_template.jinja"] {
        let _ = repo.get(f);
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| e.to_string())?;
            let json: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let mut shards: Vec<String> =
                json["weight_map"].as_object().into_iter().flat_map(|m| m.values().filter_map(|v| v.as_str().map(String::from))).collect();
            shards.sort();
            shards.dedup();
            for shard in shards {
                get(&shard)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    config.parent().map(Path::to_path_buf).ok_or_else(|| "the cache returned no folder".into())
}

/// Free memory in bytes (`MemAvailable` of /proc/meminfo), if the system says.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// `R/tokenizer_config.json` for an imported model: its template, BOS/EOS and stop tokens.
fn tokenizer_config(dir: &Path, hf: &tokenizers::Tokenizer, eos_ids: &[u32]) -> Result<Value> {
    let cfg = read_json(&dir.join(TOKENIZER_CONFIG))?.unwrap_or_else(|| json!({}));
    let template = match cfg.get("chat_template") {
        Some(t) => t.clone(),
        None => {
            let file = dir.join("chat_template.jinja");
            let text = std::fs::read_to_string(&file).map_err(|_| {
                Error::Input(format!("{}: no chat_template in {TOKENIZER_CONFIG} and no chat_template.jinja (a base model without a chat format: give it one in {TOKENIZER_CONFIG})", dir.display()))
            })?;
            Value::String(text)
        }
    };
    let token = |key: &str| cfg.get(key).and_then(|v| v.as_str().map(String::from).or_else(|| v["content"].as_str().map(String::from)));
    let mut stops: Vec<String> = eos_ids.iter().filter_map(|&id| hf.id_to_token(id)).collect();
    let eos =
        token("eos_token").or_else(|| stops.first().cloned()).ok_or_else(|| Error::Input(format!("{}: no eos_token", dir.display())))?;
    if !stops.contains(&eos) {
        stops.push(eos.clone());
    }
    Ok(json!({
        "chat_template": template,
        "bos_token": token("bos_token"),
        "eos_token": eos,
        "chatforge_stop_tokens": stops,
        "model_max_length": cfg.get("model_max_length"),
    }))
}

pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    if !matches!(cfg.stage.as_str(), "base" | "sft") {
        return Err(Error::Input(format!("--as {}: an imported model becomes the base or the sft stage", cfg.stage)));
    }
    let dir = resolve(&cfg.source)?;
    // 2. The config, capped.
    // (Validated after the cap: a sliding window shorter than the context is fine once the
    // context is capped at it.)
    let mut mc = LlamaConfig::parse_json_file(&dir.join(CONFIG))?;
    let model_context = mc.max_position_embeddings;
    if let Some(rp) = mc.rope_parameters.as_mut().or(mc.rope_scaling.as_mut()) {
        // llama3 scaling falls back to max_position_embeddings for its original context.
        if rp.rope_type == "llama3" && rp.original_max_position_embeddings.is_none() {
            rp.original_max_position_embeddings = Some(model_context);
        }
    }
    let window = mc.active_sliding_window().unwrap_or(usize::MAX);
    mc.max_position_embeddings = model_context.min(cfg.context).min(window);
    mc.validate()?;
    // 3. Memory: f32 weights (training needs ~4x that: gradients and two Adam moments).
    let bytes = mc.num_params() as u64 * 4;
    if let Some(free) = available_memory() {
        if bytes > free {
            return Err(Error::Input(format!(
                "{}: {:.2}M parameters need {:.1} GB as f32, but only {:.1} GB is free",
                cfg.source,
                mc.num_params() as f64 / 1e6,
                bytes as f64 / 1e9,
                free as f64 / 1e9
            )));
        }
    }
    // 4. The weights, through a staging folder holding the capped config.
    let staging = tempfile_dir(run)?;
    write_atomic(&staging.join(CONFIG), serde_json::to_string_pretty(&mc).map_err(|e| Error::Input(e.to_string()))?.as_bytes())?;
    for f in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") || name == "model.safetensors.index.json" {
            link_or_copy(&f.path(), &staging.join(&name))?;
        }
    }
    // Errors name the source's files, not the staging folder's links to them.
    let named = |e: chatforge_core::Error| Error::Input(e.to_string().replace(&staging.display().to_string(), &dir.display().to_string()));
    let loaded = chatforge_core::checkpoint::weight_files(&staging).and_then(|files| {
        let dtype = files.first().and_then(|f| f.dtype_of(&f.names().into_iter().next().unwrap_or_default())).unwrap_or_default();
        Ok((files.len(), dtype, load_model(Cpu, &staging)?))
    });
    let _ = std::fs::remove_dir_all(&staging);
    let (shards, dtype, model) = loaded.map_err(named)?;
    // 5. The tokenizer and its template.
    let tok_path = dir.join("tokenizer.json");
    let tok_json = std::fs::read_to_string(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
    let hf = tokenizers::Tokenizer::from_bytes(tok_json.as_bytes()).map_err(|e| Error::Input(format!("{}: {e}", tok_path.display())))?;
    let gen = read_json(&dir.join(GENERATION_CONFIG))?;
    let eos_ids: Vec<u32> = match gen.as_ref().map(|g| &g["eos_token_id"]) {
        Some(Value::Number(n)) => n.as_u64().into_iter().map(|i| i as u32).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|i| i as u32).collect(),
        _ => mc.eos_token_id.as_ref().map(|e| e.ids()).unwrap_or_default(),
    };
    let tcfg = tokenizer_config(&dir, &hf, &eos_ids)?;
    let tok = Tokenizer::imported(hf, &tcfg).map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
    if tok.vocab_size() > mc.vocab_size {
        return Err(Error::Input(format!("the tokenizer has {} tokens but the model only {}", tok.vocab_size(), mc.vocab_size)));
    }
    let sample = Conversation::new(vec![Message::system("Be brief."), Message::user("Hi!"), Message::assistant("Hello.")]);
    tok.template().expect("imported").encode_for_training(&tok, &sample).map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
    let root = run.dir.root();
    if run.dir.tokenizer().exists() && !cfg.force {
        let ours = std::fs::read_to_string(run.dir.tokenizer()).unwrap_or_default();
        if ours != tok_json {
            return Err(Error::Input(format!(
                "{} already has another tokenizer (a model of its own?); import into a new run folder, or pass --force",
                root.display()
            )));
        }
    }
    // 6. Write it all.
    run.create()?;
    write_atomic(&run.dir.tokenizer(), tok_json.as_bytes())?;
    write_atomic(&root.join(TOKENIZER_CONFIG), serde_json::to_string_pretty(&tcfg).expect("json").as_bytes())?;
    let out = run.dir.stage(&cfg.stage);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    save_model(&model, &out)?;
    let gen_out = json!({"eos_token_id": tok.chat_stop_ids(), "bos_token_id": mc.bos_token_id});
    write_atomic(&out.join(GENERATION_CONFIG), serde_json::to_string_pretty(&gen_out).expect("json").as_bytes())?;
    let figures = Figures {
        source: cfg.source.clone(),
        model_type: mc.model_type.clone(),
        params: mc.num_params(),
        context: mc.max_position_embeddings,
        model_context,
        dtype,
        shards,
        vocab_size: mc.vocab_size,
        stop_tokens: tcfg["chatforge_stop_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default(),
    };
    run.record(Key::Stage("import"), &figures)?;
    Ok(figures)
}

/// A fresh folder inside the run for staging the import (removed afterwards).
fn tempfile_dir(run: &Run) -> Result<PathBuf> {
    let d = run.dir.root().join(".import");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    Ok(d)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let from = from.canonicalize().map_err(|e| Error::io(from, e))?;
    std::os::unix::fs::symlink(&from, to).or_else(|_| std::fs::copy(&from, to).map(|_| ())).map_err(|e| Error::io(to, e))
}
