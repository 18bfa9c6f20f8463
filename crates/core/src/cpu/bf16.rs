//! bf16 matmul with fp32 accumulation: `c (+)= op(a) · op(b)` where every operand element is
//! first rounded to bfloat16 (round to nearest, ties to even), products are exact in fp32 and sums
//! are accumulated in fp32. This is what bf16 autocast does to a matmul; the result stays fp32.
//!
//! In order:
//! 1. rounding and packing (once per call, in parallel, with `vcvtne2ps2bf16`): pairs of
//!    consecutive k-elements become one u32 (low half the even element), because `vdpbf16ps`
//!    multiplies bf16 pairs and adds both products into one fp32 lane. op(b) becomes panels of
//!    NR = 32 columns `[k/2][32]`; op(a) = a stays row-major (a row of pairs is the row in bf16),
//!    op(a) = aᵀ becomes panels of MR = 12 rows `[k/2][12]`; ragged edges and an odd k are
//!    zero-padded. The buffers are reused from call to call. A linear layer's weight may come
//!    packed already ([`pack_weight`], kept by `backend::Weight` until the weight changes), so
//!    a model that is not training packs each weight once, not at every forward;
//! 2. the microkernel: a 12×32 block of c in 24 zmm accumulators, one `vdpbf16ps` per row and
//!    16 columns per k-pair (AVX512-BF16, chosen at run time);
//! 3. the driver: k in blocks of KC pairs (so a b panel stays in L1), tasks of MC·MR rows (and,
//!    when rows are few, of a share of the b panels) in parallel. Every element of c sums its
//!    k-blocks in the same fixed order whatever the thread count: bit-identical results.
//!
//! Why our own: the `gemm` crate (0.19) has f32/f64/f16 kernels but no bf16 dot-product kernel,
//! and its f16 path widens to f32, so it cannot be faster than f32 (`examples/mm_bench.rs`
//! measures the two side by side: 1.5–1.9× on the training step's shapes). Where the CPU lacks
//! AVX512-BF16, `matmul` gives the same numerics by rounding the operands to bf16 and running
//! the f32 `gemm` (no faster, but a bf16 run trains and resumes the same way on any CPU).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::SendPtr;
use crate::backend::Op;

const MR: usize = 12;
const NR: usize = 32;
/// k-pairs per block: a 32-column b panel block is KC·128 bytes (32 KiB).
const KC: usize = 256;
/// Row panels per parallel task.
const MC: usize = 4;

thread_local! {
    /// The caller's packed op(a) and op(b), kept between calls (no allocation or page faults per
    /// matmul).
    static PACKED: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether this CPU runs the native kernel (AVX-512F with AVX512-BF16), detected once.
pub fn native() -> bool {
    static NATIVE: OnceLock<bool> = OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The bf16 nearest to `x` (ties to even), as the low 16 bits; NaN stays a quiet NaN and a
/// denormal becomes a signed zero, exactly as AVX512-BF16's `vcvtne2ps2bf16` converts (so the
/// native and emulated paths give the same bits).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u32 {
    let u = x.to_bits();
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16;
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) | 0x40
    } else if u & 0x7f80_0000 == 0 {
        (u >> 16) & 0x8000
    } else {
        rounded
    }
}

/// `x` rounded to the nearest bf16, as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x) << 16)
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// `c[m,n] (+)= op(a)[m,k] · op(b)[k,n]` with bf16 operands and fp32 accumulation.
#[allow(clippy::too_many_arguments)]
pub fn matmul(c: &mut [f32], a: &[f32], ta: Op, b: &[f32], tb: Op, m: usize, n: usize, k: usize, accumulate: bool) {
    assert_eq!(c.len(), m * n, "matmul_bf16: c has {} elements, expected {m}x{n}", c.len());
    assert_eq!(a.len(), m * k, "matmul_bf16: a has {} elements, expected {m}x{k}", a.len());
    assert_eq!(b.len(), k * n, "matmul_bf16: b has {} elements, expected {k}x{n}", b.len());
    if m == 0 || n == 0 {
        return;
    }
    if !native() {
        return emulated(c, a, ta, b, tb, m, n, k, accumulate);
    }
    let kp = k.div_ceil(2);
    if kp == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // 1. op(b) packed once, panel by panel in parallel.
    // The packed buffers are reused from call to call (every element is written below).
    let (pa, mut pb) = PACKED.with(|b| std::mem::take(&mut *b.borrow_mut()));
    pack_panels(&mut pb, b, tb, k, n);
    let pa = multiply(c, a, ta, &pb, pa, m, n, k, accumulate);
    PACKED.with(|b| *b.borrow_mut() = (pa, pb));
}

/// op(b) as the kernel's panels `[n/NR][k/2][NR]`, into `pb` (resized; every element written).
fn pack_panels(pb: &mut Vec<u32>, b: &[f32], tb: Op, k: usize, n: usize) {
    let kp = k.div_ceil(2);
    pb.resize(n.div_ceil(NR) * kp * NR, 0);
    pb.par_chunks_mut(kp * NR).enumerate().for_each(|(j, dst)| pack_b(dst, b, tb, k, n, j * NR));
}

/// A linear layer's weight `w[n,k]` packed as op(b) = wᵀ, for [`matmul_packed`] (`Weight::packed`
/// keeps it between calls: for a frozen model the packing is paid once, not per matmul).
pub fn pack_weight(pb: &mut Vec<u32>, w: &[f32], n: usize, k: usize) {
    assert_eq!(w.len(), n * k, "pack_weight: w has {} elements, expected {n}x{k}", w.len());
    if native() && k > 0 {
        pack_panels(pb, w, Op::T, k, n);
    }
}

/// `c[m,n] (+)= a[m,k] · w[n,k]ᵀ` from the packed weight: the same bits as `matmul` with
/// `(a, Op::N, w, Op::T)`. Without AVX512-BF16 (nothing packed) it is that `matmul`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(c: &mut [f32], a: &[f32], w: &[f32], pb: &[u32], m: usize, n: usize, k: usize, accumulate: bool) {
    assert_eq!(c.len(), m * n, "matmul_bf16: c has {} elements, expected {m}x{n}", c.len());
    assert_eq!(a.len(), m * k, "matmul_bf16: a has {} elements, expected {m}x{k}", a.len());
    if !native() || k == 0 || m == 0 || n == 0 {
        return matmul(c, a, Op::N, w, Op::T, m, n, k, accumulate);
    }
    assert_eq!(pb.len(), n.div_ceil(NR) * k.div_ceil(2) * NR, "matmul_packed: the weight is packed for another shape");
    let (pa, pb0) = PACKED.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let pa = multiply(c, a, Op::N, pb, pa, m, n, k, accumulate);
    PACKED.with(|b| *b.borrow_mut() = (pa, pb0));
}

/// Steps 2 and 3 of `matmul` on packed op(b) panels: convert op(a) into `pa` (returned for
/// reuse), then the tiles in parallel.
#[allow(clippy::too_many_arguments)]
fn multiply(c: &mut [f32], a: &[f32], ta: Op, pb: &[u32], mut pa: Vec<u32>, m: usize, n: usize, k: usize, accumulate: bool) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let npan = n.div_ceil(NR);
    // 2. op(a) converted once, in parallel: for op(a) = a (the common case) row-major
    //    `[m up to MR][kp]`, where a row of pairs is just the row in bf16 and the kernel
    //    broadcasts from MR rows at once; for op(a) = aᵀ panels `[m/MR][kp][MR]`, read in a's
    //    row order (two rows of a give a row of pairs of every panel).
    let rowmajor = ta == Op::N;
    let ipan_all = m.div_ceil(MR);
    pa.resize(ipan_all * MR * kp, 0);
    if rowmajor {
        pa[m * kp..].fill(0);
        pa[..m * kp].par_chunks_mut(kp * 16).enumerate().for_each(|(c, dst)| {
            for (r, d) in dst.chunks_mut(kp).enumerate() {
                let i = c * 16 + r;
                pack_row(d, &a[i * k..(i + 1) * k]);
            }
        });
    } else {
        // The packed pairs travel as the backend's shared pointer (u32 and f32 have one size).
        let dst = SendPtr(pa.as_mut_ptr() as *mut f32);
        (0..kp.div_ceil(64)).into_par_iter().for_each_init(Vec::new, |row, blk| {
            for p in blk * 64..kp.min(blk * 64 + 64) {
                // SAFETY: each pair row p writes only elements [ip·kp·MR + p·MR, +MR) of every
                // panel, disjoint across p, inside pa.
                let pa = unsafe { std::slice::from_raw_parts_mut(dst.get() as *mut u32, ipan_all * MR * kp) };
                pack_a_t_row(pa, row, a, m, k, kp, p);
            }
        });
    }
    // 3. tiles of MC·MR rows × a group of b panels in parallel: row chunks alone when there are
    //    enough of them, else the columns are split too (a weight gradient has few rows).
    let chunks = m.div_ceil(MC * MR);
    let groups = npan.min((4 * rayon::current_num_threads()).div_ceil(chunks)).max(1);
    let cptr = SendPtr(c.as_mut_ptr());
    (0..chunks * groups).into_par_iter().for_each(|task| {
        let (chunk, g) = (task / groups, task % groups);
        let (j0, j1) = (g * npan / groups, (g + 1) * npan / groups);
        let i0 = chunk * MC * MR;
        let rows = (MC * MR).min(m - i0);
        let ipan = rows.div_ceil(MR);
        for p0 in (0..kp).step_by(KC) {
            let kb = KC.min(kp - p0);
            let load_c = accumulate || p0 > 0;
            for j in j0..j1 {
                let cols = NR.min(n - j * NR);
                let bp = &pb[(j * kp + p0) * NR..];
                for ip in 0..ipan {
                    let r = MR.min(rows - ip * MR);
                    // SAFETY: native() checked the CPU; the panels hold kb pairs from p0 (and
                    // MR rows, zero-padded); the kernel writes only rows i0 + ip·MR + (0..r) and
                    // columns j·NR + (0..cols) of c (row stride n), which no other task writes.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let cp = cptr.get().add((i0 + ip * MR) * n + j * NR);
                        if rowmajor {
                            let ap = &pa[(i0 + ip * MR) * kp + p0..];
                            kernel::<true>(kb, ap.as_ptr(), kp, bp.as_ptr(), cp, n, r, cols, load_c)
                        } else {
                            let ap = &pa[((i0 / MR + ip) * kp + p0) * MR..];
                            kernel::<false>(kb, ap.as_ptr(), 0, bp.as_ptr(), cp, n, r, cols, load_c)
                        }
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (bp, r, cols, load_c, cptr);
                }
            }
        }
    });
    pa
}

/// The same numerics without AVX512-BF16: operands rounded to bf16, then the fp32 `gemm`.
#[allow(clippy::too_many_arguments)]
fn emulated(c: &mut [f32], a: &[f32], ta: Op, b: &[f32], tb: Op, m: usize, n: usize, k: usize, accumulate: bool) {
    let a: Vec<f32> = a.par_iter().map(|&x| round_bf16(x)).collect();
    let b: Vec<f32> = b.par_iter().map(|&x| round_bf16(x)).collect();
    super::matmul(c, &a, ta, &b, tb, m, n, k, accumulate)
}

/// One row of floats as bf16 pairs: `dst[p] = pair(row[2p], row[2p+1])`, an odd tail padded.
fn pack_row(dst: &mut [u32], row: &[f32]) {
    assert!(dst.len() >= row.len().div_ceil(2));
    // SAFETY: only reached when native() holds; writes ceil(len/2) elements of dst.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        simd::row_pairs(dst.as_mut_ptr(), row.as_ptr(), row.len())
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (p, d) in dst[..row.len().div_ceil(2)].iter_mut().enumerate() {
        *d = pair(row[2 * p], row.get(2 * p + 1).copied().unwrap_or(0.0));
    }
}

/// `dst[i] = pair(lo[i], hi[i])` (hi = 0 where absent) for i < lo.len().
fn interleave(dst: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    assert!(dst.len() >= lo.len() && hi.is_none_or(|h| h.len() == lo.len()));
    // SAFETY: only reached when native() holds; reads lo.len() of lo and hi, writes as many of dst.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        simd::interleave(dst.as_mut_ptr(), lo.as_ptr(), hi.map_or(std::ptr::null(), |h| h.as_ptr()), lo.len())
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (i, d) in dst[..lo.len()].iter_mut().enumerate() {
        *d = pair(lo[i], hi.map_or(0.0, |h| h[i]));
    }
}

/// Panel of NR columns of op(b) from column j0: `dst[p·NR + jj] = pair(op(b)[2p, j0+jj], op(b)[2p+1, j0+jj])`.
#[multiversion::multiversion(targets = "simd")]
fn pack_b(dst: &mut [u32], b: &[f32], tb: Op, k: usize, n: usize, j0: usize) {
    let cols = NR.min(n - j0);
    let kp = k.div_ceil(2);
    match tb {
        // op(b)[p, j] = b[p·n + j]: two rows of b give a row of pairs.
        Op::N => {
            for (p, d) in dst.chunks_exact_mut(NR).enumerate() {
                let lo = &b[2 * p * n + j0..2 * p * n + j0 + cols];
                if 2 * p + 1 < k {
                    let hi = &b[(2 * p + 1) * n + j0..(2 * p + 1) * n + j0 + cols];
                    for ((d, &l), &h) in d.iter_mut().zip(lo).zip(hi) {
                        *d = pair(l, h);
                    }
                } else {
                    for (d, &l) in d.iter_mut().zip(lo) {
                        *d = bf16_bits(l);
                    }
                }
                d[cols..].fill(0);
            }
        }
        // op(b)[p, j] = b[j·k + p]: a row of b is one column of pairs (a weight: small).
        Op::T => {
            for jj in 0..NR {
                if jj >= cols {
                    for p in 0..kp {
                        dst[p * NR + jj] = 0;
                    }
                    continue;
                }
                let row = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
                for (p, x) in row.chunks_exact(2).enumerate() {
                    dst[p * NR + jj] = pair(x[0], x[1]);
                }
                if k % 2 == 1 {
                    dst[(kp - 1) * NR + jj] = bf16_bits(row[k - 1]);
                }
            }
        }
    }
}

/// Pair row p of every `[kp][MR]` panel of op(a) = aᵀ: `pa[(ip·kp + p)·MR + r] =
/// pair(a[2p, ip·MR + r], a[2p+1, ip·MR + r])`, rows past m zero. `row` is scratch.
fn pack_a_t_row(pa: &mut [u32], row: &mut Vec<u32>, a: &[f32], m: usize, k: usize, kp: usize, p: usize) {
    let lo = &a[2 * p * m..(2 * p + 1) * m];
    let hi = (2 * p + 1 < k).then(|| &a[(2 * p + 1) * m..(2 * p + 2) * m]);
    row.resize(m.div_ceil(MR) * MR, 0);
    interleave(row, lo, hi);
    row[m..].fill(0);
    for (ip, src) in row.chunks_exact(MR).enumerate() {
        pa[(ip * kp + p) * MR..(ip * kp + p + 1) * MR].copy_from_slice(src);
    }
}

/// The packers' conversions with the CPU's own instructions (`vcvtne2ps2bf16` rounds exactly as
/// [`bf16_bits`]: nearest-even, denormals to zero, NaN quieted).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Lanes 2i ← i and 2i+1 ← 16+i: interleaves the two halves of a `vcvtne2ps2bf16` result.
    const IDX: [u16; 32] = {
        let mut a = [0u16; 32];
        let mut j = 0;
        while j < 32 {
            a[j] = if j % 2 == 0 { (j / 2) as u16 } else { 16 + (j / 2) as u16 };
            j += 1;
        }
        a
    };

    fn mask(w: usize) -> u16 {
        if w >= 16 {
            0xffff
        } else {
            ((1u32 << w) - 1) as u16
        }
    }

    /// `dst[i] = bf16(lo[i]) | bf16(hi[i]) << 16` for i < len (hi null: 0).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn interleave(dst: *mut u32, lo: *const f32, hi: *const f32, len: usize) {
        let idx = _mm512_loadu_si512(IDX.as_ptr() as *const _);
        let mut i = 0;
        while i < len {
            let m = mask(len - i);
            let l = _mm512_maskz_loadu_ps(m, lo.add(i));
            let h = if hi.is_null() { _mm512_setzero_ps() } else { _mm512_maskz_loadu_ps(m, hi.add(i)) };
            let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
            _mm512_mask_storeu_epi32(dst.add(i) as *mut _, m, _mm512_permutexvar_epi16(idx, both));
            i += 16;
        }
    }

    /// `dst[p] = bf16(row[2p]) | bf16(row[2p+1]) << 16` for p < ceil(len/2) (an odd tail: 0 above).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn row_pairs(dst: *mut u32, row: *const f32, len: usize) {
        let mut i = 0;
        while i < len {
            let (w0, w1) = ((len - i).min(16), (len - i).saturating_sub(16).min(16));
            let a = _mm512_maskz_loadu_ps(mask(w0), row.add(i));
            let b = _mm512_maskz_loadu_ps(mask(w1), row.add(i + 16));
            // Consecutive bf16 in memory are the pairs: [a as 16 bf16 | b as 16 bf16].
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
            _mm512_mask_storeu_epi32(dst.add(i / 2) as *mut _, mask((w0 + w1).div_ceil(2)), v);
            i += 32;
        }
    }
}

/// `c[r, 0..cols] = (load_c ? c : 0) + Σ_p A(r, p) · b[p, 0..cols]` for r < rows, over `kb` pairs
/// of a b `[kb][NR]` panel and MR rows of A: `A(r, p) = a[r·lda + p]` (ROWMAJOR) or a `[kb][MR]`
/// panel `a[p·MR + r]`; c has row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const ROWMAJOR: bool>(
    kb: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    load_c: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kb {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = if ROWMAJOR { *a.add(r * lda + p) } else { *a.add(p * MR + r) };
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(x as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
        }
    }
    let mask = |lo: usize| -> u16 {
        let w = cols.saturating_sub(lo).min(16);
        if w == 16 {
            0xffff
        } else {
            ((1u32 << w) - 1) as u16
        }
    };
    let (m0, m1) = (mask(0), mask(16));
    for (r, acc) in acc.iter().enumerate().take(rows) {
        let cr = c.add(r * ldc);
        let (mut v0, mut v1) = (acc[0], acc[1]);
        if load_c {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr.add(16)), v1);
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr.add(16), m1, v1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    type Mm = fn(&mut [f32], &[f32], Op, &[f32], Op, usize, usize, usize, bool);

    /// f64 reference of op(a)·op(b) on bf16-rounded operands.
    fn reference(a: &[f32], ta: Op, b: &[f32], tb: Op, m: usize, n: usize, k: usize) -> Vec<f64> {
        let ga = |i: usize, p: usize| round_bf16(if ta == Op::N { a[i * k + p] } else { a[p * m + i] }) as f64;
        let gb = |p: usize, j: usize| round_bf16(if tb == Op::N { b[p * n + j] } else { b[j * k + p] }) as f64;
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| ga(i, p) * gb(p, j)).sum();
            }
        }
        c
    }

    #[test]
    fn rounding_is_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(-2.5e-3), half::bf16::from_f32(-2.5e-3).to_f32());
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..10_000 {
            let x: f32 = (rng.random::<f32>() - 0.5) * 10f32.powi(rng.random_range(-30..30));
            assert_eq!(round_bf16(x), half::bf16::from_f32(x).to_f32(), "{x}");
        }
    }

    /// Random shapes (ragged edges, odd k, more than one k block), both layouts of each operand,
    /// with and without accumulation: within fp32-accumulation error of the f64 reference.
    #[test]
    fn matches_f64_reference_on_random_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let shapes = [(1, 1, 1), (5, 7, 3), (12, 32, 2), (13, 33, 9), (29, 70, 515), (64, 48, 1030), (3, 100, 64)];
        for &(m, n, k) in &shapes {
            for (ta, tb) in [(Op::N, Op::T), (Op::N, Op::N), (Op::T, Op::N), (Op::T, Op::T)] {
                for accumulate in [false, true] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.random::<f32>()).collect();
                    let r = reference(&a, ta, &b, tb, m, n, k);
                    // The kernel this CPU runs, and the emulation other CPUs run.
                    for (path, f) in [("matmul", matmul as Mm), ("emulated", emulated as Mm)] {
                        let mut c = c0.clone();
                        f(&mut c, &a, ta, &b, tb, m, n, k, accumulate);
                        for i in 0..m * n {
                            let want = r[i] + if accumulate { c0[i] as f64 } else { 0.0 };
                            // fp32 accumulation of k products of magnitude ≤ 1: error ≲ k·2^-24·Σ|terms|.
                            let tol = 1e-6 * (k as f64 + 1.0) + 1e-6;
                            let got = c[i] as f64;
                            assert!((got - want).abs() <= tol, "{path} {m}x{n}x{k} {ta:?}{tb:?} acc={accumulate} [{i}]: {got} vs {want}");
                        }
                    }
                }
            }
        }
    }

    /// bf16 operands lose ~3 significant digits: against the exact f32 product the error is
    /// ~2^-8 relative per operand, far above fp32's, so the test above is not vacuous.
    #[test]
    fn differs_from_f32_by_bf16_rounding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (m, n, k) = (16, 16, 64);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random::<f32>()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random::<f32>()).collect();
        let (mut c16, mut c32) = (vec![0.0; m * n], vec![0.0; m * n]);
        matmul(&mut c16, &a, Op::N, &b, Op::N, m, n, k, false);
        super::super::matmul(&mut c32, &a, Op::N, &b, Op::N, m, n, k, false);
        let rel = c16.iter().zip(&c32).map(|(x, y)| ((x - y) / y).abs()).fold(0.0f32, f32::max);
        assert!(rel > 1e-4 && rel < 2e-2, "max relative difference {rel}");
    }

    /// The CPU's conversion and ours agree on every class of input: random bit patterns (NaNs,
    /// infinities, denormals, ties) through the packers.
    #[test]
    fn hardware_rounding_is_ours() {
        if !native() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut xs: Vec<f32> = (0..20_000).map(|_| f32::from_bits(rng.random::<u32>())).collect();
        xs.extend([0.0, -0.0, 1e-40, -1e-40, f32::MIN_POSITIVE, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0 + 1.0 / 256.0]);
        xs.extend((0..1000).map(|i| f32::from_bits(0x3f80_8000 + (i << 16)))); // exact ties
        let mut got = vec![0u32; xs.len().div_ceil(2)];
        pack_row(&mut got, &xs);
        for (p, &g) in got.iter().enumerate() {
            let want = pair(xs[2 * p], xs.get(2 * p + 1).copied().unwrap_or(0.0));
            assert_eq!(g, want, "{:#x} {:#x}", xs[2 * p].to_bits(), xs.get(2 * p + 1).map_or(0, |x| x.to_bits()));
        }
        let (lo, hi) = xs.split_at(xs.len() / 2);
        let mut got = vec![0u32; lo.len()];
        interleave(&mut got, lo, Some(&hi[..lo.len()]));
        assert!(got.iter().enumerate().all(|(i, &g)| g == pair(lo[i], hi[i])));
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (m, n, k) = (100, 80, 700);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random::<f32>() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random::<f32>() - 0.5).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut c = vec![0.0; m * n];
            pool.install(|| matmul(&mut c, &a, Op::T, &b, Op::N, m, n, k, false));
            c
        };
        let one = run(1);
        assert!(one.iter().zip(run(3)).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    #[test]
    fn a_packed_weight_gives_the_bits_of_matmul() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for &(m, n, k) in &[(1, 1, 1), (7, 33, 9), (30, 70, 513), (64, 32, 64)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random::<f32>() - 0.5).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.random::<f32>() - 0.5).collect();
            let mut want = vec![0.25; m * n];
            matmul(&mut want, &a, Op::N, &w, Op::T, m, n, k, true);
            let mut pb = vec![7; 3];
            pack_weight(&mut pb, &w, n, k);
            let mut got = vec![0.25; m * n];
            matmul_packed(&mut got, &a, &w, &pb, m, n, k, true);
            assert!(want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()), "{m}x{n}x{k}");
        }
    }
}
