//! Checkpoint I/O: `model.safetensors` + `config.json` in HF's layout, written atomically
//! (through `chatforge_rundir::fs`, as every file of a run folder).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chatforge_rundir::fs::write_atomic;
use chatforge_rundir::layout::{CONFIG, MODEL};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::backend::Backend;
use crate::config::LlamaConfig;
use crate::model::Llama;
use crate::{Error, Result};

/// Serialises named f32 tensors to safetensors bytes.
pub fn tensors_to_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            let v = TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::Format(format!("{n}: {e}")))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format(e.to_string()))
}

/// A loaded safetensors file: tensors by name, converted to f32.
pub struct TensorFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        SafeTensors::deserialize(&bytes).map_err(|e| Error::Format(format!("{}: not a valid safetensors file ({e})", path.display())))?;
        Ok(TensorFile { path: path.to_path_buf(), bytes })
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    pub fn names(&self) -> Vec<String> {
        self.st().names().into_iter().map(String::from).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    /// The stored dtype of a tensor ("BF16", "F32", ...).
    pub fn dtype_of(&self, name: &str) -> Option<String> {
        self.st().tensor(name).ok().map(|t| format!("{:?}", t.dtype()))
    }

    /// The tensor's shape and its data as f32 (F32, BF16 and F16 are accepted).
    pub fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let st = self.st();
        let t = st.tensor(name).map_err(|_| Error::Tensor { name: name.into(), msg: format!("missing from {}", self.path.display()) })?;
        let data = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            other => {
                return Err(Error::Tensor {
                    name: name.into(),
                    msg: format!("dtype {other:?} in {} is not supported", self.path.display()),
                })
            }
        };
        Ok((t.shape().to_vec(), v))
    }

    /// An integer tensor (I64 or I32), e.g. token ids in test fixtures.
    pub fn get_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let st = self.st();
        let t = st.tensor(name).map_err(|_| Error::Tensor { name: name.into(), msg: format!("missing from {}", self.path.display()) })?;
        let d = t.data();
        let v = match t.dtype() {
            Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I32 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            other => return Err(Error::Tensor { name: name.into(), msg: format!("expected an integer dtype, found {other:?}") }),
        };
        Ok((t.shape().to_vec(), v))
    }
}

/// Saves `model.safetensors` and `config.json` into `dir` (HF layout; a tied head is not stored).
/// A layer with a LoRA adapter is saved merged, `W + s·B·A`: the folder is a plain model.
pub fn save_model<B: Backend>(model: &Llama<B>, dir: &Path) -> Result<()> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        model.params().iter().map(|p| (p.name.clone(), p.shape.clone(), model.effective_weight(p))).collect();
    write_atomic(&dir.join(MODEL), &tensors_to_bytes(&tensors)?)?;
    // Keep the two spellings of the rotary base in step (transformers ≥ 5 reads rope_parameters).
    let mut cfg = model.cfg.clone();
    let mut rope = cfg
        .rope_parameters
        .take()
        .or_else(|| cfg.rope_scaling.clone())
        .unwrap_or_else(|| crate::config::RopeParameters::plain(cfg.rope_theta));
    rope.rope_theta = Some(cfg.rope_theta);
    cfg.rope_parameters = Some(rope);
    // Spelled out: Qwen2's modeling code in transformers reads `head_dim` with no fallback.
    cfg.head_dim = Some(cfg.head_dim());
    let cfg = serde_json::to_string_pretty(&cfg).map_err(|e| Error::Format(e.to_string()))?;
    write_atomic(&dir.join(CONFIG), cfg.as_bytes())?;
    Ok(())
}

/// The weight files of a checkpoint folder: `model.safetensors`, or the shards that
/// `model.safetensors.index.json`'s `weight_map` names (HF's layout for large models).
pub fn weight_files(dir: &Path) -> Result<Vec<TensorFile>> {
    let single = dir.join(MODEL);
    if single.exists() {
        return Ok(vec![TensorFile::open(&single)?]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index)
        .map_err(|_| Error::Input(format!("{} has neither {MODEL} nor {}", dir.display(), "model.safetensors.index.json")))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", index.display())))?;
    let map = json["weight_map"].as_object().ok_or_else(|| Error::Format(format!("{}: no weight_map", index.display())))?;
    let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    shards.into_iter().map(|f| TensorFile::open(&dir.join(f))).collect()
}

/// Tensors a checkpoint may hold that are not parameters (old transformers saved rotary tables).
fn is_buffer(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

/// Loads `config.json` and the weights (one file or shards) from `dir`: ours, or an HF
/// checkpoint of a family `LlamaConfig::validate` accepts. Every parameter must be there with
/// its shape, and every tensor of the files must be a parameter: a tensor we would ignore (a
/// feature the config does not declare) is an error, not a silent misload.
pub fn load_model<B: Backend>(be: B, dir: &Path) -> Result<Llama<B>> {
    let cfg = LlamaConfig::from_json_file(&dir.join(CONFIG))?;
    let files = weight_files(dir)?;
    let mut model = Llama::empty(be, cfg);
    if !model.cfg.is_classifier() && files.iter().any(|f| f.contains("score.weight")) {
        model.add_value_head();
    }
    let be = model.be.clone();
    let tied = model.cfg.tie_word_embeddings || model.cfg.is_classifier();
    let mut known: std::collections::HashSet<String> = model.params().iter().map(|p| p.name.clone()).collect();
    if tied {
        known.insert("lm_head.weight".into()); // some checkpoints store the tied head anyway
    }
    for f in &files {
        if let Some(extra) = f.names().into_iter().find(|n| !known.contains(n) && !is_buffer(n)) {
            return Err(Error::Tensor {
                name: extra,
                msg: format!("in {} but not a parameter of a {} model with this config.json", f.path.display(), model.cfg.model_type),
            });
        }
    }
    for p in model.params_mut() {
        let file = files
            .iter()
            .find(|f| f.contains(&p.name))
            .ok_or_else(|| Error::Tensor { name: p.name.clone(), msg: format!("missing from the checkpoint in {}", dir.display()) })?;
        let (shape, data) = file.get(&p.name)?;
        if shape != p.shape {
            return Err(Error::Tensor {
                name: p.name.clone(),
                msg: format!("shape {shape:?} in {} but the config implies {:?}", file.path.display(), p.shape),
            });
        }
        *p.w = be.upload(&data);
    }
    if !tied && !files.iter().any(|f| f.contains("lm_head.weight")) {
        return Err(Error::Tensor { name: "lm_head.weight".into(), msg: "missing and tie_word_embeddings is false".into() });
    }
    Ok(model)
}
