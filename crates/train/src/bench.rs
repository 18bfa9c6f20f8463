//! `chatforge bench train`: the training step of a fixed model, measured against the machine's
//! own matmul peak (measured in the same run) and, when asked, against PyTorch on the same shape.

use std::time::Instant;

use chatforge_core::backend::{Backend, Op, Precision};
use chatforge_core::config::{LlamaConfig, ShapeOverrides};
use chatforge_core::cpu::Cpu;
use chatforge_core::model::lora::LoraConfig;
use chatforge_core::model::Llama;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, OptimConfig};

/// The benchmark model: by default a 5.3M-parameter GPT (4 layers, hidden size 256, 4 heads,
/// context 256, a 4,096-token vocabulary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub context: usize,
    pub batch: usize,
    pub vocab: usize,
    pub tied: bool,
    pub steps: usize,
    pub warmup: usize,
    /// The matmuls' precision (`Precision::Bf16`: bf16 operands, fp32 accumulation).
    pub precision: Precision,
    /// Train LoRA adapters of this rank (alpha 16, every linear layer) on the frozen model.
    #[serde(default)]
    pub lora: Option<usize>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            layers: 4,
            hidden: 256,
            heads: 4,
            kv_heads: 4,
            intermediate: 704,
            context: 256,
            batch: 8,
            vocab: 4096,
            tied: false,
            steps: 10,
            warmup: 2,
            precision: Precision::Fp32,
            lora: None,
        }
    }
}

impl BenchConfig {
    pub fn model_config(&self) -> LlamaConfig {
        let o = ShapeOverrides {
            layers: Some(self.layers),
            hidden: Some(self.hidden),
            heads: Some(self.heads),
            kv_heads: Some(self.kv_heads),
            intermediate: Some(self.intermediate),
            tied: self.tied,
        };
        LlamaConfig::with_overrides(self.layers, self.vocab, self.context, &o)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub params: usize,
    pub tokens_per_s: f64,
    pub step_ms: f64,
    pub gflops: f64,
    pub matmul_peak_gflops: f64,
    pub mfu: f64,
    pub peak_rss_mb: f64,
    pub threads: usize,
    /// Inference: a forward pass to the logits over the same batches, no gradients.
    pub forward_tokens_per_s: f64,
}

/// Best-of-4 GFLOP/s of a square matmul through the engine at `precision` (the machine's
/// practical peak).
pub fn matmul_peak_gflops(n: usize, precision: Precision) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let a: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>()).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>()).collect();
    let mut c = vec![0.0f32; n * n];
    let mut best = 0.0f64;
    for _ in 0..4 {
        let t = Instant::now();
        Cpu::with_precision(precision).matmul(&mut c, &a, Op::N, &b, Op::N, n, n, n, false);
        best = best.max(2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Peak resident set size of this process (VmHWM), in MiB; 0 where /proc is unavailable.
pub fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `warmup + steps` full training steps (forward, backward, clip, AdamW) on random tokens.
pub fn bench_train(cfg: &BenchConfig, mut progress: impl FnMut(usize, f32)) -> BenchResult {
    let mc = cfg.model_config();
    let mut model = Llama::new(Cpu::with_precision(cfg.precision), mc.clone(), 0);
    if let Some(r) = cfg.lora {
        model.add_lora(&LoraConfig { r, ..Default::default() }, 0).expect("a valid LoRA recipe");
    }
    let mut opt = AdamW::new(&model, OptimConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n = cfg.batch * cfg.context;
    let mut elapsed = 0.0;
    for step in 0..cfg.warmup + cfg.steps {
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..cfg.vocab as u32)).collect();
        let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..cfg.vocab as u32)).collect();
        let t = Instant::now();
        model.zero_grad();
        let (loss, _) = model.forward_backward(&ids, &targets, cfg.batch, cfg.context, None);
        opt.step(&mut model, 1e-3);
        if step >= cfg.warmup {
            elapsed += t.elapsed().as_secs_f64();
        }
        progress(step, loss);
    }
    let tokens_per_s = (n * cfg.steps) as f64 / elapsed;
    // The forward alone (logits of every position, held as `transformers` holds its tensor).
    let mut fwd = 0.0;
    for step in 0..cfg.warmup + cfg.steps {
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..cfg.vocab as u32)).collect();
        let t = Instant::now();
        std::hint::black_box(model.forward_buf(&ids, cfg.batch, cfg.context));
        if step >= cfg.warmup {
            fwd += t.elapsed().as_secs_f64();
        }
    }
    let forward_tokens_per_s = (n * cfg.steps) as f64 / fwd;
    let mut flops_per_token = mc.train_flops_per_token(cfg.context);
    if cfg.lora.is_some() {
        // No weight gradients (2 of a full step's 6 FLOPs per matmul weight), plus the adapters'
        // matmuls: forward 2, backward 6 (u recomputed, dB, du, dA, dx) per adapter parameter.
        let lookup = if mc.tie_word_embeddings { 0 } else { mc.vocab_size * mc.hidden_size };
        let (adapters, _) = model.trainable_count();
        flops_per_token += -2.0 * (mc.num_params() - lookup) as f64 + 8.0 * adapters as f64;
    }
    let gflops = tokens_per_s * flops_per_token / 1e9;
    let peak = matmul_peak_gflops(1024, cfg.precision);
    BenchResult {
        params: mc.num_params(),
        tokens_per_s,
        step_ms: 1e3 * elapsed / cfg.steps as f64,
        gflops,
        matmul_peak_gflops: peak,
        mfu: gflops / peak,
        peak_rss_mb: peak_rss_mb(),
        threads: rayon::current_num_threads(),
        forward_tokens_per_s,
    }
}
