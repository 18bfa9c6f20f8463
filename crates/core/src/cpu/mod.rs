//! The CPU backend: fp32 matmul from the `gemm` crate (AVX-512 kernels, runtime-dispatched), bf16
//! matmul from our AVX512-BF16 kernel (`bf16.rs`) when the backend's precision says so, threads
//! from `rayon`, and fused elementwise kernels written as plain loops that LLVM vectorises.
//!
//! Every hot loop is compiled several times by `multiversion` (AVX-512, AVX2+FMA, baseline) and
//! picked at run time, so one binary runs everywhere and uses the widest vectors it finds.
//! Reductions use 16 independent accumulators in a fixed order: results are vectorised and
//! bit-identical from run to run whatever the number of threads (exact resume depends on it).

use half::f16;
use multiversion::multiversion;
use rayon::prelude::*;

use crate::backend::{AdamWStep, AttnShape, Backend, Op, Precision, Rope, Segment, Weight, IGNORE};

mod attention;
pub mod bf16;
mod kv;
mod rope;
pub mod skinny;
use attention::{attention_backward_cpu, attention_forward};
use rope::{rope_rows, rope_table_cached};

/// Rows handed to one rayon task in row-parallel kernels.
const ROWS_PER_TASK: usize = 16;
/// Query rows per block in the causal attention kernel: blocks above the diagonal are skipped.
const ATTN_BLOCK: usize = 64;

// ---------------------------------------------------------------------------------------------
// Scalar building blocks (always inlined into the multiversioned loops that call them).

/// e^x for x in float range, accurate to ~2e-7 relative: 2^n · p(r), r = x − n·ln2 ∈ [−ln2/2, ln2/2],
/// p a degree-6 Taylor polynomial. Branch-free so that it vectorises.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split in two for an exact n·ln2 (Cody–Waite)
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp_fast(-x))
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    acc.iter().sum::<f32>() + s
}

#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let c = a.chunks_exact(16);
    let r = c.remainder();
    for x in c {
        for i in 0..16 {
            acc[i] = acc[i].max(x[i]);
        }
    }
    r.iter().chain(acc.iter()).fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// Writes `x[i] = e^(x[i]·scale − shift)` and returns the sum.
#[inline(always)]
fn exp_shift_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut c = x.chunks_exact_mut(16);
    for x in &mut c {
        for i in 0..16 {
            x[i] = exp_fast(x[i] * scale - shift);
            acc[i] += x[i];
        }
    }
    let mut s = 0.0;
    for x in c.into_remainder() {
        *x = exp_fast(*x * scale - shift);
        s += *x;
    }
    acc.iter().sum::<f32>() + s
}

/// The largest value of `x` (vectorised; for sampling).
#[multiversion(targets = "simd")]
pub(crate) fn max_of(x: &[f32]) -> f32 {
    max(x)
}

/// `dst[i] = e^(src[i]·scale − shift)`, returning Σ dst (vectorised; for sampling).
#[multiversion(targets = "simd")]
pub(crate) fn exp_weights(dst: &mut [f32], src: &[f32], scale: f32, shift: f32) -> f32 {
    dst.copy_from_slice(src);
    exp_shift_sum(dst, scale, shift)
}

/// Shared mutable pointer for kernels whose parallel tasks write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// Taking `self` makes closures capture the whole (Send + Sync) wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Matmul: a thin layer over `gemm` with explicit strides.

/// A strided matrix view: element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst[m,n] = (accumulate ? dst : 0) + alpha · lhs[m,k] · rhs[k,n]`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_view(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: View,
    rhs: View,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
) {
    let par = if parallel && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    gemm::gemm(m, n, k, dst, 1, dst_rs, accumulate, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs, 1.0, alpha, false, false, false, par);
}

/// `c = op(a)·op(b)` (+= when accumulate) for dense row-major buffers.
#[allow(clippy::too_many_arguments)]
pub fn matmul(c: &mut [f32], a: &[f32], ta: Op, b: &[f32], tb: Op, m: usize, n: usize, k: usize, accumulate: bool) {
    assert_eq!(c.len(), m * n, "matmul: c has {} elements, expected {m}x{n}", c.len());
    assert_eq!(a.len(), m * k, "matmul: a has {} elements, expected {m}x{k}", a.len());
    assert_eq!(b.len(), k * n, "matmul: b has {} elements, expected {k}x{n}", b.len());
    // op(a)[i,p]: stored [m,k] (rs=k, cs=1) or [k,m] transposed (rs=1, cs=m).
    let lhs = match ta {
        Op::N => View { ptr: a.as_ptr(), rs: k as isize, cs: 1 },
        Op::T => View { ptr: a.as_ptr(), rs: 1, cs: m as isize },
    };
    let rhs = match tb {
        Op::N => View { ptr: b.as_ptr(), rs: n as isize, cs: 1 },
        Op::T => View { ptr: b.as_ptr(), rs: 1, cs: k as isize },
    };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    unsafe { gemm_view(m, n, k, c.as_mut_ptr(), n as isize, lhs, rhs, 1.0, accumulate, true) }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

#[multiversion(targets = "simd")]
fn rmsnorm_rows(y: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], d: usize, eps: f32) {
    for ((y, r), x) in y.chunks_exact_mut(d).zip(rstd.iter_mut()).zip(x.chunks_exact(d)) {
        let inv = 1.0 / (dot(x, x) / d as f32 + eps).sqrt();
        *r = inv;
        for i in 0..d {
            y[i] = x[i] * inv * w[i];
        }
    }
}

/// Backward of a block of rows: writes/accumulates dx and returns this block's share of dw.
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
fn rmsnorm_backward_rows(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], rstd: &[f32], d: usize, accumulate: bool) {
    for (((dx, dy), x), &r) in dx.chunks_exact_mut(d).zip(dy.chunks_exact(d)).zip(x.chunks_exact(d)).zip(rstd) {
        // y_i = x_i·r·w_i, r = (mean x² + eps)^-½  ⇒  dx_i = r·w_i·dy_i − r³/d · x_i · Σ_j dy_j w_j x_j
        let mut acc = 0.0f32;
        for i in 0..d {
            acc += dy[i] * w[i] * x[i];
        }
        let c = r * r * r * acc / d as f32;
        if accumulate {
            for i in 0..d {
                dx[i] += r * w[i] * dy[i] - c * x[i];
            }
        } else {
            for i in 0..d {
                dx[i] = r * w[i] * dy[i] - c * x[i];
            }
        }
        for i in 0..d {
            dw[i] += dy[i] * x[i] * r;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

#[multiversion(targets = "simd")]
fn swiglu_chunk(a: &mut [f32], g: &[f32], u: &[f32]) {
    for i in 0..a.len() {
        a[i] = silu(g[i]) * u[i];
    }
}

#[multiversion(targets = "simd")]
fn swiglu_backward_chunk(dg: &mut [f32], du: &mut [f32], da: &[f32], g: &[f32], u: &[f32]) {
    for i in 0..da.len() {
        // silu(x) = x·σ(x), silu'(x) = σ(x)·(1 + x·(1 − σ(x)))
        let sig = 1.0 / (1.0 + exp_fast(-g[i]));
        du[i] = da[i] * g[i] * sig;
        dg[i] = da[i] * u[i] * sig * (1.0 + g[i] * (1.0 - sig));
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with its softmax, fused with the backward.

/// Returns the row's loss (0 when ignored) and overwrites the row with its gradient · scale.
#[multiversion(targets = "simd")]
fn cross_entropy_row(row: &mut [f32], target: u32, scale: f32) -> f32 {
    if target == IGNORE {
        row.fill(0.0);
        return 0.0;
    }
    let t = target as usize;
    let m = max(row);
    let xt = row[t];
    let s = exp_shift_sum(row, 1.0, m);
    let loss = s.ln() + m - xt;
    let inv = scale / s;
    for x in row.iter_mut() {
        *x *= inv;
    }
    row[t] -= scale;
    loss
}

#[multiversion(targets = "simd")]
fn logprob_row(row: &[f32], target: u32, buf: &mut [f32]) -> f32 {
    let m = max(row);
    buf.copy_from_slice(row);
    let s = exp_shift_sum(buf, 1.0, m);
    row[target as usize] - m - s.ln()
}

/// (log p(target), entropy) of one row's softmax; `buf` is scratch.
#[multiversion(targets = "simd")]
fn logprob_entropy_row(row: &[f32], target: u32, buf: &mut [f32]) -> (f32, f32) {
    let m = max(row);
    buf.copy_from_slice(row);
    let s = exp_shift_sum(buf, 1.0, m);
    // H = ln s − Σ p·(x − m), with p = exp(x − m)/s.
    let mut acc = [0.0f32; 16];
    for (i, (e, x)) in buf.iter().zip(row).enumerate() {
        acc[i % 16] += e * (x - m);
    }
    let ex: f32 = acc.iter().sum();
    (row[target as usize] - m - s.ln(), s.ln() - ex / s)
}

// ---------------------------------------------------------------------------------------------
// AdamW

#[multiversion(targets = "simd")]
fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamWStep) {
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    let step = h.lr / bc1;
    let decay = 1.0 - h.lr * h.weight_decay;
    let inv_sqrt_bc2 = 1.0 / bc2.sqrt();
    for i in 0..p.len() {
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
        // p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + eps)
        p[i] = p[i] * decay - step * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + h.eps);
    }
}

#[multiversion(targets = "simd")]
fn sum_sq_chunk(x: &[f32]) -> f64 {
    dot(x, x) as f64
}

// ---------------------------------------------------------------------------------------------
// The backend

/// The CPU backend. Threads come from rayon's global pool (`RAYON_NUM_THREADS` or all cores).
/// Its one setting is the matmuls' precision (`bf16.rs` for bf16); everything else is fp32.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub precision: Precision,
}

/// The fp32 CPU backend, written `Cpu` as a value the way a unit struct would be (inference,
/// evals and the golden tests all use it).
#[allow(non_upper_case_globals)]
pub const Cpu: Cpu = Cpu { precision: Precision::Fp32 };

impl Cpu {
    pub fn with_precision(precision: Precision) -> Cpu {
        Cpu { precision }
    }
}

/// The training precision a recipe defaults to on this CPU, chosen at run time: bf16 where the
/// CPU multiplies bf16 natively (AVX512-BF16) *and* our bf16 kernel beats the fp32 `gemm` on a
/// training step's shape by [`BF16_MARGIN`] ([`bf16_speedup`], measured once per process, about
/// 30 ms); else fp32. Why measured: `vdpbf16ps` doubles the multiply rate only where fp32 FMAs
/// are the narrower path. On a 2-core AMD EPYC (Zen 4, AVX-512 double-pumped) the bf16 step
/// trained 1.3–1.5× faster than fp32; on a 2-core Xeon (model 207, AVX512-BF16, AMX not
/// exposed) it trained at 4.3k tokens/s against fp32's 7.0k (`bench train`, 2026-12-08), and
/// PyTorch's bf16 autocast was as slow there (compile: 3.8k against 6.8k).
pub fn auto_precision() -> Precision {
    static AUTO: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();
    *AUTO.get_or_init(|| if bf16::native() && bf16_speedup() >= BF16_MARGIN { Precision::Bf16 } else { Precision::Fp32 })
}

/// How much faster the bf16 kernel must be than fp32 for [`auto_precision`] to pick it: the two
/// machines above measure far on either side, and a margin keeps a noisy minute near 1 on fp32.
pub const BF16_MARGIN: f64 = 1.15;

/// fp32 time over bf16 time of a linear layer's matmul at the speedrun's base shape (2,048
/// tokens, 256 → 704), measured once per process; 0 where the CPU has no AVX512-BF16.
pub fn bf16_speedup() -> f64 {
    static SPEEDUP: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SPEEDUP.get_or_init(|| {
        if !bf16::native() {
            return 0.0;
        }
        // On a pool of its own: the CLI reads its default before `--threads` builds the global one.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(measure_bf16_speedup),
            Err(_) => 0.0,
        }
    })
}

/// The median over 7 back-to-back pairs (fp32 then bf16, after a warm-up of each) of their
/// time ratio. Pairs, not all of one then all of the other: a burst of load from another
/// process then skews one ratio, which the median drops, instead of one whole side. Measured on
/// the 2-core Xeon (true ratio ~0.6×), six speedruns started at once: timing all fp32 reps
/// before all bf16 ones, one of six picked bf16 (the others read 0.25–0.93×), so two identical
/// runs could train in different precisions (`resume_stages`' LoRA SFT run once diverged from
/// its uninterrupted twin at step 1); paired, 18 of 18 read 0.37–0.79×.
fn measure_bf16_speedup() -> f64 {
    let (m, n, k) = (2048, 704, 256);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5).collect();
    let b: Vec<f32> = (0..n * k).map(|i| ((i * 104_729) % 991) as f32 / 991.0 - 0.5).collect();
    let mut c = vec![0.0f32; m * n];
    let time = |bf: bool, c: &mut [f32]| {
        let t = std::time::Instant::now();
        if bf {
            bf16::matmul(c, &a, Op::N, &b, Op::T, m, n, k, false);
        } else {
            matmul(c, &a, Op::N, &b, Op::T, m, n, k, false);
        }
        t.elapsed().as_secs_f64()
    };
    time(false, &mut c);
    time(true, &mut c);
    let mut ratios: Vec<f64> = (0..7).map(|_| time(false, &mut c) / time(true, &mut c)).collect();
    ratios.sort_by(f64::total_cmp);
    ratios[3]
}

const CHUNK: usize = 1 << 14;

impl Backend for Cpu {
    type Buf = Vec<f32>;
    /// f16: decoding attention streams the cache from memory (`kv.rs`).
    type Kv = Vec<f16>;

    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut Vec<f32>, value: f32) {
        buf.fill(value)
    }
    fn copy(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.copy_from_slice(src)
    }
    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
            for (d, s) in d.iter_mut().zip(s) {
                *d += s;
            }
        });
    }
    fn scale(&self, buf: &mut Vec<f32>, s: f32) {
        buf.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x *= s));
    }
    fn sum_sq(&self, buf: &Vec<f32>) -> f64 {
        let parts: Vec<f64> = buf.par_chunks(CHUNK).map(sum_sq_chunk).collect();
        parts.iter().sum()
    }

    fn matmul(&self, c: &mut Vec<f32>, a: &Vec<f32>, ta: Op, b: &Vec<f32>, tb: Op, m: usize, n: usize, k: usize, acc: bool) {
        match self.precision {
            Precision::Fp32 => matmul(c, a, ta, b, tb, m, n, k, acc),
            Precision::Bf16 => bf16::matmul(c, a, ta, b, tb, m, n, k, acc),
        }
    }

    fn matmul_weight(&self, c: &mut Vec<f32>, a: &Vec<f32>, w: &Weight<Vec<f32>>, m: usize, n: usize, k: usize, acc: bool) {
        match self.precision {
            Precision::Fp32 => matmul(c, a, Op::N, w, Op::T, m, n, k, acc),
            Precision::Bf16 => w.packed(|w, pb| bf16::pack_weight(pb, w, n, k), |pb| bf16::matmul_packed(c, a, w, pb, m, n, k, acc)),
        }
    }

    fn resize(&self, buf: &mut Vec<f32>, len: usize) {
        buf.resize(len, 0.0);
    }

    fn download_into(&self, buf: &Vec<f32>, dst: &mut Vec<f32>) {
        dst.clear();
        dst.extend_from_slice(buf);
    }

    fn linear_rows(&self, y: &mut Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, m: usize, out: usize, inp: usize, accumulate: bool) {
        skinny::matmul_nt(y, x, w, m, out, inp, accumulate)
    }

    fn embedding(&self, out: &mut Vec<f32>, table: &Vec<f32>, ids: &[u32], d: usize) {
        assert_eq!(out.len(), ids.len() * d);
        let vocab = table.len() / d;
        out.par_chunks_mut(d).zip(ids.par_iter()).for_each(|(row, &id)| {
            assert!((id as usize) < vocab, "token id {id} out of range for vocab {vocab}");
            row.copy_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
        });
    }
    fn embedding_backward(&self, dtable: &mut Vec<f32>, dout: &Vec<f32>, ids: &[u32], d: usize) {
        for (row, &id) in dout.chunks_exact(d).zip(ids) {
            for (g, x) in dtable[id as usize * d..(id as usize + 1) * d].iter_mut().zip(row) {
                *g += x;
            }
        }
    }

    fn rmsnorm(&self, y: &mut Vec<f32>, rstd: &mut Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, d: usize, eps: f32) {
        let rows = ROWS_PER_TASK;
        y.par_chunks_mut(rows * d)
            .zip(rstd.par_chunks_mut(rows))
            .zip(x.par_chunks(rows * d))
            .for_each(|((y, r), x)| rmsnorm_rows(y, r, x, w, d, eps));
    }

    fn rmsnorm_backward(
        &self,
        dx: &mut Vec<f32>,
        dw: &mut Vec<f32>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        w: &Vec<f32>,
        rstd: &Vec<f32>,
        d: usize,
        accumulate: bool,
    ) {
        // Each block of rows computes its share of dw; shares are summed in a fixed order.
        let rows = 64;
        let parts: Vec<Vec<f32>> = dx
            .par_chunks_mut(rows * d)
            .zip(dy.par_chunks(rows * d))
            .zip(x.par_chunks(rows * d))
            .zip(rstd.par_chunks(rows))
            .map(|(((dx, dy), x), r)| {
                let mut part = vec![0.0; d];
                rmsnorm_backward_rows(dx, &mut part, dy, x, w, r, d, accumulate);
                part
            })
            .collect();
        for part in parts {
            for (g, p) in dw.iter_mut().zip(part) {
                *g += p;
            }
        }
    }

    fn rope(&self, x: &mut Vec<f32>, heads: usize, hd: usize, t: usize, pos0: usize, rope: &Rope, inverse: bool) {
        let table = rope_table_cached(pos0 + t, hd, rope);
        let (cos, sin) = (&table.0, &table.1);
        let half = hd / 2;
        x.par_chunks_mut(heads * hd).enumerate().for_each(|(n, row)| {
            let p = pos0 + n % t;
            rope_rows(row, &cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half], heads, hd, inverse);
        });
    }

    fn attention(
        &self,
        out: &mut Vec<f32>,
        probs: &mut Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        s: AttnShape,
        docs: Option<&[u32]>,
    ) {
        attention_forward(out, probs, q, k, v, s, docs)
    }

    fn attention_backward(
        &self,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        dout: &Vec<f32>,
        probs: &Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        s: AttnShape,
    ) {
        attention_backward_cpu(dq, dk, dv, scratch, dout, probs, q, k, v, s)
    }

    fn add_bias(&self, y: &mut Vec<f32>, bias: &Vec<f32>) {
        y.par_chunks_mut(bias.len()).for_each(|row| row.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
    }

    fn bias_backward(&self, dbias: &mut Vec<f32>, dy: &Vec<f32>) {
        // Rows in order: the sum is the same whatever the thread count.
        for row in dy.chunks_exact(dbias.len()) {
            dbias.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
    }

    fn swiglu(&self, a: &mut Vec<f32>, g: &Vec<f32>, u: &Vec<f32>) {
        a.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(u.par_chunks(CHUNK)).for_each(|((a, g), u)| swiglu_chunk(a, g, u));
    }

    fn swiglu_backward(&self, dg: &mut Vec<f32>, du: &mut Vec<f32>, da: &Vec<f32>, g: &Vec<f32>, u: &Vec<f32>) {
        dg.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(da.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(((dg, du), da), (g, u))| swiglu_backward_chunk(dg, du, da, g, u));
    }

    fn cross_entropy(&self, logits: &mut Vec<f32>, targets: &[u32], v: usize, scale: f32) -> (f64, usize) {
        assert_eq!(logits.len(), targets.len() * v);
        if let Some(&bad) = targets.iter().find(|&&t| t != IGNORE && t as usize >= v) {
            panic!("target id {bad} out of range for vocab {v}");
        }
        let losses: Vec<f32> = logits.par_chunks_mut(v).zip(targets.par_iter()).map(|(row, &t)| cross_entropy_row(row, t, scale)).collect();
        let count = targets.iter().filter(|&&t| t != IGNORE).count();
        (losses.iter().map(|&l| l as f64).sum(), count)
    }

    fn target_logprobs(&self, logits: &Vec<f32>, targets: &[u32], v: usize) -> Vec<f32> {
        logits
            .par_chunks(v)
            .zip(targets.par_iter())
            .map_init(|| vec![0.0; v], |buf, (row, &t)| if t == IGNORE { 0.0 } else { logprob_row(row, t, buf) })
            .collect()
    }

    fn logprobs_entropy(&self, logits: &Vec<f32>, targets: &[u32], v: usize) -> (Vec<f32>, Vec<f32>) {
        assert_eq!(logits.len(), targets.len() * v);
        logits
            .par_chunks(v)
            .zip(targets.par_iter())
            .map_init(|| vec![0.0; v], |buf, (row, &t)| if t == IGNORE { (0.0, 0.0) } else { logprob_entropy_row(row, t, buf) })
            .unzip()
    }

    fn logprob_backward(&self, logits: &mut Vec<f32>, targets: &[u32], dlogp: &[f32], v: usize) {
        assert_eq!(logits.len(), targets.len() * v);
        assert_eq!(dlogp.len(), targets.len());
        // d log p_t / d x = onehot − softmax: the cross-entropy gradient scaled by −dlogp.
        logits.par_chunks_mut(v).zip(targets.par_iter().zip(dlogp.par_iter())).for_each(|(row, (&t, &d))| {
            cross_entropy_row(row, t, -d);
        });
    }

    fn rope_at(&self, x: &mut Vec<f32>, heads: usize, hd: usize, positions: &[usize], rope: &Rope) {
        let end = positions.iter().max().map_or(0, |&p| p + 1);
        let table = rope_table_cached(end, hd, rope);
        let half = hd / 2;
        for (row, &p) in x.chunks_exact_mut(heads * hd).zip(positions) {
            rope_rows(row, &table.0[p * half..(p + 1) * half], &table.1[p * half..(p + 1) * half], heads, hd, false);
        }
    }

    fn kv_zeros(&self, n: usize) -> Vec<f16> {
        vec![f16::ZERO; n]
    }

    fn kv_append(&self, dsts: &mut [&mut Vec<f16>], src: &Vec<f32>, row_len: usize, segs: &[Segment]) {
        kv::append(dsts, src, row_len, segs);
    }

    fn kv_copy_prefix(&self, dst: &mut Vec<f16>, src: &Vec<f16>, len: usize) {
        dst[..len].copy_from_slice(&src[..len]);
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_segments(
        &self,
        out: &mut Vec<f32>,
        q: &Vec<f32>,
        ks: &[&Vec<f16>],
        vs: &[&Vec<f16>],
        segs: &[Segment],
        hq: usize,
        hkv: usize,
        hd: usize,
    ) {
        kv::attention(out, q, ks, vs, segs, hq, hkv, hd);
    }

    fn adamw(&self, p: &mut Vec<f32>, g: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, h: AdamWStep) {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| adamw_chunk(p, g, m, v, h));
    }
}
