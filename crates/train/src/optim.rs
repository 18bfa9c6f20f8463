//! AdamW with decoupled weight decay, global-norm gradient clipping and the learning-rate schedule.

use chatforge_core::backend::{AdamWStep, Backend};
use chatforge_core::model::Llama;
use serde::{Deserialize, Serialize};

/// Optimiser hyper-parameters (plain serde struct; defaults follow nanoGPT / Llama practice).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimConfig {
    pub lr: f32,
    pub min_lr_frac: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub warmup_steps: usize,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 3e-3,
            min_lr_frac: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            warmup_steps: 20,
            schedule: Schedule::Cosine,
        }
    }
}

impl OptimConfig {
    /// Learning rate at `step` (0-based) of `total`: linear warmup, then cosine or linear decay to
    /// `min_lr_frac · lr`.
    pub fn lr_at(&self, step: usize, total: usize) -> f32 {
        let warm = self.warmup_steps.min(total.saturating_sub(1));
        if step < warm {
            return self.lr * (step + 1) as f32 / warm as f32;
        }
        let min = self.lr * self.min_lr_frac;
        let span = total.saturating_sub(warm).max(1) as f32;
        let frac = ((step - warm) as f32 / span).min(1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => min + (self.lr - min) * (1.0 - frac),
            Schedule::Cosine => min + (self.lr - min) * 0.5 * (1.0 + (std::f32::consts::PI * frac).cos()),
        }
    }
}

/// AdamW state: first and second moments per trainable parameter (`Llama::trainable`: every
/// parameter, or only the LoRA adapters of a frozen model), in that order.
pub struct AdamW<B: Backend> {
    pub cfg: OptimConfig,
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    /// Updates taken so far (bias correction uses step + 1).
    pub step: u64,
}

impl<B: Backend> AdamW<B> {
    pub fn new(model: &Llama<B>, cfg: OptimConfig) -> Self {
        let be = &model.be;
        let m = model.trainable().iter().map(|p| be.zeros(p.numel())).collect();
        let v = model.trainable().iter().map(|p| be.zeros(p.numel())).collect();
        AdamW { cfg, m, v, step: 0 }
    }

    /// Global L2 norm of all trainable parameters' gradients.
    pub fn grad_norm(model: &Llama<B>) -> f32 {
        model.trainable().iter().map(|p| model.be.sum_sq(&p.g)).sum::<f64>().sqrt() as f32
    }

    /// Clips the gradients to `grad_clip` global norm, then takes one AdamW step at `lr`.
    /// Returns the norm before clipping.
    pub fn step(&mut self, model: &mut Llama<B>, lr: f32) -> f32 {
        let norm = Self::grad_norm(model);
        let be = model.be.clone();
        if self.cfg.grad_clip > 0.0 && norm > self.cfg.grad_clip {
            let s = self.cfg.grad_clip / (norm + 1e-6);
            for p in model.trainable_mut() {
                be.scale(&mut p.g, s);
            }
        }
        self.step += 1;
        for (i, p) in model.trainable_mut().into_iter().enumerate() {
            let h = AdamWStep {
                lr,
                beta1: self.cfg.beta1,
                beta2: self.cfg.beta2,
                eps: self.cfg.eps,
                weight_decay: if p.decays() { self.cfg.weight_decay } else { 0.0 },
                step: self.step,
            };
            be.adamw(&mut p.w, &p.g, &mut self.m[i], &mut self.v[i], h);
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_and_decays() {
        let c = OptimConfig { lr: 1.0, min_lr_frac: 0.1, warmup_steps: 10, ..Default::default() };
        assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(100, 100) - 0.1).abs() < 1e-6);
        let mid = c.lr_at(55, 100);
        assert!((mid - 0.55).abs() < 1e-3, "cosine midpoint {mid}");
    }
}
