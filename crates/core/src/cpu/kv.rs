//! The KV cache in half precision (IEEE f16) and decoding attention over it.
//!
//! Why f16: batched decoding reads every live sequence's keys and values once per layer and step,
//! and they are read nowhere else, so that attention streams them from memory. Measured on the
//! 2-core EPYC (`examples/attend_bench.rs`, 32 sequences × 4 layers, f32 cache): 14–18 GB/s
//! from distinct caches against 54–74 GB/s when all 32 read one cache that stays in L2, the same
//! arithmetic; attention was 38 % of a 32-sequence step. Half the bytes, about half the time.
//! llama.cpp keeps its cache in f16 by default for the same reason. f16, not bf16: keys and values
//! are small (they come out of RMSNorm'd projections, far inside f16's range), and f16 keeps 11
//! significant bits to bf16's 8.
//!
//! In order: storing rows (rounded to nearest, ties to even, by `half`); one query row of one head
//! over a cache ([`attend`]), portable and with AVX2 + F16C (detected at run time), which give
//! the same bits; the caller, [`attention`], for the rows of any number of sequences at once
//! (the prompts a server admits together, or one row per sequence while decoding).
//!
//! The arithmetic of [`attend`], the same whatever the path: a score is `q·k` summed in 8 lanes
//! (lane l sums the elements l, l + 8, ... in order, products rounded, then added), the lanes
//! reduced as ((0+4) + (2+6)) + ((1+5) + (3+7)), then the `hd % 8` tail in order; the softmax is the
//! training path's; an output element sums `w_j · v_j` over the keys in order. A row's result
//! depends on nothing but its query and its cache: a sequence decodes the same alone or in any
//! batch, and a prompt split anywhere gives the same bits (the rows of a prompt read the keys
//! of its own new rows from the cache too, rounded like the rest).

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{exp_shift_sum, max};
use crate::backend::Segment;

/// Writes `src` rounded to f16 into `dst` at `offset`.
pub(super) fn store(dst: &mut [f16], offset: usize, src: &[f32]) {
    dst[offset..offset + src.len()].convert_from_f32_slice(src);
}

/// Segment i's rows of `src` `[rows, row]` into `dsts[i]` at its positions.
pub(super) fn append(dsts: &mut [&mut Vec<f16>], src: &[f32], row: usize, segs: &[Segment]) {
    assert_eq!(dsts.len(), segs.len(), "kv_append: one cache per segment");
    for (dst, s) in dsts.iter_mut().zip(segs) {
        store(dst, s.pos0 * row, &src[s.row * row..(s.row + s.n) * row]);
    }
}

fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One query row of one head over the first `len` rows of a cache `[rows, kvd]`, the head's
/// columns starting at `off`: `o = softmax(q·kᵀ·scale) · v`; `scores` holds ≥ len.
#[allow(clippy::too_many_arguments)]
fn attend(o: &mut [f32], q: &[f32], k: &[f16], v: &[f16], kvd: usize, off: usize, len: usize, scale: f32, scores: &mut [f32], fast: bool) {
    let hd = q.len();
    let scores = &mut scores[..len];
    #[cfg(target_arch = "x86_64")]
    if fast && hd.is_multiple_of(8) {
        // SAFETY: `fast` is `simd()`; the rows read are inside the cache (asserted by the callers).
        unsafe { x86::scores(scores, q, k, kvd, off) };
    } else {
        portable_scores(scores, q, k, kvd, off);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = fast;
        portable_scores(scores, q, k, kvd, off);
    }
    let m = max(scores) * scale;
    let sum = exp_shift_sum(scores, scale, m);
    for p in scores.iter_mut() {
        *p /= sum;
    }
    #[cfg(target_arch = "x86_64")]
    if fast && hd.is_multiple_of(8) {
        // SAFETY: as above.
        unsafe { x86::weighted_sum(o, scores, v, kvd, off) };
        return;
    }
    o.fill(0.0);
    for (j, &w) in scores.iter().enumerate() {
        for (o, v) in o.iter_mut().zip(&v[j * kvd + off..j * kvd + off + hd]) {
            *o += w * v.to_f32();
        }
    }
}

/// The scores `q·k_j` with the arithmetic of the module header.
fn portable_scores(scores: &mut [f32], q: &[f32], k: &[f16], kvd: usize, off: usize) {
    let hd = q.len();
    let body = hd / 8 * 8;
    for (j, s) in scores.iter_mut().enumerate() {
        let kr = &k[j * kvd + off..j * kvd + off + hd];
        let mut lane = [0.0f32; 8];
        for c in (0..body).step_by(8) {
            for l in 0..8 {
                lane[l] += q[c + l] * kr[c + l].to_f32();
            }
        }
        let mut t = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
        for i in body..hd {
            t += q[i] * kr[i].to_f32();
        }
        *s = t;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// ((0+4) + (2+6)) + ((1+5) + (3+7)) of the 8 lanes.
    #[inline(always)]
    unsafe fn reduce(x: __m256) -> f32 {
        let a = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)); // [0+4, 1+5, 2+6, 3+7]
        let b = _mm_add_ps(a, _mm_movehl_ps(a, a)); // [(0+4)+(2+6), (1+5)+(3+7), ..]
        _mm_cvtss_f32(_mm_add_ss(b, _mm_shuffle_ps(b, b, 1)))
    }

    /// [`super::portable_scores`] for hd a multiple of 8, four keys at a time (four independent
    /// chains of adds).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn scores(scores: &mut [f32], q: &[f32], k: &[f16], kvd: usize, off: usize) {
        let (hd, len) = (q.len(), scores.len());
        assert!(len == 0 || (len - 1) * kvd + off + hd <= k.len());
        let kp = k.as_ptr().add(off);
        let qp = q.as_ptr();
        let mut j = 0;
        while j + 4 <= len {
            let mut acc = [_mm256_setzero_ps(); 4];
            for c in (0..hd).step_by(8) {
                let qv = _mm256_loadu_ps(qp.add(c));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(qv, load8(kp.add((j + r) * kvd + c))));
                }
            }
            for (r, a) in acc.iter().enumerate() {
                scores[j + r] = reduce(*a);
            }
            j += 4;
        }
        while j < len {
            let mut acc = _mm256_setzero_ps();
            for c in (0..hd).step_by(8) {
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(qp.add(c)), load8(kp.add(j * kvd + c))));
            }
            scores[j] = reduce(acc);
            j += 1;
        }
    }

    /// `o = Σ_j w_j · v_j` in key order, 32 columns at a time in four registers.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn weighted_sum(o: &mut [f32], w: &[f32], v: &[f16], kvd: usize, off: usize) {
        let (hd, len) = (o.len(), w.len());
        assert!(len == 0 || (len - 1) * kvd + off + hd <= v.len());
        let vp = v.as_ptr().add(off);
        let mut col = 0;
        while col < hd {
            let blocks = ((hd - col) / 8).min(4);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, &wj) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wj);
                let row = vp.add(j * kvd + col);
                for (b, a) in acc.iter_mut().enumerate().take(blocks) {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, load8(row.add(8 * b))));
                }
            }
            for (b, a) in acc.iter().enumerate().take(blocks) {
                _mm256_storeu_ps(o.as_mut_ptr().add(col + 8 * b), *a);
            }
            col += 8 * blocks;
        }
    }
}

/// `Backend::attention_segments`: one task per (query row, head), each over its own sequence's
/// cache, so a row's result is the same in any call.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    out: &mut [f32],
    q: &[f32],
    ks: &[&Vec<f16>],
    vs: &[&Vec<f16>],
    segs: &[Segment],
    hq: usize,
    hkv: usize,
    hd: usize,
) {
    let (qd, kvd, group) = (hq * hd, hkv * hd, hq / hkv);
    assert!(ks.len() == segs.len() && vs.len() == segs.len(), "attention: one cache per segment");
    // Each row's sequence and how many keys it sees.
    let mut rows = Vec::with_capacity(out.len() / qd);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.row, rows.len(), "attention: the segments tile the rows in order");
        let seen = (s.pos0 + s.n) * kvd;
        assert!(ks[i].len() >= seen && vs[i].len() >= seen, "attention: cache too small");
        rows.extend((0..s.n).map(|j| (i, s.pos0 + j + 1)));
    }
    assert!(out.len() == rows.len() * qd && q.len() == out.len(), "attention: q and out hold one row per segment row");
    let (scale, fast) = (1.0 / (hd as f32).sqrt(), simd());
    let max_len = rows.iter().map(|r| r.1).max().unwrap_or(0);
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || vec![0.0f32; max_len],
        |scores, (task, o)| {
            let (r, h) = (task / hq, task % hq);
            let (i, len) = rows[r];
            let qrow = &q[r * qd + h * hd..r * qd + (h + 1) * hd];
            attend(o, qrow, ks[i], vs[i], kvd, (h / group) * hd, len, scale, scores, fast);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 + F16C path and the portable one give the same bits, at every length around the
    /// four-key blocks and for head sizes with and without a tail.
    #[test]
    fn simd_and_portable_attend_agree_bit_for_bit() {
        if !simd() {
            return;
        }
        let mut x = 12345u32;
        let mut r = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        };
        for (hd, kvd, off) in [(64, 256, 64), (32, 64, 0), (24, 48, 24), (12, 12, 0)] {
            for len in [1, 3, 4, 5, 17, 70] {
                let q: Vec<f32> = (0..hd).map(|_| r()).collect();
                let kf: Vec<f32> = (0..len * kvd).map(|_| r()).collect();
                let vf: Vec<f32> = (0..len * kvd).map(|_| r()).collect();
                let (mut k, mut v) = (vec![f16::ZERO; kf.len()], vec![f16::ZERO; vf.len()]);
                store(&mut k, 0, &kf);
                store(&mut v, 0, &vf);
                let (mut a, mut b) = (vec![0.0; hd], vec![0.0; hd]);
                let mut s = vec![0.0; len];
                attend(&mut a, &q, &k, &v, kvd, off, len, 0.3, &mut s, true);
                attend(&mut b, &q, &k, &v, kvd, off, len, 0.3, &mut s, false);
                let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "hd {hd} len {len}");
            }
        }
    }
}
