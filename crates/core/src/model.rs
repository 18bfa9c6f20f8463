//! The Llama-architecture GPT, small to large: parameters, RMSNorm, attention (RoPE, GQA, causal),
//! SwiGLU MLP, the block, and the whole model with its training step. Beside it: cached decoding
//! over the same blocks (`model/decode.rs`), the heads' own forward and backward for reward
//! models and RL (`model/heads.rs`), and LoRA adapters on the linear layers (`model/lora.rs`).
//!
//! Every layer has an explicit forward and backward over buffers allocated once per (batch, time)
//! shape. Shapes in comments: B batch, T time, N = B·T rows, d hidden, F intermediate,
//! Hq/Hkv heads, hd head dim, qd = Hq·hd, kvd = Hkv·hd, V vocab.
//! Parameter names are HF `LlamaForCausalLM`'s, so checkpoints load in `transformers` unchanged.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{AttnShape, Backend, Op, Rope, Weight, IGNORE};
use crate::config::LlamaConfig;

mod decode;
mod heads;
pub mod lora;
pub use decode::{DecodeWs, KvCache};
pub use heads::PolicyOut;

// ---------------------------------------------------------------------------------------------
// Parameters

/// A named weight tensor and its gradient (allocated on the first backward). The values are a
/// `Weight`: read them through it, and any write marks its packed copy stale. A frozen matrix
/// gets no gradient; a linear layer's may carry a LoRA adapter (`model/lora.rs`).
pub struct Param<B: Backend> {
    pub name: String,
    pub shape: Vec<usize>,
    pub w: Weight<B::Buf>,
    pub g: B::Buf,
    pub frozen: bool,
    pub lora: Option<Box<lora::Lora<B>>>,
}

impl<B: Backend> Param<B> {
    fn new(be: &B, name: String, shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Param { name, shape, w: Weight::new(be.zeros(n)), g: be.zeros(0), frozen: false, lora: None }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Matrices of linear layers decay; norms and embeddings do not (nanoGPT / InstructGPT practice).
    pub fn decays(&self) -> bool {
        self.shape.len() == 2 && !self.name.contains("embed_tokens")
    }
}

/// `y[N,out] = x[N,in] · W^T` with W `[out,in]` (HF's nn.Linear layout), plus its adapter's
/// low-rank term when it has one.
fn linear<B: Backend>(be: &B, y: &mut B::Buf, x: &B::Buf, w: &Param<B>, n: usize, acc: bool) {
    let (out, inp) = (w.shape[0], w.shape[1]);
    be.matmul_weight(y, x, &w.w, n, out, inp, acc);
    if let Some(l) = &w.lora {
        l.forward(be, y, x, n, false);
    }
}

/// Backward of `linear`: `gW += dy^T · x` (unless frozen), `dx (+)= dy · W`, and the adapter's.
fn linear_backward<B: Backend>(be: &B, dx: &mut B::Buf, dy: &B::Buf, x: &B::Buf, w: &mut Param<B>, n: usize, acc: bool) {
    let (out, inp) = (w.shape[0], w.shape[1]);
    if !w.frozen {
        be.matmul(&mut w.g, dy, Op::T, x, Op::N, out, inp, n, true);
    }
    be.matmul(dx, dy, Op::N, &w.w, Op::N, n, inp, out, acc);
    if let Some(l) = w.lora.as_deref_mut() {
        l.backward(be, dx, dy, x, n);
    }
}

/// `linear` and then its bias, if the layer has one: `y (+)= x · W^T + b`.
fn linear_b<B: Backend>(be: &B, y: &mut B::Buf, x: &B::Buf, w: &Param<B>, b: &Option<Param<B>>, n: usize, acc: bool) {
    linear(be, y, x, w, n, acc);
    if let Some(b) = b {
        be.add_bias(y, &b.w);
    }
}

/// Backward of `linear_b`: the bias gradient is the column sum of `dy`.
#[allow(clippy::too_many_arguments)]
fn linear_b_backward<B: Backend>(
    be: &B,
    dx: &mut B::Buf,
    dy: &B::Buf,
    x: &B::Buf,
    w: &mut Param<B>,
    b: &mut Option<Param<B>>,
    n: usize,
    acc: bool,
) {
    linear_backward(be, dx, dy, x, w, n, acc);
    if let Some(b) = b {
        be.bias_backward(&mut b.g, dy);
    }
}

/// A `[out]` bias named after its weight (`...q_proj.weight` → `...q_proj.bias`), when `on`.
fn bias<B: Backend>(be: &B, w: &Param<B>, on: bool) -> Option<Param<B>> {
    on.then(|| Param::new(be, w.name.replace(".weight", ".bias"), vec![w.shape[0]]))
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x / sqrt(mean(x²) + eps) · w

pub struct RmsNorm<B: Backend> {
    pub w: Param<B>,
    eps: f32,
}

impl<B: Backend> RmsNorm<B> {
    fn new(be: &B, name: String, d: usize, eps: f32) -> Self {
        let mut w = Param::new(be, name, vec![d]);
        be.fill(&mut w.w, 1.0);
        RmsNorm { w, eps }
    }
    /// x, y `[N,d]`; rstd `[N]`.
    fn forward(&self, be: &B, y: &mut B::Buf, rstd: &mut B::Buf, x: &B::Buf) {
        be.rmsnorm(y, rstd, x, &self.w.w, self.w.shape[0], self.eps);
    }
    fn backward(&mut self, be: &B, dx: &mut B::Buf, dy: &B::Buf, x: &B::Buf, rstd: &B::Buf, acc: bool) {
        let d = self.w.shape[0];
        be.rmsnorm_backward(dx, &mut self.w.g, dy, x, &self.w.w, rstd, d, acc);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention: q/k/v projections, rotary embeddings, causal softmax over grouped KV heads, output.

pub struct Attention<B: Backend> {
    pub q: Param<B>, // [qd, d]
    pub k: Param<B>, // [kvd, d]
    pub v: Param<B>, // [kvd, d]
    pub o: Param<B>, // [d, qd]
    /// Biases `[qd]`, `[kvd]`, `[kvd]`, `[d]` (Qwen2's q/k/v; Llama's `attention_bias`).
    pub qb: Option<Param<B>>,
    pub kb: Option<Param<B>>,
    pub vb: Option<Param<B>>,
    pub ob: Option<Param<B>>,
    /// Qwen3: RMSNorm `[hd]` over each head of q and of k, before the rotation.
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    hq: usize,
    hkv: usize,
    hd: usize,
    rope: Rope,
}

/// What the attention forward keeps for its backward.
pub struct AttnActs<B: Backend> {
    q: B::Buf,      // [N, qd] after RoPE
    k: B::Buf,      // [N, kvd] after RoPE
    v: B::Buf,      // [N, kvd]
    probs: B::Buf,  // [B, Hq, T, T]
    o: B::Buf,      // [N, qd] attention output before o_proj
    q_raw: B::Buf,  // [N, qd] q before its norm (empty without q/k norms)
    k_raw: B::Buf,  // [N, kvd]
    q_rstd: B::Buf, // [N·Hq]
    k_rstd: B::Buf, // [N·Hkv]
}

impl<B: Backend> Attention<B> {
    fn new(be: &B, prefix: &str, c: &LlamaConfig) -> Self {
        let (d, hq, hkv, hd) = (c.hidden_size, c.num_attention_heads, c.kv_heads(), c.head_dim());
        let p = |n: &str, shape| Param::new(be, format!("{prefix}.self_attn.{n}_proj.weight"), shape);
        let (q, k, v, o) = (p("q", vec![hq * hd, d]), p("k", vec![hkv * hd, d]), p("v", vec![hkv * hd, d]), p("o", vec![d, hq * hd]));
        let norm = |n: &str| c.qk_norm().then(|| RmsNorm::new(be, format!("{prefix}.self_attn.{n}_norm.weight"), hd, c.rms_norm_eps));
        Attention {
            qb: bias(be, &q, c.qkv_bias()),
            kb: bias(be, &k, c.qkv_bias()),
            vb: bias(be, &v, c.qkv_bias()),
            ob: bias(be, &o, c.o_bias()),
            q_norm: norm("q"),
            k_norm: norm("k"),
            q,
            k,
            v,
            o,
            hq,
            hkv,
            hd,
            rope: c.rope(),
        }
    }
    fn acts(&self, be: &B, b: usize, t: usize) -> AttnActs<B> {
        let n = b * t;
        let normed = if self.q_norm.is_some() { n } else { 0 };
        AttnActs {
            q: be.zeros(n * self.hq * self.hd),
            k: be.zeros(n * self.hkv * self.hd),
            v: be.zeros(n * self.hkv * self.hd),
            probs: be.zeros(b * self.hq * t * t),
            o: be.zeros(n * self.hq * self.hd),
            q_raw: be.zeros(normed * self.hq * self.hd),
            k_raw: be.zeros(normed * self.hkv * self.hd),
            q_rstd: be.zeros(normed * self.hq),
            k_rstd: be.zeros(normed * self.hkv),
        }
    }
    /// The attention's parameters in HF order.
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = vec![&self.q];
        v.extend(self.qb.as_ref());
        v.push(&self.k);
        v.extend(self.kb.as_ref());
        v.push(&self.v);
        v.extend(self.vb.as_ref());
        v.push(&self.o);
        v.extend(self.ob.as_ref());
        v.extend(self.q_norm.iter().chain(&self.k_norm).map(|n| &n.w));
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = vec![&mut self.q];
        v.extend(self.qb.as_mut());
        v.push(&mut self.k);
        v.extend(self.kb.as_mut());
        v.push(&mut self.v);
        v.extend(self.vb.as_mut());
        v.push(&mut self.o);
        v.extend(self.ob.as_mut());
        v.extend(self.q_norm.iter_mut().chain(self.k_norm.iter_mut()).map(|n| &mut n.w));
        v
    }
    /// q and k of rows `h` `[n, d]` before the rotation: projected (with biases), then normed per
    /// head when the model has q/k norms (the projections land in `q_raw`/`k_raw` first).
    #[allow(clippy::too_many_arguments)]
    fn project_qk(&self, be: &B, q: &mut B::Buf, k: &mut B::Buf, raw: [&mut B::Buf; 2], rstd: [&mut B::Buf; 2], h: &B::Buf, n: usize) {
        let [q_raw, k_raw] = raw;
        let [q_rstd, k_rstd] = rstd;
        match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => {
                linear_b(be, q_raw, h, &self.q, &self.qb, n, false);
                linear_b(be, k_raw, h, &self.k, &self.kb, n, false);
                qn.forward(be, q, q_rstd, q_raw);
                kn.forward(be, k, k_rstd, k_raw);
            }
            _ => {
                linear_b(be, q, h, &self.q, &self.qb, n, false);
                linear_b(be, k, h, &self.k, &self.kb, n, false);
            }
        }
    }
    fn shape(&self, b: usize, t: usize) -> AttnShape {
        AttnShape { b, t, hq: self.hq, hkv: self.hkv, hd: self.hd }
    }
    /// h `[N,d]` → y += o_proj(attn(h)) (y holds the residual stream).
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, be: &B, y: &mut B::Buf, a: &mut AttnActs<B>, h: &B::Buf, b: usize, t: usize, docs: Option<&[u32]>) {
        let n = b * t;
        self.project_qk(be, &mut a.q, &mut a.k, [&mut a.q_raw, &mut a.k_raw], [&mut a.q_rstd, &mut a.k_rstd], h, n);
        linear_b(be, &mut a.v, h, &self.v, &self.vb, n, false);
        be.rope(&mut a.q, self.hq, self.hd, t, 0, &self.rope, false);
        be.rope(&mut a.k, self.hkv, self.hd, t, 0, &self.rope, false);
        be.attention(&mut a.o, &mut a.probs, &a.q, &a.k, &a.v, self.shape(b, t), docs);
        linear_b(be, y, &a.o, &self.o, &self.ob, n, true);
    }
    /// dy `[N,d]` → dh `[N,d]` (overwritten); parameter gradients accumulated.
    #[allow(clippy::too_many_arguments)]
    fn backward(&mut self, be: &B, dh: &mut B::Buf, g: &mut LayerScratch<B>, dy: &B::Buf, a: &AttnActs<B>, h: &B::Buf, b: usize, t: usize) {
        let n = b * t;
        linear_b_backward(be, &mut g.dq_o, dy, &a.o, &mut self.o, &mut self.ob, n, false); // dq_o = d(attn out)
        be.attention_backward(&mut g.dq, &mut g.dk, &mut g.dv, &mut g.scratch, &g.dq_o, &a.probs, &a.q, &a.k, &a.v, self.shape(b, t));
        be.rope(&mut g.dq, self.hq, self.hd, t, 0, &self.rope, true);
        be.rope(&mut g.dk, self.hkv, self.hd, t, 0, &self.rope, true);
        // Through the q/k norms: dq_o (free again) and dk_raw take the projections' gradients.
        let (dq, dk) = match (&mut self.q_norm, &mut self.k_norm) {
            (Some(qn), Some(kn)) => {
                qn.backward(be, &mut g.dq_o, &g.dq, &a.q_raw, &a.q_rstd, false);
                kn.backward(be, &mut g.dk_raw, &g.dk, &a.k_raw, &a.k_rstd, false);
                (&g.dq_o, &g.dk_raw)
            }
            _ => (&g.dq, &g.dk),
        };
        linear_b_backward(be, dh, dq, h, &mut self.q, &mut self.qb, n, false);
        linear_b_backward(be, dh, dk, h, &mut self.k, &mut self.kb, n, true);
        linear_b_backward(be, dh, &g.dv, h, &mut self.v, &mut self.vb, n, true);
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU MLP: down(silu(gate(h)) · up(h))

pub struct Mlp<B: Backend> {
    pub gate: Param<B>, // [F, d]
    pub up: Param<B>,   // [F, d]
    pub down: Param<B>, // [d, F]
    /// Biases `[F]`, `[F]`, `[d]` (Llama's `mlp_bias`).
    pub gate_b: Option<Param<B>>,
    pub up_b: Option<Param<B>>,
    pub down_b: Option<Param<B>>,
}

pub struct MlpActs<B: Backend> {
    g: B::Buf, // [N, F]
    u: B::Buf, // [N, F]
    a: B::Buf, // [N, F] = silu(g)·u
}

impl<B: Backend> Mlp<B> {
    fn new(be: &B, prefix: &str, c: &LlamaConfig) -> Self {
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let p = |n: &str, shape| Param::new(be, format!("{prefix}.mlp.{n}_proj.weight"), shape);
        let (gate, up, down) = (p("gate", vec![f, d]), p("up", vec![f, d]), p("down", vec![d, f]));
        let on = c.mlp_bias();
        Mlp { gate_b: bias(be, &gate, on), up_b: bias(be, &up, on), down_b: bias(be, &down, on), gate, up, down }
    }
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = vec![&self.gate];
        v.extend(self.gate_b.as_ref());
        v.push(&self.up);
        v.extend(self.up_b.as_ref());
        v.push(&self.down);
        v.extend(self.down_b.as_ref());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = vec![&mut self.gate];
        v.extend(self.gate_b.as_mut());
        v.push(&mut self.up);
        v.extend(self.up_b.as_mut());
        v.push(&mut self.down);
        v.extend(self.down_b.as_mut());
        v
    }
    fn acts(&self, be: &B, n: usize) -> MlpActs<B> {
        let f = self.gate.shape[0];
        MlpActs { g: be.zeros(n * f), u: be.zeros(n * f), a: be.zeros(n * f) }
    }
    /// h `[N,d]` → y += down(silu(gate h) · up h).
    fn forward(&self, be: &B, y: &mut B::Buf, a: &mut MlpActs<B>, h: &B::Buf, n: usize) {
        linear_b(be, &mut a.g, h, &self.gate, &self.gate_b, n, false);
        linear_b(be, &mut a.u, h, &self.up, &self.up_b, n, false);
        be.swiglu(&mut a.a, &a.g, &a.u);
        linear_b(be, y, &a.a, &self.down, &self.down_b, n, true);
    }
    #[allow(clippy::too_many_arguments)]
    fn backward(&mut self, be: &B, dh: &mut B::Buf, g: &mut LayerScratch<B>, dy: &B::Buf, a: &MlpActs<B>, h: &B::Buf, n: usize) {
        linear_b_backward(be, &mut g.da, dy, &a.a, &mut self.down, &mut self.down_b, n, false);
        be.swiglu_backward(&mut g.dg, &mut g.du, &g.da, &a.g, &a.u);
        linear_b_backward(be, dh, &g.dg, h, &mut self.gate, &mut self.gate_b, n, false);
        linear_b_backward(be, dh, &g.du, h, &mut self.up, &mut self.up_b, n, true);
    }
}

// ---------------------------------------------------------------------------------------------
// Block: x + attn(norm(x)), then + mlp(norm(·))

pub struct Block<B: Backend> {
    pub input_norm: RmsNorm<B>,
    pub attn: Attention<B>,
    pub post_norm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

pub struct BlockActs<B: Backend> {
    h1: B::Buf,    // [N,d] input_norm(x)
    rstd1: B::Buf, // [N]
    attn: AttnActs<B>,
    x_mid: B::Buf, // [N,d] x + attention
    h2: B::Buf,    // [N,d] post_norm(x_mid)
    rstd2: B::Buf, // [N]
    mlp: MlpActs<B>,
}

impl<B: Backend> Block<B> {
    fn new(be: &B, i: usize, c: &LlamaConfig) -> Self {
        let prefix = format!("model.layers.{i}");
        let d = c.hidden_size;
        Block {
            input_norm: RmsNorm::new(be, format!("{prefix}.input_layernorm.weight"), d, c.rms_norm_eps),
            attn: Attention::new(be, &prefix, c),
            post_norm: RmsNorm::new(be, format!("{prefix}.post_attention_layernorm.weight"), d, c.rms_norm_eps),
            mlp: Mlp::new(be, &prefix, c),
        }
    }
    fn acts(&self, be: &B, b: usize, t: usize) -> BlockActs<B> {
        let (n, d) = (b * t, self.input_norm.w.shape[0]);
        BlockActs {
            h1: be.zeros(n * d),
            rstd1: be.zeros(n),
            attn: self.attn.acts(be, b, t),
            x_mid: be.zeros(n * d),
            h2: be.zeros(n * d),
            rstd2: be.zeros(n),
            mlp: self.mlp.acts(be, n),
        }
    }
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = vec![&self.input_norm.w];
        v.extend(self.attn.params());
        v.push(&self.post_norm.w);
        v.extend(self.mlp.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = vec![&mut self.input_norm.w];
        v.extend(self.attn.params_mut());
        v.push(&mut self.post_norm.w);
        v.extend(self.mlp.params_mut());
        v
    }
    /// x `[N,d]` → y `[N,d]`.
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, be: &B, y: &mut B::Buf, a: &mut BlockActs<B>, x: &B::Buf, b: usize, t: usize, docs: Option<&[u32]>) {
        self.input_norm.forward(be, &mut a.h1, &mut a.rstd1, x);
        be.copy(&mut a.x_mid, x);
        self.attn.forward(be, &mut a.x_mid, &mut a.attn, &a.h1, b, t, docs);
        self.post_norm.forward(be, &mut a.h2, &mut a.rstd2, &a.x_mid);
        be.copy(y, &a.x_mid);
        self.mlp.forward(be, y, &mut a.mlp, &a.h2, b * t);
    }
    /// `dx` `[N,d]` holds dL/dy on entry and dL/dx on exit (the residual stream's gradient);
    /// `dh` `[N,d]` is scratch for the gradient of a normed input.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        be: &B,
        dx: &mut B::Buf,
        dh: &mut B::Buf,
        g: &mut LayerScratch<B>,
        a: &BlockActs<B>,
        x: &B::Buf,
        b: usize,
        t: usize,
    ) {
        self.mlp.backward(be, dh, g, dx, &a.mlp, &a.h2, b * t);
        self.post_norm.backward(be, dx, dh, &a.x_mid, &a.rstd2, true);
        self.attn.backward(be, dh, g, dx, &a.attn, &a.h1, b, t);
        self.input_norm.backward(be, dx, dh, x, &a.rstd1, true);
    }
}

/// Gradient buffers shared by all blocks during the backward (allocated once per shape).
pub struct Scratch<B: Backend> {
    dx: B::Buf, // [N,d] gradient of the residual stream
    dh: B::Buf, // [N,d] gradient of a normed input
    rest: LayerScratch<B>,
}

/// Per-layer gradient scratch, reused by every block.
pub struct LayerScratch<B: Backend> {
    dq_o: B::Buf,    // [N,qd] gradient of the attention output
    dq: B::Buf,      // [N,qd]
    dk: B::Buf,      // [N,kvd]
    dv: B::Buf,      // [N,kvd]
    dk_raw: B::Buf,  // [N,kvd] gradient of k before its norm (empty without q/k norms)
    scratch: B::Buf, // [B,Hkv,T,T]
    da: B::Buf,      // [N,F]
    dg: B::Buf,      // [N,F]
    du: B::Buf,      // [N,F]
}

// ---------------------------------------------------------------------------------------------
// The whole model

/// Activations of one (batch, time) shape: allocated once, reused every step.
pub struct Workspace<B: Backend> {
    b: usize,
    t: usize,
    ids: Vec<u32>,
    xs: Vec<B::Buf>, // L+1 × [N,d]: the residual stream entering each block, and leaving the last
    blocks: Vec<BlockActs<B>>,
    hf: B::Buf,     // [N,d] final norm
    rstdf: B::Buf,  // [N]
    logits: B::Buf, // [N,V]; after the loss it holds dL/dlogits (empty for a classifier)
    values: B::Buf, // [N] the scalar head's outputs (empty without one)
    grads: Option<Scratch<B>>,
}

pub struct Llama<B: Backend> {
    pub cfg: LlamaConfig,
    pub be: B,
    pub embed: Param<B>, // [V,d]
    pub blocks: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    pub lm_head: Option<Param<B>>, // [V,d]; None when tied to the embedding or a classifier
    /// `score.weight` [1,d]: the scalar head of a reward model (HF `LlamaForSequenceClassification`,
    /// which has no LM head) or a policy's value head (beside its LM head).
    pub score: Option<Param<B>>,
    /// Where given, a token that separates documents in training rows: each position attends
    /// only to the positions since the last separator before it (packed SFT conversations).
    /// A training setting, not saved; decoding (one conversation per cache) ignores it.
    pub doc_sep: Option<u32>,
    ws: Option<Workspace<B>>,
}

/// For ids `[B, T]`: the position in its row where each position's document starts, a document
/// running up to and including its separator `sep`.
pub fn doc_starts(ids: &[u32], t: usize, sep: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    for row in ids.chunks(t) {
        let mut start = 0u32;
        for (i, &id) in row.iter().enumerate() {
            out.push(start);
            if id == sep {
                start = i as u32 + 1;
            }
        }
    }
    out
}

fn normal(rng: &mut ChaCha8Rng, std: f32) -> f32 {
    // Box–Muller
    let u1: f32 = rng.random::<f32>().max(1e-12);
    let u2: f32 = rng.random::<f32>();
    std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

impl<B: Backend> Llama<B> {
    /// A model with zero weights and unit norms (for loading a checkpoint into).
    pub fn empty(be: B, cfg: LlamaConfig) -> Self {
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let blocks = (0..cfg.num_hidden_layers).map(|i| Block::new(&be, i, &cfg)).collect();
        let embed = Param::new(&be, "model.embed_tokens.weight".into(), vec![v, d]);
        let norm = RmsNorm::new(&be, "model.norm.weight".into(), d, cfg.rms_norm_eps);
        let classifier = cfg.is_classifier();
        let lm_head = (!cfg.tie_word_embeddings && !classifier).then(|| Param::new(&be, "lm_head.weight".into(), vec![v, d]));
        let score = classifier.then(|| Param::new(&be, "score.weight".into(), vec![1, d]));
        Llama { cfg, be, embed, blocks, norm, lm_head, score, doc_sep: None, ws: None }
    }

    /// Turns a causal LM into a reward model: drops the LM head, adds a zero scalar head, and
    /// marks the config `LlamaForSequenceClassification` (one label).
    pub fn into_classifier(mut self) -> Self {
        self.cfg.architectures = vec![format!("{}ForSequenceClassification", self.cfg.family().unwrap_or("Llama"))];
        self.cfg.tie_word_embeddings = false;
        self.cfg.id2label = Some([("0".to_string(), "LABEL_0".to_string())].into());
        self.cfg.pad_token_id = Some(0);
        self.lm_head = None;
        self.ws = None;
        // N(0, 1/d): the trunk gets a gradient from the first step (a zero head would give none).
        let d = self.cfg.hidden_size;
        let mut rng = ChaCha8Rng::seed_from_u64(0x5c0e);
        let w: Vec<f32> = (0..d).map(|_| normal(&mut rng, 1.0 / (d as f32).sqrt())).collect();
        let mut score = Param::new(&self.be, "score.weight".into(), vec![1, d]);
        *score.w = self.be.upload(&w);
        self.score = Some(score);
        self
    }

    /// Adds a zero scalar head beside the LM head (a policy's value head).
    pub fn add_value_head(&mut self) {
        self.ws = None;
        self.score = Some(Param::new(&self.be, "score.weight".into(), vec![1, self.cfg.hidden_size]));
    }

    /// Random initialisation: N(0, 0.02²) weights, output projections scaled by 1/√(2L) (GPT-2).
    pub fn new(be: B, cfg: LlamaConfig, seed: u64) -> Self {
        let mut m = Self::empty(be, cfg);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let resid_std = 0.02 / (2.0 * m.cfg.num_hidden_layers as f32).sqrt();
        let be = &m.be;
        let mut init = |p: &mut Param<B>, std: f32| {
            let data: Vec<f32> = (0..p.numel()).map(|_| normal(&mut rng, std)).collect();
            *p.w = be.upload(&data);
        };
        init(&mut m.embed, 0.02);
        for blk in &mut m.blocks {
            for p in [&mut blk.attn.q, &mut blk.attn.k, &mut blk.attn.v, &mut blk.mlp.gate, &mut blk.mlp.up] {
                init(p, 0.02);
            }
            init(&mut blk.attn.o, resid_std);
            init(&mut blk.mlp.down, resid_std);
        }
        if let Some(h) = &mut m.lm_head {
            init(h, 0.02);
        }
        m
    }

    /// Every parameter, in HF order (embedding, layers, final norm, LM head).
    pub fn params(&self) -> Vec<&Param<B>> {
        let mut v = vec![&self.embed];
        for b in &self.blocks {
            v.extend(b.params());
        }
        v.push(&self.norm.w);
        v.extend(self.lm_head.as_ref());
        v.extend(self.score.as_ref());
        v
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = vec![&mut self.embed];
        for b in &mut self.blocks {
            v.extend(b.params_mut());
        }
        v.push(&mut self.norm.w);
        v.extend(self.lm_head.as_mut());
        v.extend(self.score.as_mut());
        v
    }

    /// Zeroes every gradient (allocating them on first use). A frozen matrix has none; frozen
    /// norms and biases keep theirs (their backward writes it, and nothing reads it).
    pub fn zero_grad(&mut self) {
        let be = self.be.clone();
        let zero = |p: &mut Param<B>| {
            if be.len(&p.g) != p.numel() {
                p.g = be.zeros(p.numel());
            } else {
                be.fill(&mut p.g, 0.0);
            }
        };
        for p in self.params_mut() {
            if p.frozen && p.shape.len() == 2 {
                p.g = be.zeros(0);
            } else {
                zero(p);
            }
            if let Some(l) = p.lora.as_deref_mut() {
                zero(&mut l.a);
                zero(&mut l.b);
            }
        }
    }

    /// Whether gradient buffers exist (the final norm always has one after `zero_grad`).
    fn grads_ready(&self) -> bool {
        self.be.len(&self.norm.w.g) != 0
    }

    fn workspace(&mut self, b: usize, t: usize, grads: bool) -> Workspace<B> {
        let be = &self.be;
        let (n, d, v) = (b * t, self.cfg.hidden_size, self.cfg.vocab_size);
        let ws = match self.ws.take() {
            Some(ws) if ws.b == b && ws.t == t => ws,
            _ => Workspace {
                b,
                t,
                ids: vec![0; n],
                xs: (0..=self.blocks.len()).map(|_| be.zeros(n * d)).collect(),
                blocks: self.blocks.iter().map(|blk| blk.acts(be, b, t)).collect(),
                hf: be.zeros(n * d),
                rstdf: be.zeros(n),
                logits: be.zeros(if self.cfg.is_classifier() { 0 } else { n * v }),
                values: be.zeros(if self.score.is_some() { n } else { 0 }),
                grads: None,
            },
        };
        let mut ws = ws;
        if grads && ws.grads.is_none() {
            let (qd, kvd) = (self.cfg.num_attention_heads * self.cfg.head_dim(), self.cfg.kv_heads() * self.cfg.head_dim());
            let f = self.cfg.intermediate_size;
            ws.grads = Some(Scratch {
                dx: be.zeros(n * d),
                dh: be.zeros(n * d),
                rest: LayerScratch {
                    dq_o: be.zeros(n * qd),
                    dq: be.zeros(n * qd),
                    dk: be.zeros(n * kvd),
                    dv: be.zeros(n * kvd),
                    dk_raw: be.zeros(if self.cfg.qk_norm() { n * kvd } else { 0 }),
                    scratch: be.zeros(b * self.cfg.kv_heads() * t * t),
                    da: be.zeros(n * f),
                    dg: be.zeros(n * f),
                    du: be.zeros(n * f),
                },
            });
        }
        ws
    }

    fn head(&self) -> &Param<B> {
        assert!(!self.cfg.is_classifier(), "a reward model has no LM head");
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    fn check_ids(&self, ids: &[u32], b: usize, t: usize) {
        assert_eq!(ids.len(), b * t, "expected {b}x{t} token ids, got {}", ids.len());
        assert!(t <= self.cfg.max_position_embeddings, "sequence of {t} exceeds the context {}", self.cfg.max_position_embeddings);
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            panic!("token id {bad} out of range for vocab {}", self.cfg.vocab_size);
        }
    }

    fn forward_ws(&self, ws: &mut Workspace<B>, ids: &[u32]) {
        self.forward_trunk(ws, ids);
        linear(&self.be, &mut ws.logits, &ws.hf, self.head(), ws.b * ws.t, false);
    }

    /// Embedding, blocks and final norm: `ws.hf` [N,d].
    fn forward_trunk(&self, ws: &mut Workspace<B>, ids: &[u32]) {
        let be = &self.be;
        let (b, t) = (ws.b, ws.t);
        ws.ids.copy_from_slice(ids);
        let docs = self.doc_sep.map(|sep| doc_starts(ids, t, sep));
        be.embedding(&mut ws.xs[0], &self.embed.w, ids, self.cfg.hidden_size);
        for (l, blk) in self.blocks.iter().enumerate() {
            let (before, after) = ws.xs.split_at_mut(l + 1);
            blk.forward(be, &mut after[0], &mut ws.blocks[l], &before[l], b, t, docs.as_deref());
        }
        self.norm.forward(be, &mut ws.hf, &mut ws.rstdf, &ws.xs[self.blocks.len()]);
    }

    /// Logits `[B·T, V]` for token ids `[B, T]` (positions 0..T).
    pub fn forward(&mut self, ids: &[u32], b: usize, t: usize) -> Vec<f32> {
        let be = self.be.clone();
        be.download(self.forward_buf(ids, b, t))
    }

    /// [`Llama::forward`] leaving the logits `[B·T, V]` in the workspace (no copy to the host:
    /// a large vocabulary's logits are hundreds of MB), valid until the next call.
    pub fn forward_buf(&mut self, ids: &[u32], b: usize, t: usize) -> &B::Buf {
        self.check_ids(ids, b, t);
        let mut ws = self.workspace(b, t, false);
        self.forward_ws(&mut ws, ids);
        &self.ws.insert(ws).logits
    }

    /// Log-probabilities of `targets` under the model, per position (0 where IGNORE).
    pub fn logprobs(&mut self, ids: &[u32], targets: &[u32], b: usize, t: usize) -> Vec<f32> {
        self.check_ids(ids, b, t);
        let mut ws = self.workspace(b, t, false);
        self.forward_ws(&mut ws, ids);
        let lp = self.be.target_logprobs(&ws.logits, targets, self.cfg.vocab_size);
        self.ws = Some(ws);
        lp
    }

    /// One forward and backward of the cross-entropy loss. Gradients are *accumulated* into the
    /// parameters' `g` (call `zero_grad` first); the loss gradient is `scale` per counted target
    /// (`None`: 1/count, the mean). Returns (mean loss over counted targets, count).
    pub fn forward_backward(&mut self, ids: &[u32], targets: &[u32], b: usize, t: usize, scale: Option<f32>) -> (f32, usize) {
        self.check_ids(ids, b, t);
        assert_eq!(targets.len(), b * t);
        if !self.grads_ready() {
            self.zero_grad();
        }
        let mut ws = self.workspace(b, t, true);
        self.forward_ws(&mut ws, ids);
        let count = targets.iter().filter(|&&x| x != IGNORE).count();
        let scale = scale.unwrap_or(1.0 / count.max(1) as f32);
        let (sum, count) = self.be.cross_entropy(&mut ws.logits, targets, self.cfg.vocab_size, scale);
        self.backward_ws(&mut ws, true, None);
        self.ws = Some(ws);
        ((sum / count.max(1) as f64) as f32, count)
    }

    /// Backward to every parameter from `dL/dlogits` (in `ws.logits`, when `dlogits`) and from
    /// the scalar head's `dvalues`.
    fn backward_ws(&mut self, ws: &mut Workspace<B>, dlogits: bool, dvalues: Option<&B::Buf>) {
        let (b, t) = (ws.b, ws.t);
        let n = b * t;
        let be = self.be.clone();
        let mut g = ws.grads.take().expect("workspace has gradient buffers");
        let nl = self.blocks.len();
        // LM head (tied: into the embedding's gradient) and scalar head, then the final norm.
        if dlogits {
            let head = match &mut self.lm_head {
                Some(h) => h,
                None => &mut self.embed,
            };
            linear_backward(&be, &mut g.dh, &ws.logits, &ws.hf, head, n, false);
        }
        if let Some(dv) = dvalues {
            let score = self.score.as_mut().expect("dvalues without a scalar head");
            linear_backward(&be, &mut g.dh, dv, &ws.hf, score, n, dlogits);
        }
        assert!(dlogits || dvalues.is_some(), "backward needs a gradient");
        self.norm.backward(&be, &mut g.dx, &g.dh, &ws.xs[nl], &ws.rstdf, false);
        for l in (0..nl).rev() {
            self.blocks[l].backward(&be, &mut g.dx, &mut g.dh, &mut g.rest, &ws.blocks[l], &ws.xs[l], b, t);
        }
        if !self.embed.frozen {
            be.embedding_backward(&mut self.embed.g, &g.dx, &ws.ids, self.cfg.hidden_size);
        }
        ws.grads = Some(g);
    }
}
