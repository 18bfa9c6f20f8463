//! The backend interface: the handful of kernels the Llama model needs, each forward and backward.
//!
//! The model (`model.rs`) is written against this trait only. A backend owns its buffer type:
//! `Vec<f32>` on the CPU (`cpu.rs`); a CUDA backend would hold device pointers and implement the
//! same calls with cuBLAS and run-time compiled kernels. Shapes are passed explicitly, row-major,
//! and the shape comments use N = batch·time rows.

/// Layout of an operand of `matmul`: as stored, or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// Arithmetic of a backend's matmuls. `Bf16` is mixed precision as bf16 autocast does it: the
/// operands are rounded to bf16 and the products accumulated in fp32; weights, optimizer moments,
/// activations, norms, softmax and the loss stay fp32.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "fp32" | "f32" => Some(Precision::Fp32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Target id that contributes no loss and no gradient (e.g. the last position, masked prompt tokens).
pub const IGNORE: u32 = u32::MAX;

/// Hyper-parameters of one AdamW update (decoupled weight decay, bias-corrected moments).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count for bias correction.
    pub step: u64,
}

/// New rows of one sequence in a decoding call: `n` rows from row `row` of the call's q, k, v and
/// out, at positions `pos0..pos0 + n` of the sequence's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub row: usize,
    pub n: usize,
    pub pos0: usize,
}

/// Shape of one attention call: `b` sequences of `t` positions, `hq` query heads sharing
/// `hkv` key/value heads (GQA when hkv < hq), `hd` dims per head.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub b: usize,
    pub t: usize,
    pub hq: usize,
    pub hkv: usize,
    pub hd: usize,
}

/// Rotary embedding frequencies: HF's `inv_freq_i = theta^(−2i/hd)`, optionally rescaled the way
/// `rope_type` "linear" (all divided by `factor`) or "llama3" (Llama 3.1's banded rescaling) does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub theta: f32,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    Linear { factor: f32 },
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_context: f32 },
}

impl Rope {
    pub fn plain(theta: f32) -> Rope {
        Rope { theta, scaling: RopeScaling::None }
    }

    /// The `hd/2` inverse frequencies, in f32 step by step as `transformers` computes them.
    pub fn inv_freq(&self, hd: usize) -> Vec<f32> {
        let base = (0..hd / 2).map(|i| 1.0f32 / self.theta.powf((2 * i) as f32 / hd as f32));
        match self.scaling {
            RopeScaling::None => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor: lo, high_freq_factor: hi, original_context: old } => base
                .map(|f| {
                    // Wavelengths shorter than old/hi keep their frequency, longer than old/lo are
                    // divided by `factor`, and the band between is interpolated.
                    let wavelen = std::f32::consts::TAU / f;
                    let (low_wavelen, high_wavelen) = (old / lo, old / hi);
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect(),
        }
    }

    /// A hashable identity of the frequencies (for caching cos/sin tables).
    pub fn key(&self) -> [u32; 5] {
        match self.scaling {
            RopeScaling::None => [self.theta.to_bits(), 0, 0, 0, 0],
            RopeScaling::Linear { factor } => [self.theta.to_bits(), 1, factor.to_bits(), 0, 0],
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => [
                self.theta.to_bits(),
                factor.to_bits() ^ 2,
                low_freq_factor.to_bits(),
                high_freq_factor.to_bits(),
                original_context.to_bits(),
            ],
        }
    }
}

/// A weight tensor's values, and a slot where a backend keeps them in its matmul's layout (the
/// CPU's bf16 panels), packed on first use and reused by every matmul after it. Any mutable
/// access (an optimizer step, a load) marks the slot stale, so a packed copy is never used
/// after the values change; the next matmul repacks into the same memory.
pub struct Weight<T> {
    data: T,
    packed: std::sync::Mutex<Vec<u32>>,
    fresh: std::sync::atomic::AtomicBool,
}

impl<T> Weight<T> {
    pub fn new(data: T) -> Self {
        Weight { data, packed: std::sync::Mutex::new(Vec::new()), fresh: std::sync::atomic::AtomicBool::new(false) }
    }

    /// The packed copy, made by `pack` (into the slot's memory) unless it is fresh: the values
    /// have not been borrowed mutably since it was made.
    pub fn packed<R>(&self, pack: impl FnOnce(&T, &mut Vec<u32>), with: impl FnOnce(&[u32]) -> R) -> R {
        use std::sync::atomic::Ordering;
        let mut slot = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        if !self.fresh.load(Ordering::Acquire) {
            pack(&self.data, &mut slot);
            self.fresh.store(true, Ordering::Release);
        }
        with(&slot)
    }
}

impl<T> std::ops::Deref for Weight<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T> std::ops::DerefMut for Weight<T> {
    fn deref_mut(&mut self) -> &mut T {
        *self.fresh.get_mut() = false;
        &mut self.data
    }
}

/// Backends are small cloneable handles (the CPU one is a unit struct).
pub trait Backend: Send + Sync + Clone {
    type Buf: Send + Sync;
    /// A KV cache's storage, in the precision the backend keeps it in (f16 on the CPU).
    type Kv: Send + Sync;

    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, data: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Makes `buf` hold `len` values (contents unspecified); a backend may keep its memory.
    fn resize(&self, buf: &mut Self::Buf, len: usize) {
        if self.len(buf) != len {
            *buf = self.zeros(len);
        }
    }
    /// `download` into a reused host vector.
    fn download_into(&self, buf: &Self::Buf, dst: &mut Vec<f32>) {
        *dst = self.download(buf);
    }
    fn fill(&self, buf: &mut Self::Buf, value: f32);
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// `dst += src`.
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf);
    fn scale(&self, buf: &mut Self::Buf, s: f32);
    /// Sum of squares (for the global gradient norm).
    fn sum_sq(&self, buf: &Self::Buf) -> f64;

    /// `c[m,n] = op(a) · op(b)` (or `+=` when `accumulate`), where `op(a)` is `[m,k]` and `op(b)` is `[k,n]`.
    #[allow(clippy::too_many_arguments)]
    fn matmul(&self, c: &mut Self::Buf, a: &Self::Buf, ta: Op, b: &Self::Buf, tb: Op, m: usize, n: usize, k: usize, accumulate: bool);

    /// `c[m,n] (+)= a[m,k] · w[n,k]ᵀ`, a linear layer's forward: `matmul` with the weight, which
    /// a backend may keep packed between calls (`Weight::packed`). The same bits as `matmul`.
    #[allow(clippy::too_many_arguments)]
    fn matmul_weight(&self, c: &mut Self::Buf, a: &Self::Buf, w: &Weight<Self::Buf>, m: usize, n: usize, k: usize, accumulate: bool) {
        self.matmul(c, a, Op::N, w, Op::T, m, n, k, accumulate)
    }

    /// `y[m,out] (+)= x[m,inp] · w[out,inp]ᵀ` for the few rows of a decoding step (one per live
    /// sequence). Unlike `matmul`, row i's result must not depend on the other rows, so that a
    /// sequence decodes the same tokens in any batch. Defaults to `matmul`.
    #[allow(clippy::too_many_arguments)]
    fn linear_rows(&self, y: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, m: usize, out: usize, inp: usize, accumulate: bool) {
        self.matmul(y, x, Op::N, w, Op::T, m, out, inp, accumulate)
    }

    /// `out[n,:] = table[ids[n],:]`, table `[vocab, d]`.
    fn embedding(&self, out: &mut Self::Buf, table: &Self::Buf, ids: &[u32], d: usize);
    /// `dtable[ids[n],:] += dout[n,:]`.
    fn embedding_backward(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &[u32], d: usize);

    /// `y = x / rms(x) · w` over rows of `d`; stores `rstd[n] = 1/rms(x[n])`.
    fn rmsnorm(&self, y: &mut Self::Buf, rstd: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, d: usize, eps: f32);
    /// `dx (+)= ∂L/∂x`, `dw += ∂L/∂w` given `dy`. `dx` is accumulated when `accumulate` (residual stream).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        d: usize,
        accumulate: bool,
    );

    /// Rotary embedding in place on `x[n, heads, hd]` (HF "rotate_half" pairing: i with i + hd/2);
    /// row n is at position `pos0 + n % t`. `inverse` applies the transpose rotation (the backward).
    #[allow(clippy::too_many_arguments)]
    fn rope(&self, x: &mut Self::Buf, heads: usize, hd: usize, t: usize, pos0: usize, rope: &Rope, inverse: bool);

    /// Causal softmax attention. q `[N, hq·hd]`, k/v `[N, hkv·hd]`, out `[N, hq·hd]`,
    /// probs `[b, hq, t, t]` kept for the backward. `docs` `[N]`, where given: the position in
    /// its row where each position's document starts; a position attends to its own document
    /// only (packed rows of several conversations). The backward needs nothing more, since the
    /// probabilities it reads are zero across documents.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        out: &mut Self::Buf,
        probs: &mut Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        s: AttnShape,
        docs: Option<&[u32]>,
    );
    /// Writes dq, dk, dv (not accumulated). `scratch` holds at least `b·hkv·t·t` floats.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
        scratch: &mut Self::Buf,
        dout: &Self::Buf,
        probs: &Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        s: AttnShape,
    );

    /// `y[n, :] += bias` over rows of `bias.len()` (a linear layer's bias).
    fn add_bias(&self, y: &mut Self::Buf, bias: &Self::Buf);
    /// `dbias += Σ_n dy[n, :]` (its backward).
    fn bias_backward(&self, dbias: &mut Self::Buf, dy: &Self::Buf);

    /// `a = silu(g) · u`.
    fn swiglu(&self, a: &mut Self::Buf, g: &Self::Buf, u: &Self::Buf);
    /// `dg, du` from `da` (in place of nothing; all three are written).
    fn swiglu_backward(&self, dg: &mut Self::Buf, du: &mut Self::Buf, da: &Self::Buf, g: &Self::Buf, u: &Self::Buf);

    /// Softmax cross-entropy over rows of `v` logits, fused with its backward: returns the summed
    /// loss and the number of counted targets, and overwrites `logits` with `dloss/dlogits · scale`
    /// (rows with target IGNORE get zeros). `scale` is usually 1/(number of counted targets).
    fn cross_entropy(&self, logits: &mut Self::Buf, targets: &[u32], v: usize, scale: f32) -> (f64, usize);

    /// Per-row log-softmax values of the targets, without touching the logits (for RL and evals).
    fn target_logprobs(&self, logits: &Self::Buf, targets: &[u32], v: usize) -> Vec<f32>;

    /// Per-row log-softmax value of the target and entropy of the softmax (both 0 where the
    /// target is IGNORE), without touching the logits (for RL: the policy's log-probs).
    fn logprobs_entropy(&self, logits: &Self::Buf, targets: &[u32], v: usize) -> (Vec<f32>, Vec<f32>);

    /// Backward of per-row target log-probs: overwrites `logits` with
    /// `dL/dlogits = dlogp[i] · (onehot(target_i) − softmax_i)` (zeros where IGNORE).
    fn logprob_backward(&self, logits: &mut Self::Buf, targets: &[u32], dlogp: &[f32], v: usize);

    /// Rotary embedding in place on rows `x[i, heads, hd]` at explicit positions (batched decoding).
    fn rope_at(&self, x: &mut Self::Buf, heads: usize, hd: usize, positions: &[usize], rope: &Rope);
    /// A cache of `n` values, zeros.
    fn kv_zeros(&self, n: usize) -> Self::Kv;
    /// For each segment i, rows `row..row + n` of `src` `[rows, row_len]` into cache `dsts[i]` at
    /// rows `pos0..pos0 + n`, in the cache's precision.
    fn kv_append(&self, dsts: &mut [&mut Self::Kv], src: &Self::Buf, row_len: usize, segs: &[Segment]);
    /// `dst[..len] = src[..len]` (prefix caching).
    fn kv_copy_prefix(&self, dst: &mut Self::Kv, src: &Self::Kv, len: usize);
    /// Decoding attention: query row `row + j` of segment i (q `[rows, hq·hd]`) attends causally
    /// to the first `pos0 + j + 1` rows of its sequence's caches `ks[i]`, `vs[i]`
    /// `[capacity, hkv·hd]`, which already hold its new rows; out `[rows, hq·hd]`. The segments
    /// tile the rows in order.
    #[allow(clippy::too_many_arguments)]
    fn attention_segments(
        &self,
        out: &mut Self::Buf,
        q: &Self::Buf,
        ks: &[&Self::Kv],
        vs: &[&Self::Kv],
        segs: &[Segment],
        hq: usize,
        hkv: usize,
        hd: usize,
    );
    /// One fused AdamW update of a parameter tensor and its moments.
    fn adamw(&self, p: &mut Self::Buf, g: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: AdamWStep);
}
