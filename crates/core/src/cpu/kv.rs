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
//! over a cache ([`attend`]), portable, with AVX2 + FMA + F16C, and with AVX-512 (detected at run
//! time), which give the same bits; the caller, [`attention`], for the rows of any number of
//! sequences at once (the prompts a server admits together, or one row per sequence while
//! decoding).
//!
//! The arithmetic of [`attend`], the same whatever the path: a score is `q·k` in 16 lanes (lane
//! l fuses the products of the elements l, l + 16, ... into its sum in order, one rounding
//! each), the lanes folded l + (l + 8), then reduced as ((0+1) + (2+3)) + ((4+5) + (6+7)) (four
//! keys' at once by horizontal adds), then the `hd % 16` tail fused in order; the softmax is the
//! training path's exponent, times the inverse of the sum; an output element fuses
//! `w_j · v_j` into its sum over the keys in order. AVX-512 holds the 16 lanes in one register,
//! AVX2 in two, the portable path in an array (`f32::mul_add`). Fused and 16 lanes wide, because
//! the products then cost one instruction per 16: on a 2-core Xeon (model 207) attention went
//! from 22 % of a 240-token prefill's samples (`perf` on `decode_prof`, 8 lanes, products
//! rounded then added) to 14.5 %. A row's result depends on nothing but its query
//! and its cache: a sequence decodes the same alone or in any batch, and a prompt split anywhere
//! gives the same bits (the rows of a prompt read the keys of its own new rows from the cache
//! too, rounded like the rest).

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use multiversion::multiversion;

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

/// Which kernels this CPU runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Avx512,
    Avx2,
    Plain,
}

fn simd() -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            _ => std::arch::is_x86_feature_detected!("avx512f"),
        };
        if has("avx2") && has("fma") && has("f16c") {
            return if has("avx512f") && std::env::var_os("CHATFORGE_NO_AVX512").is_none() { Path::Avx512 } else { Path::Avx2 };
        }
    }
    Path::Plain
}

/// One query row of one head over the first `len` rows of a cache `[rows, kvd]`, the head's
/// columns starting at `off`: `o = softmax(q·kᵀ·scale) · v`; `scores` holds ≥ len.
#[allow(clippy::too_many_arguments)]
fn attend(o: &mut [f32], q: &[f32], k: &[f16], v: &[f16], kvd: usize, off: usize, len: usize, scale: f32, scores: &mut [f32], path: Path) {
    let hd = q.len();
    assert!(len == 0 || (len - 1) * kvd + off + hd <= k.len().min(v.len()), "attend: rows outside the cache");
    let scores = &mut scores[..len];
    match path {
        // SAFETY: the path's features are present (`simd`); the rows read are inside the cache.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { x86::scores16(scores, q, k, kvd, off) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::scores(scores, q, k, kvd, off) },
        _ => portable_scores(scores, q, k, kvd, off),
    }
    softmax(scores, scale);
    match path {
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { x86::weighted_sum16(o, scores, v, kvd, off) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::weighted_sum(o, scores, v, kvd, off) },
        _ => {
            o.fill(0.0);
            for (j, &w) in scores.iter().enumerate() {
                for (o, v) in o.iter_mut().zip(&v[j * kvd + off..j * kvd + off + hd]) {
                    *o = w.mul_add(v.to_f32(), *o);
                }
            }
        }
    }
}

/// `scores = softmax(scores · scale)` in place (the training path's exponent and normalisation).
#[multiversion(targets = "simd")]
fn softmax(scores: &mut [f32], scale: f32) {
    let m = max(scores) * scale;
    let inv = 1.0 / exp_shift_sum(scores, scale, m);
    for p in scores.iter_mut() {
        *p *= inv;
    }
}

/// The 16 lanes folded and reduced as the module header says.
fn reduce16(l: &[f32; 16]) -> f32 {
    let f: Vec<f32> = (0..8).map(|i| l[i] + l[i + 8]).collect();
    ((f[0] + f[1]) + (f[2] + f[3])) + ((f[4] + f[5]) + (f[6] + f[7]))
}

/// The scores `q·k_j` with the arithmetic of the module header.
fn portable_scores(scores: &mut [f32], q: &[f32], k: &[f16], kvd: usize, off: usize) {
    let hd = q.len();
    let body = hd / 16 * 16;
    for (j, s) in scores.iter_mut().enumerate() {
        let kr = &k[j * kvd + off..j * kvd + off + hd];
        let mut lane = [0.0f32; 16];
        for c in (0..body).step_by(16) {
            for l in 0..16 {
                lane[l] = q[c + l].mul_add(kr[c + l].to_f32(), lane[l]);
            }
        }
        let mut t = reduce16(&lane);
        for i in body..hd {
            t = q[i].mul_add(kr[i].to_f32(), t);
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

    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }

    /// The scores of keys j.. (`keys` ≤ 4 of them real) from their folded lanes: the 8-lane
    /// reduction ((0+1) + (2+3)) + ((4+5) + (6+7)) of all four at once, then each one's tail.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn finish(
        f: [__m256; 4],
        keys: usize,
        scores: &mut [f32],
        j: usize,
        q: *const f32,
        kp: *const f16,
        kvd: usize,
        body: usize,
        hd: usize,
    ) {
        let h = _mm256_hadd_ps(_mm256_hadd_ps(f[0], f[1]), _mm256_hadd_ps(f[2], f[3]));
        let mut t = [0.0f32; 4];
        _mm_storeu_ps(t.as_mut_ptr(), _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
        for r in 0..keys {
            scores[j + r] = tail(t[r], q, kp.add((j + r) * kvd), body, hd);
        }
    }

    /// The `hd % 16` tail of a score, fused in order.
    #[inline(always)]
    unsafe fn tail(mut t: f32, q: *const f32, k: *const f16, body: usize, hd: usize) -> f32 {
        for i in body..hd {
            t = (*q.add(i)).mul_add((*k.add(i)).to_f32(), t);
        }
        t
    }

    /// [`super::portable_scores`] with AVX2: the 16 lanes in two registers, four keys at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores(scores: &mut [f32], q: &[f32], k: &[f16], kvd: usize, off: usize) {
        let (hd, len) = (q.len(), scores.len());
        let body = hd / 16 * 16;
        let (kp, qp) = (k.as_ptr().add(off), q.as_ptr());
        let mut j = 0;
        while j < len {
            let keys = (len - j).min(4);
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for c in (0..body).step_by(16) {
                let (q0, q1) = (_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(qp.add(c + 8)));
                for (r, a) in acc.iter_mut().enumerate().take(keys) {
                    let row = kp.add((j + r) * kvd + c);
                    a[0] = _mm256_fmadd_ps(q0, load8(row), a[0]);
                    a[1] = _mm256_fmadd_ps(q1, load8(row.add(8)), a[1]);
                }
            }
            let f = [0, 1, 2, 3].map(|r| _mm256_add_ps(acc[r][0], acc[r][1]));
            finish(f, keys, scores, j, qp, kp, kvd, body, hd);
            j += keys;
        }
    }

    /// [`super::portable_scores`] with AVX-512: the 16 lanes in one register, four keys at a time.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn scores16(scores: &mut [f32], q: &[f32], k: &[f16], kvd: usize, off: usize) {
        let (hd, len) = (q.len(), scores.len());
        let body = hd / 16 * 16;
        let (kp, qp) = (k.as_ptr().add(off), q.as_ptr());
        let mut j = 0;
        while j < len {
            let keys = (len - j).min(4);
            let mut acc = [_mm512_setzero_ps(); 4];
            for c in (0..body).step_by(16) {
                let qv = _mm512_loadu_ps(qp.add(c));
                for (r, a) in acc.iter_mut().enumerate().take(keys) {
                    *a = _mm512_fmadd_ps(qv, load16(kp.add((j + r) * kvd + c)), *a);
                }
            }
            let f = acc.map(|a| _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))));
            finish(f, keys, scores, j, qp, kp, kvd, body, hd);
            j += keys;
        }
    }

    /// The columns `col..` of `o = Σ_j w_j · v_j` one at a time (each fused in key order).
    #[inline(always)]
    unsafe fn weighted_tail(o: &mut [f32], w: &[f32], vp: *const f16, kvd: usize, col: usize) {
        for (c, o) in o.iter_mut().enumerate().skip(col) {
            *o = 0.0;
            for (j, &wj) in w.iter().enumerate() {
                *o = wj.mul_add((*vp.add(j * kvd + c)).to_f32(), *o);
            }
        }
    }

    /// `o = Σ_j w_j · v_j` in key order, each element one fused chain: 32 columns at a time in
    /// four registers, then 8 at a time, then one.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum(o: &mut [f32], w: &[f32], v: &[f16], kvd: usize, off: usize) {
        let hd = o.len();
        let vp = v.as_ptr().add(off);
        let mut col = 0;
        while col + 8 <= hd {
            let blocks = ((hd - col) / 8).min(4);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, &wj) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wj);
                let row = vp.add(j * kvd + col);
                for (b, a) in acc.iter_mut().enumerate().take(blocks) {
                    *a = _mm256_fmadd_ps(wv, load8(row.add(8 * b)), *a);
                }
            }
            for (b, a) in acc.iter().enumerate().take(blocks) {
                _mm256_storeu_ps(o.as_mut_ptr().add(col + 8 * b), *a);
            }
            col += 8 * blocks;
        }
        weighted_tail(o, w, vp, kvd, col);
    }

    /// [`weighted_sum`] with AVX-512: 64 columns at a time in four registers, then 16, then the
    /// 8-lane and single-column tails.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum16(o: &mut [f32], w: &[f32], v: &[f16], kvd: usize, off: usize) {
        let hd = o.len();
        let vp = v.as_ptr().add(off);
        let mut col = 0;
        while col + 16 <= hd {
            let blocks = ((hd - col) / 16).min(4);
            let mut acc = [_mm512_setzero_ps(); 4];
            for (j, &wj) in w.iter().enumerate() {
                let wv = _mm512_set1_ps(wj);
                let row = vp.add(j * kvd + col);
                for (b, a) in acc.iter_mut().enumerate().take(blocks) {
                    *a = _mm512_fmadd_ps(wv, load16(row.add(16 * b)), *a);
                }
            }
            for (b, a) in acc.iter().enumerate().take(blocks) {
                _mm512_storeu_ps(o.as_mut_ptr().add(col + 16 * b), *a);
            }
            col += 16 * blocks;
        }
        if col < hd {
            weighted_sum(&mut o[col..], w, v, kvd, off + col);
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
    let (scale, path) = (1.0 / (hd as f32).sqrt(), simd());
    let max_len = rows.iter().map(|r| r.1).max().unwrap_or(0);
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || vec![0.0f32; max_len],
        |scores, (task, o)| {
            let (r, h) = (task / hq, task % hq);
            let (i, len) = rows[r];
            let qrow = &q[r * qd + h * hd..r * qd + (h + 1) * hd];
            attend(o, qrow, ks[i], vs[i], kvd, (h / group) * hd, len, scale, scores, path);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path this CPU has gives the portable path's bits, at every length around the
    /// four-key blocks and for head sizes with and without 16- and 8-lane tails; and the
    /// portable path is attention (against f64 on the rounded cache).
    #[test]
    fn every_path_gives_the_portable_bits() {
        let mut x = 12345u32;
        let mut r = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        };
        let have = simd();
        let paths: Vec<Path> = [Path::Avx512, Path::Avx2].into_iter().filter(|&p| have == Path::Avx512 || p == have).collect();
        for (hd, kvd, off) in [(64, 256, 64), (32, 64, 0), (24, 48, 24), (12, 12, 0), (80, 160, 80), (40, 40, 0), (8, 16, 8)] {
            for len in [1, 3, 4, 5, 17, 70] {
                let q: Vec<f32> = (0..hd).map(|_| r()).collect();
                let kf: Vec<f32> = (0..len * kvd).map(|_| r()).collect();
                let vf: Vec<f32> = (0..len * kvd).map(|_| r()).collect();
                let (mut k, mut v) = (vec![f16::ZERO; kf.len()], vec![f16::ZERO; vf.len()]);
                store(&mut k, 0, &kf);
                store(&mut v, 0, &vf);
                let mut s = vec![0.0; len];
                let mut want = vec![0.0; hd];
                attend(&mut want, &q, &k, &v, kvd, off, len, 0.3, &mut s, Path::Plain);
                let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
                for &p in &paths {
                    let mut got = vec![0.0; hd];
                    attend(&mut got, &q, &k, &v, kvd, off, len, 0.3, &mut s, p);
                    assert_eq!(bits(&got), bits(&want), "{p:?}: hd {hd} len {len}");
                }
                let sc: Vec<f64> =
                    (0..len).map(|j| (0..hd).map(|c| q[c] as f64 * k[j * kvd + off + c].to_f64()).sum::<f64>() * 0.3).collect();
                let m = sc.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for c in 0..hd {
                    let o: f64 = (0..len).map(|j| (sc[j] - m).exp() / z * v[j * kvd + off + c].to_f64()).sum();
                    assert!((o - want[c] as f64).abs() < 1e-5, "hd {hd} len {len} col {c}: {} vs {o}", want[c]);
                }
            }
        }
    }
}
