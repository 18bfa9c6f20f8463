//! LoRA (Hu et al., 2021): a linear layer's weight W `[out,in]` is frozen and learns a low-rank
//! update instead, `y = x·W^T + s·(x·A^T)·B^T` with A `[r,in]`, B `[out,r]` and s = alpha/r
//! (alpha/√r with rsLoRA). Only A and B train, so a fine-tune keeps one copy of the model plus
//! adapters a few hundredths of its size, instead of weights, gradients and two AdamW moments.
//! In order:
//! 1. [`LoraConfig`], the recipe, and [`Lora`], one layer's adapter with its forward and
//!    backward (called by every linear layer of `model.rs` and `decode.rs` that has one);
//! 2. attaching adapters to a model (A as PEFT initialises it, B zero, so training starts from
//!    the base model), the trainable parameters, and merging (W + s·B·A);
//! 3. PEFT's file format, `adapter_config.json` + `adapter_model.safetensors`, so `peft` loads
//!    what we save and we load what it saves.

use std::path::Path;
use std::sync::Mutex;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Llama, Param};
use crate::backend::{Backend, Op};
use crate::checkpoint::{tensors_to_bytes, TensorFile};
use crate::{Error, Result};

/// The linear layers an adapter may target, by HF module name.
pub const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// PEFT's file names.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_MODEL: &str = "adapter_model.safetensors";

/// A LoRA recipe: rank 8, alpha 16, every linear layer of every block (QLoRA's finding: adapting
/// all of them, not only q and v, is what matches a full fine-tune).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    /// Module names from [`TARGETS`].
    pub targets: Vec<String>,
    /// rsLoRA: scale by alpha/√r instead of alpha/r.
    #[serde(default)]
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, targets: TARGETS.map(String::from).to_vec(), rslora: false }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.r as f32).sqrt()
        } else {
            self.alpha / self.r as f32
        }
    }

    fn check(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::Config("LoRA rank r must be at least 1".into()));
        }
        if self.targets.is_empty() {
            return Err(Error::Config(format!("LoRA needs at least one target module (of {})", TARGETS.join(", "))));
        }
        if let Some(bad) = self.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
            return Err(Error::Config(format!("LoRA target module {bad:?} is not a linear layer of a block (use {})", TARGETS.join(", "))));
        }
        Ok(())
    }
}

/// One layer's adapter. Scratch for `s·x·A^T` `[N,r]` and its gradient sits behind a mutex, so
/// a forward through `&self` can use it; each call takes it once, briefly.
pub struct Lora<B: Backend> {
    pub a: Param<B>, // [r, in]
    pub b: Param<B>, // [out, r]
    pub scale: f32,
    scratch: Mutex<[B::Buf; 2]>,
}

impl<B: Backend> Lora<B> {
    fn new(be: &B, base: &Param<B>, r: usize, scale: f32) -> Self {
        let (out, inp) = (base.shape[0], base.shape[1]);
        let stem = base.name.trim_end_matches(".weight");
        Lora {
            a: Param::new(be, format!("{stem}.lora_A.weight"), vec![r, inp]),
            b: Param::new(be, format!("{stem}.lora_B.weight"), vec![out, r]),
            scale,
            scratch: Mutex::new([be.zeros(0), be.zeros(0)]),
        }
    }

    fn r(&self) -> usize {
        self.a.shape[0]
    }

    /// `u = s·x·A^T` `[n,r]` into the first scratch buffer.
    fn down(&self, be: &B, u: &mut B::Buf, x: &B::Buf, n: usize, rows: bool) {
        let (r, inp) = (self.r(), self.a.shape[1]);
        be.resize(u, n * r);
        if rows {
            be.linear_rows(u, x, &self.a.w, n, r, inp, false);
        } else {
            be.matmul(u, x, Op::N, &self.a.w, Op::T, n, r, inp, false);
        }
        be.scale(u, self.scale);
    }

    /// `y[n,out] += s·(x·A^T)·B^T`. With `rows`, each row is computed on its own (the batched
    /// decode step's contract, `Backend::linear_rows`).
    pub(crate) fn forward(&self, be: &B, y: &mut B::Buf, x: &B::Buf, n: usize, rows: bool) {
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let [u, _] = &mut *s;
        self.down(be, u, x, n, rows);
        let (out, r) = (self.b.shape[0], self.r());
        if rows {
            be.linear_rows(y, u, &self.b.w, n, out, r, true);
        } else {
            be.matmul(y, u, Op::N, &self.b.w, Op::T, n, out, r, true);
        }
    }

    /// Backward of `forward` (u recomputed): `gB += dy^T·u`, `du = s·dy·B`, `gA += du^T·x`,
    /// `dx += du·A`.
    pub(crate) fn backward(&mut self, be: &B, dx: &mut B::Buf, dy: &B::Buf, x: &B::Buf, n: usize) {
        let (r, inp, out) = (self.r(), self.a.shape[1], self.b.shape[0]);
        let [u, du] = self.scratch.get_mut().unwrap_or_else(|e| e.into_inner());
        let Lora { a, b, scale, .. } = self;
        be.resize(u, n * r);
        be.matmul(u, x, Op::N, &a.w, Op::T, n, r, inp, false);
        be.scale(u, *scale);
        be.matmul(&mut b.g, dy, Op::T, u, Op::N, out, r, n, true);
        be.resize(du, n * r);
        be.matmul(du, dy, Op::N, &b.w, Op::N, n, r, out, false);
        be.scale(du, *scale);
        be.matmul(&mut a.g, du, Op::T, x, Op::N, r, inp, n, true);
        be.matmul(dx, du, Op::N, &a.w, Op::N, n, inp, r, true);
    }

    /// `s·B·A` `[out,in]` added to the base weight's values, in f32 on the host.
    fn merged(&self, be: &B, w: &[f32]) -> Vec<f32> {
        let (a, b) = (be.download(&self.a.w), be.download(&self.b.w));
        let (r, inp) = (self.r(), self.a.shape[1]);
        let mut out = w.to_vec();
        for (o, row) in out.chunks_exact_mut(inp).enumerate() {
            for k in 0..r {
                let c = self.scale * b[o * r + k];
                for (y, &x) in row.iter_mut().zip(&a[k * inp..(k + 1) * inp]) {
                    *y += c * x;
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// On a model: attach, trainable parameters, merge

/// The module name of a block's linear weight (`model.layers.3.self_attn.q_proj.weight` → `q_proj`).
fn module_of(name: &str) -> Option<&str> {
    name.strip_suffix(".weight")?.rsplit('.').next().filter(|m| TARGETS.contains(m))
}

impl<B: Backend> Llama<B> {
    /// Freezes every parameter and attaches an adapter to each targeted linear layer: A drawn as
    /// PEFT draws it (Kaiming-uniform with a = √5, i.e. U(±1/√in)), B zero.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        cfg.check()?;
        if self.has_lora() {
            return Err(Error::Config("the model already has LoRA adapters".into()));
        }
        let be = self.be.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10_4a);
        self.ws = None;
        for p in self.params_mut() {
            p.frozen = true;
            if !module_of(&p.name).is_some_and(|m| cfg.targets.iter().any(|t| t == m)) {
                continue;
            }
            let mut l = Lora::new(&be, p, cfg.r, cfg.scale());
            let bound = 1.0 / (p.shape[1] as f32).sqrt();
            let a: Vec<f32> = (0..l.a.numel()).map(|_| rng.random_range(-bound..bound)).collect();
            *l.a.w = be.upload(&a);
            p.lora = Some(Box::new(l));
        }
        Ok(())
    }

    pub fn has_lora(&self) -> bool {
        self.params().iter().any(|p| p.lora.is_some())
    }

    /// The adapters' recipe, read back from the model (rank, alpha from the scale, targets).
    pub fn lora_config(&self) -> Option<LoraConfig> {
        let ps = self.params();
        let l = ps.iter().find_map(|p| p.lora.as_deref())?;
        let mut targets: Vec<String> = vec![];
        for m in ps.iter().filter(|p| p.lora.is_some()).filter_map(|p| module_of(&p.name)) {
            if !targets.iter().any(|t| t == m) {
                targets.push(m.to_string());
            }
        }
        targets.sort_by_key(|t| TARGETS.iter().position(|x| x == t));
        Some(LoraConfig { r: l.r(), alpha: l.scale * l.r() as f32, targets, rslora: false })
    }

    /// The parameters an optimizer steps, in order: every unfrozen parameter, and both matrices
    /// of every adapter (A, then B) right after the layer they adapt.
    pub fn trainable(&self) -> Vec<&Param<B>> {
        let mut v = vec![];
        for p in self.params() {
            if !p.frozen {
                v.push(p);
            } else if let Some(l) = p.lora.as_deref() {
                v.extend([&l.a, &l.b]);
            }
        }
        v
    }

    pub fn trainable_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = vec![];
        for p in self.params_mut() {
            if !p.frozen {
                v.push(p);
            } else if let Some(l) = p.lora.as_deref_mut() {
                v.push(&mut l.a);
                v.push(&mut l.b);
            }
        }
        v
    }

    /// Trainable and total parameter counts (a tied head counted once).
    pub fn trainable_count(&self) -> (usize, usize) {
        let trainable = self.trainable().iter().map(|p| p.numel()).sum();
        let base = self.params().iter().map(|p| p.numel()).sum::<usize>();
        let adapters = self.params().iter().filter_map(|p| p.lora.as_deref()).map(|l| l.a.numel() + l.b.numel()).sum::<usize>();
        (trainable, base + adapters)
    }

    /// A parameter's values as the model computes with them: `W + s·B·A` for an adapted layer.
    pub fn effective_weight(&self, p: &Param<B>) -> Vec<f32> {
        let w = self.be.download(&p.w);
        match p.lora.as_deref() {
            Some(l) => l.merged(&self.be, &w),
            None => w,
        }
    }

    /// Folds every adapter into its weight (PEFT's `merge_and_unload`) and unfreezes the model.
    pub fn merge_lora(&mut self) {
        let be = self.be.clone();
        self.ws = None;
        for p in self.params_mut() {
            if let Some(l) = p.lora.take() {
                let merged = l.merged(&be, &be.download(&p.w));
                *p.w = be.upload(&merged);
            }
            p.frozen = false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PEFT's format

/// PEFT's key for one of our adapter tensors (`base_model.model.` + the HF module path).
fn peft_key(name: &str) -> String {
    format!("base_model.model.{name}")
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (each atomically), as
/// `peft` saves a LoRA of a causal LM; `base` is recorded as `base_model_name_or_path`.
pub fn save_adapter<B: Backend>(model: &Llama<B>, dir: &Path, base: &str) -> Result<()> {
    let cfg = model.lora_config().ok_or_else(|| Error::Input("the model has no LoRA adapters to save".into()))?;
    let mut tensors = vec![];
    for l in model.params().iter().filter_map(|p| p.lora.as_deref()) {
        for m in [&l.a, &l.b] {
            tensors.push((peft_key(&m.name), m.shape.clone(), model.be.download(&m.w)));
        }
    }
    let json = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": 0.0,
        "target_modules": cfg.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    chatforge_rundir::fs::write_atomic(&dir.join(ADAPTER_MODEL), &tensors_to_bytes(&tensors)?)?;
    chatforge_rundir::fs::write_atomic(&dir.join(ADAPTER_CONFIG), serde_json::to_string_pretty(&json).unwrap().as_bytes())?;
    Ok(())
}

/// Reads a PEFT `adapter_config.json`. What we do not compute (DoRA, regex targets, per-layer
/// ranks, trained biases, extra trained modules) is an error naming the field.
pub fn read_adapter_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
    let bad = |what: String| Error::Config(format!("{}: {what}", path.display()));
    if j["peft_type"].as_str() != Some("LORA") {
        return Err(bad(format!("peft_type {} is not supported (only LORA)", j["peft_type"])));
    }
    let unsupported = [
        ("use_dora", j["use_dora"].as_bool() == Some(true)),
        ("fan_in_fan_out", j["fan_in_fan_out"].as_bool() == Some(true)),
        ("bias", !matches!(j["bias"].as_str(), None | Some("none"))),
        ("modules_to_save", j["modules_to_save"].as_array().is_some_and(|a| !a.is_empty())),
        ("layers_to_transform", !j["layers_to_transform"].is_null()),
        ("rank_pattern", j["rank_pattern"].as_object().is_some_and(|o| !o.is_empty())),
        ("alpha_pattern", j["alpha_pattern"].as_object().is_some_and(|o| !o.is_empty())),
        ("lora_bias", j["lora_bias"].as_bool() == Some(true)),
        ("use_qalora", j["use_qalora"].as_bool() == Some(true)),
        ("exclude_modules", !j["exclude_modules"].is_null()),
        ("layer_replication", !j["layer_replication"].is_null()),
        ("target_parameters", !j["target_parameters"].is_null()),
        ("trainable_token_indices", !j["trainable_token_indices"].is_null()),
        ("alora_invocation_tokens", !j["alora_invocation_tokens"].is_null()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, on)| *on) {
        return Err(bad(format!("{field} = {} is not supported", j[field])));
    }
    let targets = match &j["target_modules"] {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(String::from).ok_or_else(|| bad("target_modules must be names".into())))
            .collect::<Result<Vec<_>>>()?,
        other => return Err(bad(format!("target_modules {other} is not supported (a list of module names is)"))),
    };
    let r = j["r"].as_u64().ok_or_else(|| bad("no rank r".into()))? as usize;
    let alpha = j["lora_alpha"].as_f64().ok_or_else(|| bad("no lora_alpha".into()))? as f32;
    let cfg = LoraConfig { r, alpha, targets, rslora: j["use_rslora"].as_bool() == Some(true) };
    cfg.check().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Attaches the adapter saved in `dir` (ours or `peft`'s) to `model`: every tensor of the file
/// must be an adapter of this model, with its shape, and every adapter must be in the file.
pub fn load_adapter<B: Backend>(model: &mut Llama<B>, dir: &Path) -> Result<()> {
    let cfg = read_adapter_config(dir)?;
    model.add_lora(&cfg, 0)?;
    let file = TensorFile::open(&dir.join(ADAPTER_MODEL))?;
    let be = model.be.clone();
    let mut expected = std::collections::HashSet::new();
    for l in model.params_mut().into_iter().filter_map(|p| p.lora.as_deref_mut()) {
        for m in [&mut l.a, &mut l.b] {
            // PEFT writes `...q_proj.lora_A.weight`; older versions kept the adapter's name.
            let key = peft_key(&m.name);
            let alt = key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.");
            let found = [&key, &alt]
                .into_iter()
                .find(|k| file.contains(k))
                .ok_or_else(|| Error::Tensor { name: key.clone(), msg: format!("missing from {}", file.path.display()) })?;
            let (shape, data) = file.get(found)?;
            if shape != m.shape {
                return Err(Error::Tensor { name: found.clone(), msg: format!("shape {shape:?} but this model needs {:?}", m.shape) });
            }
            *m.w = be.upload(&data);
            expected.insert(found.clone());
        }
    }
    if let Some(extra) = file.names().into_iter().find(|n| !expected.contains(n)) {
        return Err(Error::Tensor { name: extra, msg: format!("in {} but not an adapter of this model and config", file.path.display()) });
    }
    Ok(())
}
