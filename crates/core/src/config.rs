//! Model configuration: a plain serde struct whose field names are HF `LlamaConfig`'s, so our
//! `config.json` is a `transformers` `config.json` and theirs loads here.
//!
//! The Llama family's relatives share the one model of `model.rs` and differ by a few switches,
//! all derived from `model_type` and the fields `transformers` reads:
//! - `llama`: `attention_bias` (q/k/v/o biases), `mlp_bias`, `rope_type` "llama3" or "linear";
//!   SmolLM2 is a Llama with tied embeddings;
//! - `mistral`: a Llama whose attention may be limited to a sliding window;
//! - `qwen2`: q/k/v biases always (no o bias);
//! - `qwen3`: RMSNorm over each head of q and k before the rotation, `attention_bias` as Llama's.
//!
//! Anything else (another `model_type`, activation, rotary type, a partial rotation, a sliding
//! window shorter than the context) is refused by `validate` with the feature's name: a model
//! never loads with a piece silently missing.

use serde::{Deserialize, Serialize};

use crate::backend::{Rope, RopeScaling};
use crate::{Error, Result};

fn default_eps() -> f32 {
    1e-5
}
fn default_theta() -> f32 {
    10000.0
}
fn default_act() -> String {
    "silu".into()
}
/// The `model_type`s we run, and the prefix of their architecture names.
pub const FAMILIES: [(&str, &str); 4] = [("llama", "Llama"), ("mistral", "Mistral"), ("qwen2", "Qwen2"), ("qwen3", "Qwen3")];

/// A token id or a list of them (Llama 3 lists several end-of-turn ids as `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn ids(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

fn default_arch() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn default_model_type() -> String {
    "llama".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "default_arch")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    /// transformers ≥ 5 writes the rotary settings here; older versions use `rope_theta` above.
    /// We read either and write both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// transformers < 5 spelled the rotary scaling here (`type` or `rope_type`, factor, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParameters>,
    /// Mistral / Qwen: attention limited to the last `sliding_window` positions (when in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// A classifier's labels (the reward model: one, `LABEL_0`); HF derives `num_labels` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    /// The padding token: a classifier pools at each row's last token that is not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// Absent in a legacy `rope_scaling` (the base is the top-level `rope_theta` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f32>,
    #[serde(default = "default_rope_type", alias = "type")]
    pub rope_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f32>,
}

impl RopeParameters {
    pub fn plain(theta: f32) -> Self {
        RopeParameters {
            rope_theta: Some(theta),
            rope_type: default_rope_type(),
            factor: None,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
            partial_rotary_factor: None,
        }
    }
}

fn default_rope_type() -> String {
    "default".into()
}

/// Explicit overrides of the shape the depth dial derives (`--layers --hidden --heads --kv-heads`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShapeOverrides {
    pub layers: Option<usize>,
    pub hidden: Option<usize>,
    pub heads: Option<usize>,
    pub kv_heads: Option<usize>,
    pub intermediate: Option<usize>,
    pub tied: bool,
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

impl LlamaConfig {
    /// The one size dial: layers = D, hidden = 64·D, heads of 64, MLP ≈ 8/3·hidden rounded up to 64.
    pub fn from_depth(depth: usize, vocab_size: usize, context: usize) -> Self {
        Self::with_overrides(depth, vocab_size, context, &ShapeOverrides::default())
    }

    pub fn with_overrides(depth: usize, vocab_size: usize, context: usize, o: &ShapeOverrides) -> Self {
        let layers = o.layers.unwrap_or(depth);
        let hidden = o.hidden.unwrap_or(64 * depth.max(1));
        let heads = o.heads.unwrap_or((hidden / 64).max(1));
        let kv = o.kv_heads.unwrap_or(heads);
        let inter = o.intermediate.unwrap_or_else(|| round_up(8 * hidden / 3, 64));
        LlamaConfig {
            architectures: default_arch(),
            model_type: default_model_type(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            head_dim: Some(hidden / heads),
            max_position_embeddings: context,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_parameters: Some(RopeParameters::plain(10000.0)),
            rope_scaling: None,
            sliding_window: None,
            use_sliding_window: None,
            layer_types: None,
            tie_word_embeddings: o.tied,
            hidden_act: default_act(),
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: None,
            eos_token_id: None,
            torch_dtype: Some("float32".into()),
            id2label: None,
            pad_token_id: None,
        }
    }

    /// A reward model: HF `LlamaForSequenceClassification` (scalar `score` head, no LM head), or
    /// its sibling in the model's family.
    pub fn is_classifier(&self) -> bool {
        self.architectures.iter().any(|a| a.ends_with("ForSequenceClassification"))
    }

    /// The family's architecture prefix ("Llama", "Qwen2", ...), `None` for a `model_type` we do not run.
    pub fn family(&self) -> Option<&'static str> {
        FAMILIES.iter().find(|(t, _)| *t == self.model_type).map(|(_, a)| *a)
    }

    /// q/k/v projections have biases (Qwen2 always; Llama and Qwen3 with `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || (self.attention_bias && self.model_type != "mistral")
    }

    /// The output projection has a bias (Llama and Qwen3 with `attention_bias`).
    pub fn o_bias(&self) -> bool {
        self.attention_bias && matches!(self.model_type.as_str(), "llama" | "qwen3")
    }

    /// gate/up/down have biases (Llama's `mlp_bias`).
    pub fn mlp_bias(&self) -> bool {
        self.mlp_bias && self.model_type == "llama"
    }

    /// Qwen3's RMSNorm over each head of q and k (weights `[head_dim]`), before the rotation.
    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }

    /// The rotary settings in force: `rope_parameters`, else the legacy `rope_scaling`.
    fn rope_params(&self) -> Option<&RopeParameters> {
        self.rope_parameters.as_ref().filter(|r| r.rope_type != "default" || self.rope_scaling.is_none()).or(self.rope_scaling.as_ref())
    }

    /// The rotary frequencies (validated: only the types [`LlamaConfig::validate`] accepts).
    pub fn rope(&self) -> Rope {
        let Some(rp) = self.rope_params() else { return Rope::plain(self.rope_theta) };
        let theta = self.rope_theta;
        let factor = rp.factor.unwrap_or(1.0);
        let scaling = match rp.rope_type.as_str() {
            "linear" => RopeScaling::Linear { factor },
            "llama3" => RopeScaling::Llama3 {
                factor,
                low_freq_factor: rp.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: rp.high_freq_factor.unwrap_or(4.0),
                original_context: rp.original_max_position_embeddings.unwrap_or(self.max_position_embeddings) as f32,
            },
            _ => RopeScaling::None,
        };
        Rope { theta, scaling }
    }

    /// The sliding window in force, if any (Mistral's `sliding_window`; Qwen's when `use_sliding_window`).
    pub fn active_sliding_window(&self) -> Option<usize> {
        let on = match self.model_type.as_str() {
            "mistral" => true,
            "qwen2" | "qwen3" => self.use_sliding_window.unwrap_or(false),
            _ => false,
        };
        let layered = self.layer_types.as_ref().is_some_and(|l| l.iter().any(|t| t == "sliding_attention"));
        if on || layered {
            self.sliding_window
        } else {
            None
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Rejects shapes the engine cannot run, with a message naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.family().is_none() {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.0).collect();
            return bad(format!("model_type {:?} is not supported (supported: {})", self.model_type, known.join(", ")));
        }
        for a in &self.architectures {
            let family = self.family().unwrap_or_default();
            if !(a.starts_with(family) && (a.ends_with("ForCausalLM") || a.ends_with("ForSequenceClassification"))) {
                return bad(format!("architecture {a:?} is not supported for model_type {:?}", self.model_type));
            }
        }
        for rp in [&self.rope_parameters, &self.rope_scaling].into_iter().flatten() {
            if !matches!(rp.rope_type.as_str(), "default" | "linear" | "llama3") {
                return bad(format!("rope_type {:?} is not supported (default, linear and llama3 are)", rp.rope_type));
            }
            if rp.partial_rotary_factor.is_some_and(|f| f != 1.0) {
                return bad("partial_rotary_factor < 1 (a partial rotation) is not supported".into());
            }
            if rp.rope_type != "default" && rp.factor.is_none() {
                return bad(format!("rope_type {:?} needs a factor", rp.rope_type));
            }
        }
        if let Some(w) = self.active_sliding_window() {
            if w < self.max_position_embeddings {
                return bad(format!(
                    "sliding-window attention (window {w} < context {}) is not supported; \
                     `chatforge import` caps the context at the window, where the two agree",
                    self.max_position_embeddings
                ));
            }
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?} is not supported (only silu)", self.hidden_act));
        }
        if self.num_attention_heads == 0 || self.kv_heads() == 0 {
            return bad("num_attention_heads and num_key_value_heads must be > 0".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim()));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be > 0".into());
        }
        Ok(())
    }

    /// Number of parameters (embedding and LM head counted once each; once if tied).
    pub fn num_params(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (self.num_attention_heads * self.head_dim(), self.kv_heads() * self.head_dim());
        let biases = if self.qkv_bias() { q + 2 * kv } else { 0 } + if self.o_bias() { d } else { 0 };
        let mlp_biases = if self.mlp_bias() { 2 * f + d } else { 0 };
        let qk_norm = if self.qk_norm() { 2 * self.head_dim() } else { 0 };
        let layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d + biases + mlp_biases + qk_norm;
        let head = if self.is_classifier() {
            d // the scalar score head
        } else if self.tie_word_embeddings {
            0
        } else {
            v * d
        };
        v * d + self.num_hidden_layers * layer + d + head
    }

    /// Matmul FLOPs of one training step per token (forward + backward = 3× forward), counting the
    /// linear layers (6·N without the embedding lookup) and causal attention at context `t`.
    pub fn train_flops_per_token(&self, t: usize) -> f64 {
        let (d, v) = (self.hidden_size as f64, self.vocab_size as f64);
        // Every parameter but the embedding lookup is a matmul weight (tied: the table is the head).
        let lookup = if self.tie_word_embeddings && !self.is_classifier() { 0.0 } else { v * d };
        let n_matmul = self.num_params() as f64 - lookup;
        let q = (self.num_attention_heads * self.head_dim()) as f64;
        // QK^T and AV: 2·2·t·q per token per layer forward (full square; our kernel computes it all).
        let attn = 4.0 * t as f64 * q * self.num_hidden_layers as f64;
        6.0 * n_matmul + 3.0 * attn
    }

    pub fn from_json_file(path: &std::path::Path) -> Result<Self> {
        let cfg = Self::parse_json_file(path)?;
        cfg.validate().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// `config.json` parsed but not validated (import caps the context first).
    pub fn parse_json_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg: LlamaConfig = serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        if let Some(theta) = cfg.rope_parameters.as_ref().and_then(|rp| rp.rope_theta) {
            cfg.rope_theta = theta;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_dial_derives_the_shape() {
        let c = LlamaConfig::from_depth(4, 4096, 256);
        assert_eq!((c.num_hidden_layers, c.hidden_size, c.num_attention_heads), (4, 256, 4));
        assert_eq!(c.intermediate_size, 704);
        assert_eq!(c.head_dim(), 64);
        // The 5.3M-parameter benchmark model (the default `BenchConfig` of chatforge-train).
        assert_eq!(c.num_params(), 5_310_720);
    }

    #[test]
    fn rejects_bad_gqa() {
        let mut c = LlamaConfig::from_depth(2, 100, 32);
        c.num_key_value_heads = Some(3);
        c.num_attention_heads = 4;
        assert!(c.validate().is_err());
    }

    fn parse(json: serde_json::Value) -> Result<LlamaConfig> {
        let mut base = serde_json::json!({"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64});
        base.as_object_mut().unwrap().extend(json.as_object().unwrap().clone());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), base.to_string()).unwrap();
        LlamaConfig::from_json_file(&dir.path().join("config.json"))
    }

    #[test]
    fn unsupported_features_are_named() {
        let err = |j| parse(j).unwrap_err().to_string();
        assert!(err(serde_json::json!({"model_type": "gemma"})).contains("model_type \"gemma\" is not supported"));
        assert!(err(serde_json::json!({"architectures": ["GPT2LMHeadModel"]})).contains("GPT2LMHeadModel"));
        assert!(err(serde_json::json!({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}})).contains("yarn"));
        assert!(err(serde_json::json!({"hidden_act": "gelu"})).contains("gelu"));
        let e = err(serde_json::json!({"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 16}));
        assert!(e.contains("sliding-window"), "{e}");
        let e = err(serde_json::json!({"rope_scaling": {"type": "linear", "factor": 2.0}, "partial_rotary_factor": 0.5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}));
        assert!(e.contains("partial"), "{e}");
    }

    #[test]
    fn legacy_rope_scaling_and_eos_lists_parse() {
        // transformers < 5: rope_theta on top, the scaling in rope_scaling; Llama 3 lists eos ids.
        let c = parse(serde_json::json!({"rope_theta": 500000.0, "eos_token_id": [1, 2, 3],
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
        .unwrap();
        assert_eq!(c.eos_token_id.as_ref().unwrap().ids(), vec![1, 2, 3]);
        let r = c.rope();
        assert_eq!(r.theta, 500000.0);
        assert!(matches!(r.scaling, RopeScaling::Llama3 { factor: 8.0, original_context: 8192.0, .. }));
        // Qwen2 always has q/k/v biases; Qwen3 has q/k norms; both count in the parameters.
        let q2 = parse(serde_json::json!({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})).unwrap();
        assert!(q2.qkv_bias() && !q2.o_bias() && !q2.qk_norm());
        let llama = parse(serde_json::json!({})).unwrap();
        assert_eq!(q2.num_params() - llama.num_params(), 2 * 3 * 32);
    }
}
