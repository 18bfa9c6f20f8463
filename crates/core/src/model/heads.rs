//! The heads' own forward and backward, for the stages that read more than a loss: logits and
//! a scalar head's values (the reward model, a policy's value head), and per-position
//! log-probs and entropies with their backward (PPO). Each runs the trunk of `model.rs` once
//! and keeps its workspace for the matching backward.

use super::{linear, Llama};
use crate::backend::Backend;

/// What [`Llama::policy_forward`] returns, per position `[B·T]`.
pub struct PolicyOut {
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub values: Option<Vec<f32>>,
}

impl<B: Backend> Llama<B> {
    /// The heads' outputs for token ids `[B, T]`: logits `[B·T, V]` when `logits` is set (and
    /// the model has an LM head), and the scalar head's values `[B·T]` when it has one. With
    /// `grads`, keeps what [`Llama::backward_heads`] needs.
    pub fn forward_heads(&mut self, ids: &[u32], b: usize, t: usize, logits: bool, grads: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        self.check_ids(ids, b, t);
        if grads && !self.grads_ready() {
            self.zero_grad();
        }
        let mut ws = self.workspace(b, t, grads);
        self.forward_trunk(&mut ws, ids);
        let n = b * t;
        let lg = (logits && !self.cfg.is_classifier()).then(|| {
            linear(&self.be, &mut ws.logits, &ws.hf, self.head(), n, false);
            self.be.download(&ws.logits)
        });
        let values = self.score.as_ref().map(|score| {
            linear(&self.be, &mut ws.values, &ws.hf, score, n, false);
            self.be.download(&ws.values)
        });
        self.ws = Some(ws);
        (lg, values)
    }

    /// A policy's forward for RL: per position, the log-prob of `targets` and the softmax's
    /// entropy (0 where IGNORE), and the value head's outputs when the model has one. With
    /// `grads`, keeps what [`Llama::policy_backward`] needs.
    pub fn policy_forward(&mut self, ids: &[u32], targets: &[u32], b: usize, t: usize, grads: bool) -> PolicyOut {
        assert_eq!(targets.len(), b * t);
        self.check_ids(ids, b, t);
        if grads && !self.grads_ready() {
            self.zero_grad();
        }
        let mut ws = self.workspace(b, t, grads);
        self.forward_ws(&mut ws, ids);
        let (logp, entropy) = self.be.logprobs_entropy(&ws.logits, targets, self.cfg.vocab_size);
        let values = self.score.as_ref().map(|score| {
            linear(&self.be, &mut ws.values, &ws.hf, score, b * t, false);
            self.be.download(&ws.values)
        });
        self.ws = Some(ws);
        PolicyOut { logp, entropy, values }
    }

    /// Backward of the last [`Llama::policy_forward`] (with `grads`, same `targets`) from
    /// `dL/dlogp` per position and, for a value head, `dL/dvalue`. Accumulates into every `g`.
    pub fn policy_backward(&mut self, targets: &[u32], dlogp: &[f32], dvalues: Option<&[f32]>) {
        let mut ws = self.ws.take().expect("policy_backward after policy_forward");
        assert!(ws.grads.is_some(), "policy_forward was run without grads");
        self.be.logprob_backward(&mut ws.logits, targets, dlogp, self.cfg.vocab_size);
        let dv = dvalues.map(|d| self.be.upload(d));
        self.backward_ws(&mut ws, true, dv.as_ref());
        self.ws = Some(ws);
    }

    /// Backward from gradients of the heads' outputs of the last [`Llama::forward_heads`] (with
    /// `grads`): `dlogits [B·T, V]` and/or `dvalues [B·T]`. Accumulates into every `g`.
    pub fn backward_heads(&mut self, dlogits: Option<&[f32]>, dvalues: Option<&[f32]>) {
        let mut ws = self.ws.take().expect("backward_heads after forward_heads");
        assert!(ws.grads.is_some(), "forward_heads was run without grads");
        let n = ws.b * ws.t;
        if let Some(d) = dlogits {
            assert_eq!(d.len(), n * self.cfg.vocab_size, "dlogits shape");
            ws.logits = self.be.upload(d);
        }
        let dv = dvalues.map(|d| {
            assert_eq!(d.len(), n, "dvalues shape");
            self.be.upload(d)
        });
        self.backward_ws(&mut ws, dlogits.is_some(), dv.as_ref());
        self.ws = Some(ws);
    }
}
