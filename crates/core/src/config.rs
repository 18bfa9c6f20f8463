//! Model configuration: a plain serde struct whose field names are HF `LlamaConfig`'s, so our
//! `config.json` is a `transformers` `config.json` and theirs loads here.

use serde::{Deserialize, Serialize};

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
/// HF's architecture name for a Llama with a scalar head (the reward model).
pub const CLASSIFIER_ARCH: &str = "LlamaForSequenceClassification";

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
    pub eos_token_id: Option<u32>,
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
    pub rope_theta: f32,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
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
            rope_parameters: Some(RopeParameters { rope_theta: 10000.0, rope_type: default_rope_type() }),
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

    /// A reward model: HF `LlamaForSequenceClassification` (scalar `score` head, no LM head).
    pub fn is_classifier(&self) -> bool {
        self.architectures.iter().any(|a| a == CLASSIFIER_ARCH)
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
        if let Some(rp) = &self.rope_parameters {
            if rp.rope_type != "default" {
                return bad(format!("rope_type {:?} is not supported (only default rotary embeddings)", rp.rope_type));
            }
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?} is not supported (only silu)", self.hidden_act));
        }
        if self.attention_bias || self.mlp_bias {
            return bad("attention_bias / mlp_bias are not supported".into());
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
        let layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d;
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
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg: LlamaConfig = serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        if let Some(rp) = &cfg.rope_parameters {
            cfg.rope_theta = rp.rope_theta;
        }
        cfg.validate().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
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
}
