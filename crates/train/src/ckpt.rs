//! Training checkpoints: a stage folder `R/<stage>/` holding `model.safetensors`,
//! `config.json`, `generation_config.json`, `trainer.safetensors` (AdamW moments) and `state.json`
//! (step, data cursor, resolved config, sha256 of every file).
//!
//! A LoRA fine-tune's checkpoint holds the merged model (so every later stage reads a plain
//! model) and the adapters in PEFT's format (`adapter/adapter_config.json`, `adapter_model.safetensors`);
//! its moments are the adapters', and it resumes from the frozen base it names plus the adapters.
//!
//! Commit protocol: everything is written into `R/<stage>.tmp/` and fsynced, `state.json` last;
//! then `R/<stage>` becomes `R/<stage>.prev` and the temp folder becomes `R/<stage>`. A kill at any
//! moment leaves either the old checkpoint or the new one complete; the last two are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatforge_core::backend::Backend;
use chatforge_core::checkpoint::{load_model, save_model, tensors_to_bytes, TensorFile};
use chatforge_core::cpu::Cpu;
use chatforge_core::model::lora::{load_adapter, save_adapter, ADAPTER_CONFIG, ADAPTER_MODEL};
use chatforge_core::model::Llama;
use chatforge_rundir::fs::{sha256_file, verify_sha256, write_atomic};
use chatforge_rundir::layout::{ADAPTER, GENERATION_CONFIG, STATE, TRAINER};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::optim::{AdamW, OptimConfig};
use crate::{Error, Result};

/// What `state.json` records besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub stage: String,
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    pub tokens_seen: u64,
    /// Batches are drawn by a ChaCha8 stream seeded from (seed, step, micro-step): the cursor
    /// into the data is the step, and the RNG state is a pure function of it.
    pub data_cursor: usize,
    pub seed: u64,
    pub rng: String,
    /// The stage's resolved configuration (stage-specific JSON).
    pub config: Value,
    /// sha256 of the data files the run reads (shards, tokenizer).
    pub data_sha256: BTreeMap<String, String>,
    /// sha256 of every file of this checkpoint but state.json itself.
    pub files: BTreeMap<String, String>,
    pub elapsed_s: f64,
    /// A LoRA fine-tune's frozen base: a stage of the same run and its weights' sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_base: Option<LoraBase>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraBase {
    pub stage: String,
    pub sha256: String,
}

impl LoraBase {
    /// A stage folder `R/<stage>` as the frozen base of a LoRA fine-tune in the same run.
    pub fn of(stage_dir: &Path) -> Result<LoraBase> {
        let stage = stage_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(LoraBase { stage, sha256: weights_sha256(stage_dir)? })
    }
}

/// sha256 of a model folder's weights: `model.safetensors`, or the shard index of a sharded one.
fn weights_sha256(dir: &Path) -> Result<String> {
    let single = dir.join("model.safetensors");
    let path = if single.exists() { single } else { dir.join("model.safetensors.index.json") };
    Ok(sha256_file(&path)?)
}

impl TrainState {
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone()).map_err(|e| Error::Input(format!("state.json config: {e}")))
    }
}

fn tmp_dir(dir: &Path) -> PathBuf {
    dir.with_file_name(format!("{}.tmp", dir.file_name().unwrap().to_string_lossy()))
}

pub fn prev_dir(dir: &Path) -> PathBuf {
    dir.with_file_name(format!("{}.prev", dir.file_name().unwrap().to_string_lossy()))
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Fault injection for the crash-resume tests: `CHATFORGE_CRASH=PHASE:STEP` aborts the process
/// (no cleanup, like a SIGKILL) at that phase of the checkpoint written at that step.
fn crash_point(phase: &str, step: usize) {
    if let Ok(spec) = std::env::var("CHATFORGE_CRASH") {
        if spec == format!("{phase}:{step}") {
            eprintln!("CHATFORGE_CRASH: aborting at {phase} of step {step}");
            std::process::abort();
        }
    }
}

/// Saves a checkpoint of `model` and `opt` into `dir` (e.g. `R/base`) by the commit protocol.
pub fn save<B: Backend>(dir: &Path, model: &Llama<B>, opt: &AdamW<B>, state: &TrainState) -> Result<()> {
    let tmp = tmp_dir(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    save_model(model, &tmp)?;
    let gen = serde_json::json!({
        "bos_token_id": model.cfg.bos_token_id, "eos_token_id": model.cfg.eos_token_id,
        "do_sample": true, "temperature": 0.8, "top_p": 0.95,
    });
    write_atomic(&tmp.join(GENERATION_CONFIG), serde_json::to_string_pretty(&gen).unwrap().as_bytes())?;
    let mut files: Vec<String> =
        ["model.safetensors", "config.json", "generation_config.json", "trainer.safetensors"].map(String::from).to_vec();
    if model.has_lora() {
        let base = state.lora_base.as_ref().ok_or_else(|| Error::Input("a LoRA checkpoint needs its base stage".into()))?;
        let base_dir = dir.parent().unwrap_or(Path::new(".")).join(&base.stage);
        let base_path = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
        let adapter = tmp.join(ADAPTER);
        std::fs::create_dir_all(&adapter).map_err(|e| Error::io(&adapter, e))?;
        save_adapter(model, &adapter, &base_path.to_string_lossy())?;
        files.extend([ADAPTER_CONFIG, ADAPTER_MODEL].map(|f| format!("{ADAPTER}/{f}")));
    }
    let mut moments = Vec::new();
    for (i, p) in model.trainable().iter().enumerate() {
        moments.push((format!("m.{}", p.name), p.shape.clone(), model.be.download(&opt.m[i])));
        moments.push((format!("v.{}", p.name), p.shape.clone(), model.be.download(&opt.v[i])));
    }
    moments.push(("adam_step".into(), vec![1], vec![opt.step as f32]));
    crash_point("mid_write", state.step);
    write_atomic(&tmp.join(TRAINER), &tensors_to_bytes(&moments)?)?;
    let mut state = state.clone();
    state.files.clear();
    for name in files {
        let sha = sha256_file(&tmp.join(&name))?;
        state.files.insert(name, sha);
    }
    write_atomic(&tmp.join(STATE), serde_json::to_string_pretty(&state).unwrap().as_bytes())?;
    fsync_dir(&tmp);
    let prev = prev_dir(dir);
    if dir.exists() {
        if prev.exists() {
            std::fs::remove_dir_all(&prev).map_err(|e| Error::io(&prev, e))?;
        }
        std::fs::rename(dir, &prev).map_err(|e| Error::io(dir, e))?;
    }
    crash_point("between_renames", state.step);
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(&tmp, e))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent);
    }
    Ok(())
}

/// Finishes or discards an interrupted commit: if `dir` is gone but a complete, verified
/// `dir.tmp` exists (killed between the two renames), it becomes `dir`; any other temp is removed.
pub fn recover(dir: &Path) -> Result<()> {
    let tmp = tmp_dir(dir);
    if !tmp.exists() {
        return Ok(());
    }
    if !dir.join(STATE).exists() && read_state(&tmp).and_then(|s| verify(&tmp, &s)).is_ok() {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(&tmp, e))?;
        return Ok(());
    }
    std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path, msg: format!("corrupt state file: {e}") })
}

fn verify(dir: &Path, state: &TrainState) -> Result<()> {
    for (name, sha) in &state.files {
        verify_sha256(&dir.join(name), sha)?;
    }
    Ok(())
}

/// Loads a checkpoint folder: verifies every file's sha256 (a mismatch names the file), then the
/// model (a LoRA fine-tune: its base, checked unchanged, and the adapters) and the moments.
pub fn load(dir: &Path, optim: OptimConfig) -> Result<(Llama<Cpu>, AdamW<Cpu>, TrainState)> {
    let state = read_state(dir)?;
    verify(dir, &state)?;
    let model = match &state.lora_base {
        None => load_model(Cpu, dir)?,
        Some(base) => {
            let base_dir = dir.parent().unwrap_or(Path::new(".")).join(&base.stage);
            if weights_sha256(&base_dir)? != base.sha256 {
                return Err(Error::Checkpoint {
                    path: base_dir,
                    msg: format!("the LoRA checkpoint {} was trained on other base weights; delete it to start over", dir.display()),
                });
            }
            let mut model = load_model(Cpu, &base_dir)?;
            load_adapter(&mut model, &dir.join(ADAPTER))?;
            model
        }
    };
    let mut opt = AdamW::new(&model, optim);
    let file = TensorFile::open(&dir.join(TRAINER))?;
    for (i, p) in model.trainable().iter().enumerate() {
        opt.m[i] = file.get(&format!("m.{}", p.name))?.1;
        opt.v[i] = file.get(&format!("v.{}", p.name))?.1;
    }
    opt.step = file.get("adam_step")?.1[0] as u64;
    Ok((model, opt, state))
}
