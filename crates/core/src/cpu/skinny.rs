//! Skinny matmul for decoding: `c[m,n] (+)= a[m,k] · b[n,k]ᵀ` with few rows m, the shape of every
//! linear layer while decoding (one row per live sequence, weights in HF's `[out, in]` layout).
//!
//! Why not `gemm`: it packs both operands on every call. While decoding, each weight is used by
//! only a few rows, so packing the weights costs about as much as the arithmetic (measured:
//! 1.1–3× slower than this kernel at m = 1–32 for the speedrun's shapes). Here no operand is
//! packed: both are read where they lie, k-contiguous, as dot products. Each rayon task takes a
//! block of 64 activation rows × 24 weight rows (both stay in L1/L2) and covers it in register
//! tiles: on AVX-512, 16 lanes per FMA in tiles of 4 rows × 4 weight rows (2 × 8 and 1 × 8 for
//! fewer rows), since its 32 registers hold them; else 8 lanes (AVX2+FMA) in tiles of 4 × 3
//! (1 × 8 for a lone row); plain loops elsewhere, all detected at run time. A lone row's blocks
//! are dealt out in one contiguous share per thread.
//!
//! Determinism: every output is one chain of lane-wise FMAs along k, then a fixed horizontal
//! reduction, then the k % lanes tail, whatever tile computed it. So on one CPU a row's result
//! depends neither on the thread count nor on which other rows share the call: a sequence
//! decodes the same tokens alone or in any batch. (The AVX-512 and AVX2 paths sum in different
//! orders, so two CPUs may differ in the last bits, as they do for `gemm`.) Measured on a 2-core
//! Xeon (model 207), `skinny_bench`: 32 rows 403–414 → 509–511 steps/s, 240 rows 57–59 → 72–76;
//! one row 2.8–3.0k either way (it streams the weights). `CHATFORGE_NO_AVX512=1` picks the
//! AVX2 path, for such A/Bs. The AVX-512 tiles' 16 sums are reduced together in 512-bit
//! registers (`finish16`, the same sums bit for bit): with operands on 64-byte lines
//! (`crate::alloc`), `NO_HEAD=1 skinny_bench` on that Xeon read 166–184 → 192–210 GFLOP/s at 240
//! rows and 147–164 → 170–189 at 32.

use rayon::prelude::*;

use super::SendPtr;

/// Weight rows per rayon task: 24 rows of k = 256–1024 floats stay in L1/L2 while the
/// activation rows of the task pass over them.
const COLS_PER_TASK: usize = 24;
/// Activation rows per rayon task (a prefill has thousands; their block stays in L2).
const ROWS_PER_TASK: usize = 64;
/// Below this many multiply-adds one thread does the whole call (rayon's hand-off costs more).
/// Low, because a lone decoding row is bound by streaming the weights, and two cores stream
/// them ~1.6× faster than one (measured: single-stream 334–343 → 524–883 tok/s vs 2^18).
const PARALLEL_MIN: usize = 1 << 15;

/// `c[m,n] = (accumulate ? c : 0) + a[m,k] · b[n,k]ᵀ`, all row-major and dense.
pub fn matmul_nt(c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    assert!(c.len() == m * n && a.len() == m * k && b.len() == n * k, "skinny matmul: shapes do not match");
    let out = SendPtr(c.as_mut_ptr());
    let (a, b) = (a.as_ptr() as usize, b.as_ptr() as usize);
    let (row_blocks, col_blocks) = (m.div_ceil(ROWS_PER_TASK), n.div_ceil(COLS_PER_TASK));
    let block = move |t: usize| {
        let (i0, j0) = ((t / col_blocks) * ROWS_PER_TASK, (t % col_blocks) * COLS_PER_TASK);
        let (i1, j1) = ((i0 + ROWS_PER_TASK).min(m), (j0 + COLS_PER_TASK).min(n));
        // SAFETY: tasks write disjoint blocks [i0, i1) x [j0, j1) of c; a and b outlive the call.
        unsafe { block_of(out.get(), a as *const f32, b as *const f32, n, k, (i0, i1), (j0, j1), accumulate) }
    };
    if m * n * k < PARALLEL_MIN {
        (0..row_blocks * col_blocks).for_each(block);
    } else if m == 1 {
        // A lone row: one contiguous share of the weight rows per thread, so one fork and join
        // instead of a steal per block (measured, `skinny_bench`: the single-stream step's 29
        // matmuls 4.0–4.2k → 4.9–5.0k steps/s on 2 threads; at 8 and 32 rows the blocks win).
        let parts = rayon::current_num_threads().min(col_blocks);
        (0..parts).into_par_iter().with_max_len(1).for_each(|p| {
            for t in p * col_blocks / parts..(p + 1) * col_blocks / parts {
                block(t);
            }
        });
    } else {
        (0..row_blocks * col_blocks).into_par_iter().for_each(block);
    }
}

/// Which kernel this CPU runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Avx512,
    Avx2,
    Plain,
}

fn simd_path() -> Path {
    static PATH: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("CHATFORGE_NO_AVX512").is_none() && std::arch::is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Path::Avx2;
            }
        }
        Path::Plain
    })
}

/// Rows `i0..i1` × columns `j0..j1` of `c`, tile by tile.
#[allow(clippy::too_many_arguments)]
unsafe fn block_of(
    c: *mut f32,
    a: *const f32,
    b: *const f32,
    n: usize,
    k: usize,
    (i0, i1): (usize, usize),
    (j0, j1): (usize, usize),
    accumulate: bool,
) {
    let path = simd_path();
    let mut i = i0;
    while i < i1 {
        let r = (i1 - i).min(4);
        // Widest tile that keeps r·cols accumulators (+ operands) within the vector registers
        // (16 with AVX2, 32 with AVX-512).
        let cols = if path == Path::Avx512 { [0, 8, 8, 4, 4][r] } else { [0, 8, 4, 4, 3][r] };
        let mut j = j0;
        while j < j1 {
            let w = if j + cols <= j1 { cols } else { 1 };
            let (ap, bp) = (a.add(i * k), b.add(j * k));
            let mut t = [[0.0f32; 8]; 4];
            match path {
                #[cfg(target_arch = "x86_64")]
                Path::Avx512 => x86::tile16(r, w, ap, bp, k, &mut t),
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => x86::tile(r, w, ap, bp, k, &mut t),
                _ => tile_plain(r, w, ap, bp, k, &mut t),
            }
            for (ii, row) in t.iter().enumerate().take(r) {
                for (jj, &v) in row.iter().enumerate().take(w) {
                    let dst = c.add((i + ii) * n + j + jj);
                    *dst = if accumulate { *dst + v } else { v };
                }
            }
            j += w;
        }
        i += r;
    }
}

/// The horizontal sum of 8 lanes in the AVX2 tile's order.
fn reduce8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// The same arithmetic as the AVX2 tile (8 lanes, fixed reduction), without intrinsics.
unsafe fn tile_plain(r: usize, w: usize, a: *const f32, b: *const f32, k: usize, t: &mut [[f32; 8]; 4]) {
    let k8 = k / 8 * 8;
    for (i, row) in t.iter_mut().enumerate().take(r) {
        for (j, out) in row.iter_mut().enumerate().take(w) {
            let (x, y) = (std::slice::from_raw_parts(a.add(i * k), k), std::slice::from_raw_parts(b.add(j * k), k));
            let mut lane = [0.0f32; 8];
            for p in (0..k8).step_by(8) {
                for l in 0..8 {
                    lane[l] += x[p + l] * y[p + l];
                }
            }
            let mut s = reduce8(&lane);
            for p in k8..k {
                s += x[p] * y[p];
            }
            *out = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Dispatches to a tile of r rows × w weight rows (const sizes, so accumulators stay in registers).
    pub(super) unsafe fn tile(r: usize, w: usize, a: *const f32, b: *const f32, k: usize, t: &mut [[f32; 8]; 4]) {
        match (r, w) {
            (4, 3) => kernel::<4, 3>(a, b, k, t),
            (3, 4) => kernel::<3, 4>(a, b, k, t),
            (2, 4) => kernel::<2, 4>(a, b, k, t),
            (1, 8) => kernel::<1, 8>(a, b, k, t),
            (4, 1) => kernel::<4, 1>(a, b, k, t),
            (3, 1) => kernel::<3, 1>(a, b, k, t),
            (2, 1) => kernel::<2, 1>(a, b, k, t),
            (1, 1) => kernel::<1, 1>(a, b, k, t),
            _ => unreachable!("no tile of {r}x{w}"),
        }
    }

    /// The AVX-512 tiles: 16 lanes per FMA.
    pub(super) unsafe fn tile16(r: usize, w: usize, a: *const f32, b: *const f32, k: usize, t: &mut [[f32; 8]; 4]) {
        match (r, w) {
            (4, 4) => kernel16::<4, 4>(a, b, k, t),
            (3, 4) => kernel16::<3, 4>(a, b, k, t),
            (2, 8) => kernel16::<2, 8>(a, b, k, t),
            (1, 8) => kernel16::<1, 8>(a, b, k, t),
            (4, 1) => kernel16::<4, 1>(a, b, k, t),
            (3, 1) => kernel16::<3, 1>(a, b, k, t),
            (2, 1) => kernel16::<2, 1>(a, b, k, t),
            (1, 1) => kernel16::<1, 1>(a, b, k, t),
            _ => unreachable!("no tile of {r}x{w}"),
        }
    }

    /// 16 lanes along k, then lanes l and l + 8 added, then the 8-lane tree of `kernel`, then the
    /// k % 16 tail.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn kernel16<const R: usize, const W: usize>(a: *const f32, b: *const f32, k: usize, t: &mut [[f32; 8]; 4]) {
        let k16 = k / 16 * 16;
        let mut acc = [[_mm512_setzero_ps(); W]; R];
        let mut p = 0;
        while p < k16 {
            let mut bv = [_mm512_setzero_ps(); W];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.add(j * k + p));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_loadu_ps(a.add(i * k + p));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, bv, *acc);
                }
            }
            p += 16;
        }
        let mut flat = [_mm512_setzero_ps(); 16];
        for (i, row) in acc.iter().enumerate() {
            flat[i * W..(i + 1) * W].copy_from_slice(row);
        }
        finish16(&flat, R, W, a, b, k, k16, t);
    }

    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn finish16_for_test(acc: &[__m512; 16], r: usize, w: usize, t: &mut [[f32; 8]; 4]) {
        finish16(acc, r, w, std::ptr::null(), std::ptr::null(), 0, 0, t)
    }

    /// The 256-bit path's reduction of the same accumulators (lanes l and l + 8 added first).
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn finish_for_test(acc: &[__m512; 16], r: usize, w: usize, t: &mut [[f32; 8]; 4]) {
        let flat: [__m256; 16] = std::array::from_fn(|g| {
            _mm256_add_ps(_mm512_castps512_ps256(acc[g]), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[g]), 1)))
        });
        finish(&flat, r, w, std::ptr::null(), std::ptr::null(), 0, 0, t)
    }

    /// [`finish`] for 16-lane accumulators, all 16 at once in 512-bit registers: lanes l and
    /// l + 8 added, then the 8-lane tree of [`finish`] by in-lane shuffles (a `vhaddps` per
    /// 128-bit lane), pairs of registers merged at each level, so 16 sums take 30 shuffles and
    /// 15 adds instead of 44 and 32. The same sums, bit for bit; then the tail k0..k.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn finish16(acc: &[__m512; 16], r: usize, w: usize, a: *const f32, b: *const f32, k: usize, k0: usize, t: &mut [[f32; 8]; 4]) {
        // [x0 x1 x2 x3] per 128-bit lane of x and y -> [x0+x1, x2+x3, y0+y1, y2+y3].
        let hadd = |x: __m512, y: __m512| _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
        // Fold: [a.lo + a.hi | b.lo + b.hi] for the pairs (0, 1), (2, 3), ...
        let f: [__m512; 8] = std::array::from_fn(|p| {
            let (x, y) = (acc[2 * p], acc[2 * p + 1]);
            _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE))
        });
        let z: [__m512; 4] = std::array::from_fn(|p| hadd(f[2 * p], f[2 * p + 1]));
        let v: [__m512; 2] = std::array::from_fn(|p| hadd(z[2 * p], z[2 * p + 1]));
        // Each 256-bit half's low and high 128-bit lanes hold the two halves of the 8-lane tree;
        // the permutation puts accumulator g's sum in lane g.
        let s = _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x88), _mm512_shuffle_f32x4(v[0], v[1], 0xDD));
        let s = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), s);
        let mut out = [0.0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), s);
        for (i, row) in t.iter_mut().enumerate().take(r) {
            for (j, o) in row.iter_mut().enumerate().take(w) {
                let mut s = out[i * w + j];
                for q in k0..k {
                    s += *a.add(i * k + q) * *b.add(j * k + q);
                }
                *o = s;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const R: usize, const W: usize>(a: *const f32, b: *const f32, k: usize, t: &mut [[f32; 8]; 4]) {
        let k8 = k / 8 * 8;
        let mut acc = [[_mm256_setzero_ps(); W]; R];
        let mut p = 0;
        while p < k8 {
            let mut bv = [_mm256_setzero_ps(); W];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(b.add(j * k + p));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_loadu_ps(a.add(i * k + p));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, bv, *acc);
                }
            }
            p += 8;
        }
        let mut flat = [_mm256_setzero_ps(); 16];
        for (i, row) in acc.iter().enumerate() {
            flat[i * W..(i + 1) * W].copy_from_slice(row);
        }
        finish(&flat, R, W, a, b, k, k8, t);
    }

    /// The horizontal sums of r·w 8-lane accumulators, four at a time: ((l0+l1)+(l2+l3)) +
    /// ((l4+l5)+(l6+l7)), the tree `reduce8` computes for one; then the tail k0..k.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish(flat: &[__m256; 16], r: usize, w: usize, a: *const f32, b: *const f32, k: usize, k0: usize, t: &mut [[f32; 8]; 4]) {
        let mut sums = [0.0f32; 16];
        for g in (0..r * w).step_by(4) {
            let h = _mm256_hadd_ps(_mm256_hadd_ps(flat[g], flat[g + 1]), _mm256_hadd_ps(flat[g + 2], flat[g + 3]));
            _mm_storeu_ps(sums.as_mut_ptr().add(g), _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
        }
        for (i, row) in t.iter_mut().enumerate().take(r) {
            for (j, out) in row.iter_mut().enumerate().take(w) {
                let mut s = sums[i * w + j];
                for q in k0..k {
                    s += *a.add(i * k + q) * *b.add(j * k + q);
                }
                *out = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[j * k + p] as f64).sum();
            }
        }
        c
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    #[test]
    fn matches_f64_on_odd_shapes_and_accumulates() {
        for &(m, n, k) in &[(1, 1, 1), (1, 37, 13), (3, 17, 8), (5, 40, 259), (7, 700, 64), (64, 33, 256), (9, 1000, 300)] {
            let (a, b) = (data(m * k, 1), data(n * k, 2));
            let want = reference(&a, &b, m, n, k);
            let mut c = data(m * n, 3);
            let before = c.clone();
            matmul_nt(&mut c, &a, &b, m, n, k, true);
            for i in 0..m * n {
                let err = (c[i] as f64 - before[i] as f64 - want[i]).abs();
                assert!(err <= 1e-5 * (k as f64).sqrt() * 4.0, "{m}x{n}x{k} at {i}: {} vs {}", c[i], want[i]);
            }
            matmul_nt(&mut c, &a, &b, m, n, k, false);
            for i in 0..m * n {
                assert!((c[i] as f64 - want[i]).abs() <= 1e-5 * (k as f64).sqrt() * 4.0);
            }
        }
    }

    /// Every tile of every path this CPU has (only one runs in `matmul_nt`), against f64, with
    /// k tails of every length mod 16.
    #[test]
    fn every_path_and_tile_matches_f64() {
        #[cfg(target_arch = "x86_64")]
        let (avx2, avx512) = (
            std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma"),
        );
        let tiles8: &[(usize, usize)] = &[(4, 3), (3, 4), (2, 4), (1, 8), (4, 1), (3, 1), (2, 1), (1, 1)];
        let tiles16: &[(usize, usize)] = &[(4, 4), (3, 4), (2, 8), (1, 8), (4, 1), (3, 1), (2, 1), (1, 1)];
        for k in [1, 7, 8, 15, 16, 17, 31, 256, 259] {
            let (a, b) = (data(4 * k, 7), data(8 * k, 8));
            let want = reference(&a, &b, 4, 8, k);
            let check = |name: &str, r: usize, w: usize, t: &[[f32; 8]; 4]| {
                for i in 0..r {
                    for j in 0..w {
                        let err = (t[i][j] as f64 - want[i * 8 + j]).abs();
                        assert!(err <= 1e-5 * (k as f64).sqrt() * 4.0, "{name} {r}x{w}, k {k}: {} vs {}", t[i][j], want[i * 8 + j]);
                    }
                }
            };
            // b's rows are k apart, so a tile of w weight rows reads rows 0..w.
            for &(r, w) in tiles8 {
                let mut t = [[0.0f32; 8]; 4];
                unsafe { tile_plain(r, w, a.as_ptr(), b.as_ptr(), k, &mut t) };
                check("plain", r, w, &t);
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    let mut t = [[0.0f32; 8]; 4];
                    unsafe { x86::tile(r, w, a.as_ptr(), b.as_ptr(), k, &mut t) };
                    check("avx2", r, w, &t);
                }
            }
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                for &(r, w) in tiles16 {
                    let mut t = [[0.0f32; 8]; 4];
                    unsafe { x86::tile16(r, w, a.as_ptr(), b.as_ptr(), k, &mut t) };
                    check("avx512", r, w, &t);
                }
            }
            let _ = tiles16;
        }
    }

    /// The 512-bit reduction gives the 256-bit one's sums bit for bit, in every tile shape's order.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_reductions_give_the_same_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use std::arch::x86_64::*;
        let v = data(256, 9);
        for (r, w) in [(4, 4), (3, 4), (2, 8), (1, 8), (4, 1), (1, 1)] {
            let (mut t16, mut t8) = ([[0.0f32; 8]; 4], [[0.0f32; 8]; 4]);
            // SAFETY: AVX-512 is present; k0 == k, so no operand is read.
            unsafe {
                let acc: [__m512; 16] =
                    std::array::from_fn(|g| if g < r * w { _mm512_loadu_ps(v.as_ptr().add(16 * g)) } else { _mm512_setzero_ps() });
                x86::finish16_for_test(&acc, r, w, &mut t16);
                x86::finish_for_test(&acc, r, w, &mut t8);
            }
            assert_eq!(t16, t8, "{r}x{w}");
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_or_in_any_batch() {
        let (n, k) = (300, 260);
        let (a, b) = (data(11 * k, 5), data(n * k, 6));
        let mut all = vec![0.0; 11 * n];
        matmul_nt(&mut all, &a, &b, 11, n, k, false);
        for i in 0..11 {
            let mut one = vec![0.0; n];
            matmul_nt(&mut one, &a[i * k..(i + 1) * k], &b, 1, n, k, false);
            assert_eq!(one, all[i * n..(i + 1) * n], "row {i}");
        }
    }
}
