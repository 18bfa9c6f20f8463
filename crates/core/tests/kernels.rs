//! Every fused CPU kernel against a plain, obviously-correct f64 reference on random shapes.

use chatforge_core::backend::{AdamWStep, AttnShape, Backend, Op, Rope, Segment, IGNORE};
use chatforge_core::cpu::{exp_fast, Cpu};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, want {w} (err {err:e})");
    }
}

fn naive_matmul(a: &[f32], ta: Op, b: &[f32], tb: Op, m: usize, n: usize, k: usize) -> Vec<f64> {
    let at = |i: usize, p: usize| if ta == Op::N { a[i * k + p] } else { a[p * m + i] } as f64;
    let bt = |p: usize, j: usize| if tb == Op::N { b[p * n + j] } else { b[j * k + p] } as f64;
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
        }
    }
    c
}

#[test]
fn exp_fast_is_accurate() {
    let mut x = -80.0f32;
    while x < 80.0 {
        let (got, want) = (exp_fast(x) as f64, (x as f64).exp());
        assert!((got - want).abs() <= 3e-7 * want, "exp({x}) = {got}, want {want}");
        x += 0.0137;
    }
    assert!(exp_fast(-1000.0) < 1e-37 && exp_fast(-1000.0) >= 0.0);
}

#[test]
fn matmul_all_layouts() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 33, 65), (128, 96, 200), (64, 1, 300)] {
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                let a = rand_vec(&mut rng, m * k, 1.0);
                let b = rand_vec(&mut rng, k * n, 1.0);
                let want = naive_matmul(&a, ta, &b, tb, m, n, k);
                let mut c = vec![f32::NAN; m * n];
                Cpu.matmul(&mut c, &a, ta, &b, tb, m, n, k, false);
                assert_close(&c, &want, 1e-5, 1e-5, "matmul");
                // accumulate adds onto what is there
                let base = rand_vec(&mut rng, m * n, 1.0);
                let mut c = base.clone();
                Cpu.matmul(&mut c, &a, ta, &b, tb, m, n, k, true);
                let want: Vec<f64> = want.iter().zip(&base).map(|(w, b)| w + *b as f64).collect();
                assert_close(&c, &want, 1e-5, 1e-5, "matmul accumulate");
            }
        }
    }
}

#[test]
fn rmsnorm_forward_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &(n, d) in &[(1, 8), (37, 64), (130, 96)] {
        let eps = 1e-5;
        let x = rand_vec(&mut rng, n * d, 2.0);
        let w = rand_vec(&mut rng, d, 1.0);
        let dy = rand_vec(&mut rng, n * d, 1.0);
        let (mut y, mut rstd) = (vec![0.0; n * d], vec![0.0; n]);
        Cpu.rmsnorm(&mut y, &mut rstd, &x, &w, d, eps);
        let mut want_y = vec![0.0; n * d];
        let mut want_dx = vec![0.0; n * d];
        let mut want_dw = vec![0.0; d];
        for r in 0..n {
            let xr: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let ms = xr.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            for i in 0..d {
                want_y[r * d + i] = xr[i] * inv * w[i] as f64;
                want_dw[i] += dy[r * d + i] as f64 * xr[i] * inv;
            }
            // dx_i = Σ_j dy_j w_j ∂(x_j·inv)/∂x_i = Σ_j dy_j w_j (δij·inv − x_j x_i inv³ / d)
            for i in 0..d {
                let mut s = 0.0;
                for j in 0..d {
                    let delta = if i == j { inv } else { 0.0 };
                    s += dy[r * d + j] as f64 * w[j] as f64 * (delta - xr[j] * xr[i] * inv.powi(3) / d as f64);
                }
                want_dx[r * d + i] = s;
            }
        }
        assert_close(&y, &want_y, 1e-5, 1e-6, "rmsnorm y");
        let (mut dx, mut dw) = (vec![0.0; n * d], vec![0.0; d]);
        Cpu.rmsnorm_backward(&mut dx, &mut dw, &dy, &x, &w, &rstd, d, false);
        assert_close(&dx, &want_dx, 1e-4, 1e-5, "rmsnorm dx");
        assert_close(&dw, &want_dw, 1e-4, 1e-5, "rmsnorm dw");
        // accumulate mode adds onto the residual gradient
        let mut dx2 = vec![1.0; n * d];
        let mut dw2 = vec![0.0; d];
        Cpu.rmsnorm_backward(&mut dx2, &mut dw2, &dy, &x, &w, &rstd, d, true);
        let want: Vec<f64> = want_dx.iter().map(|v| v + 1.0).collect();
        assert_close(&dx2, &want, 1e-4, 1e-5, "rmsnorm dx accumulate");
    }
}

#[test]
fn rope_matches_rotate_half_and_inverts() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (b, t, heads, hd, theta, pos0) = (2, 9, 3, 8, 10000.0f32, 5);
    let x = rand_vec(&mut rng, b * t * heads * hd, 1.0);
    let mut y = x.clone();
    Cpu.rope(&mut y, heads, hd, t, pos0, &Rope::plain(theta), false);
    let half = hd / 2;
    let mut want = vec![0.0; x.len()];
    for n in 0..b * t {
        let pos = (pos0 + n % t) as f64;
        for h in 0..heads {
            let base = (n * heads + h) * hd;
            for i in 0..half {
                let ang = pos / (theta as f64).powf(2.0 * i as f64 / hd as f64);
                let (x1, x2) = (x[base + i] as f64, x[base + i + half] as f64);
                want[base + i] = x1 * ang.cos() - x2 * ang.sin();
                want[base + i + half] = x2 * ang.cos() + x1 * ang.sin();
            }
        }
    }
    assert_close(&y, &want, 1e-5, 1e-5, "rope");
    Cpu.rope(&mut y, heads, hd, t, pos0, &Rope::plain(theta), true);
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    assert_close(&y, &xd, 1e-5, 1e-5, "rope inverse");
}

/// Plain causal attention in f64: returns out, and the gradients for a given dout.
#[allow(clippy::type_complexity)]
fn naive_attention(q: &[f32], k: &[f32], v: &[f32], dout: &[f32], s: AttnShape) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let AttnShape { b, t, hq, hkv, hd } = s;
    let (qd, kvd) = (hq * hd, hkv * hd);
    let scale = 1.0 / (hd as f64).sqrt();
    let (mut out, mut dq, mut dk, mut dv) = (vec![0.0; b * t * qd], vec![0.0; b * t * qd], vec![0.0; b * t * kvd], vec![0.0; b * t * kvd]);
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / (hq / hkv);
            let qi = |i: usize, c: usize| q[(bi * t + i) * qd + h * hd + c] as f64;
            let kj = |j: usize, c: usize| k[(bi * t + j) * kvd + kh * hd + c] as f64;
            let vj = |j: usize, c: usize| v[(bi * t + j) * kvd + kh * hd + c] as f64;
            let doi = |i: usize, c: usize| dout[(bi * t + i) * qd + h * hd + c] as f64;
            for i in 0..t {
                let sc: Vec<f64> = (0..=i).map(|j| (0..hd).map(|c| qi(i, c) * kj(j, c)).sum::<f64>() * scale).collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / z).collect();
                for c in 0..hd {
                    out[(bi * t + i) * qd + h * hd + c] = (0..=i).map(|j| p[j] * vj(j, c)).sum();
                }
                // backward
                let dp: Vec<f64> = (0..=i).map(|j| (0..hd).map(|c| doi(i, c) * vj(j, c)).sum()).collect();
                let dot: f64 = (0..=i).map(|j| dp[j] * p[j]).sum();
                for j in 0..=i {
                    let ds = p[j] * (dp[j] - dot) * scale;
                    for c in 0..hd {
                        dq[(bi * t + i) * qd + h * hd + c] += ds * kj(j, c);
                        dk[(bi * t + j) * kvd + kh * hd + c] += ds * qi(i, c);
                        dv[(bi * t + j) * kvd + kh * hd + c] += p[j] * doi(i, c);
                    }
                }
            }
        }
    }
    (out, dq, dk, dv)
}

#[test]
fn attention_forward_backward_gqa_and_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // t = 70 and 130 cross the 64-row block boundary; hq/hkv = 2 is GQA, 1 is MHA.
    for s in [
        AttnShape { b: 2, t: 70, hq: 4, hkv: 2, hd: 8 },
        AttnShape { b: 1, t: 130, hq: 2, hkv: 2, hd: 16 },
        AttnShape { b: 3, t: 5, hq: 3, hkv: 1, hd: 4 },
    ] {
        let n = s.b * s.t;
        let q = rand_vec(&mut rng, n * s.hq * s.hd, 1.0);
        let k = rand_vec(&mut rng, n * s.hkv * s.hd, 1.0);
        let v = rand_vec(&mut rng, n * s.hkv * s.hd, 1.0);
        let dout = rand_vec(&mut rng, n * s.hq * s.hd, 1.0);
        let (want_o, want_dq, want_dk, want_dv) = naive_attention(&q, &k, &v, &dout, s);
        let mut o = vec![f32::NAN; q.len()];
        let mut probs = vec![f32::NAN; s.b * s.hq * s.t * s.t];
        Cpu.attention(&mut o, &mut probs, &q, &k, &v, s, None);
        assert_close(&o, &want_o, 1e-4, 1e-5, "attention out");
        let (mut dq, mut dk, mut dv) = (vec![f32::NAN; q.len()], vec![f32::NAN; k.len()], vec![f32::NAN; v.len()]);
        let mut scratch = vec![f32::NAN; s.b * s.hkv * s.t * s.t];
        Cpu.attention_backward(&mut dq, &mut dk, &mut dv, &mut scratch, &dout, &probs, &q, &k, &v, s);
        assert_close(&dq, &want_dq, 1e-4, 1e-5, "attention dq");
        assert_close(&dk, &want_dk, 1e-4, 1e-5, "attention dk");
        assert_close(&dv, &want_dv, 1e-4, 1e-5, "attention dv");
    }
}

/// A row packed with documents, each attending to itself only, gives what each document gives
/// alone: outputs and the gradients of q, k and v (the 64-row block boundary crossed).
#[test]
fn document_masked_attention_is_each_document_alone() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (hq, hkv, hd) = (4, 2, 8);
    let lens = [30usize, 50, 1, 19];
    let t: usize = lens.iter().sum();
    let s = AttnShape { b: 1, t, hq, hkv, hd };
    let (qd, kvd) = (hq * hd, hkv * hd);
    let q = rand_vec(&mut rng, t * qd, 1.0);
    let k = rand_vec(&mut rng, t * kvd, 1.0);
    let v = rand_vec(&mut rng, t * kvd, 1.0);
    let dout = rand_vec(&mut rng, t * qd, 1.0);
    // The separator ends each document: starts 0, 30, 80, 81.
    let sep = 9u32;
    let mut ids = vec![1u32; t];
    let mut end = 0;
    for l in lens {
        end += l;
        ids[end - 1] = sep;
    }
    let docs = chatforge_core::model::doc_starts(&ids, t, sep);
    let run = |s: AttnShape, q: &[f32], k: &[f32], v: &[f32], dout: &[f32], docs: Option<&[u32]>| {
        let mut o = vec![f32::NAN; q.len()];
        let mut probs = vec![f32::NAN; s.b * s.hq * s.t * s.t];
        Cpu.attention(&mut o, &mut probs, &q.to_vec(), &k.to_vec(), &v.to_vec(), s, docs);
        let (mut dq, mut dk, mut dv) = (vec![f32::NAN; q.len()], vec![f32::NAN; k.len()], vec![f32::NAN; v.len()]);
        let mut scratch = vec![f32::NAN; s.b * s.hkv * s.t * s.t];
        Cpu.attention_backward(&mut dq, &mut dk, &mut dv, &mut scratch, &dout.to_vec(), &probs, &q.to_vec(), &k.to_vec(), &v.to_vec(), s);
        (o, dq, dk, dv)
    };
    let packed = run(s, &q, &k, &v, &dout, Some(&docs));
    let mut start = 0;
    for l in lens {
        let alone = run(
            AttnShape { b: 1, t: l, hq, hkv, hd },
            &q[start * qd..(start + l) * qd],
            &k[start * kvd..(start + l) * kvd],
            &v[start * kvd..(start + l) * kvd],
            &dout[start * qd..(start + l) * qd],
            None,
        );
        let f64s = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<_>>();
        assert_close(&packed.0[start * qd..(start + l) * qd], &f64s(&alone.0), 1e-5, 1e-6, "masked out");
        assert_close(&packed.1[start * qd..(start + l) * qd], &f64s(&alone.1), 1e-5, 1e-6, "masked dq");
        assert_close(&packed.2[start * kvd..(start + l) * kvd], &f64s(&alone.2), 1e-5, 1e-6, "masked dk");
        assert_close(&packed.3[start * kvd..(start + l) * kvd], &f64s(&alone.3), 1e-5, 1e-6, "masked dv");
        start += l;
    }
    // Without the starts, the later documents see the earlier ones.
    let unmasked = run(s, &q, &k, &v, &dout, None);
    assert_ne!(unmasked.0[40 * qd], packed.0[40 * qd]);
}

#[test]
fn cached_attention_matches_full() {
    // New queries over a cache: (t, hd, cached rows, new rows) for the last 4
    // of 11 rows (decode-like), 70 new rows after 30 cached ones, and a fresh
    // 100-row prefill.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (t, hd, pos0, nnew) in [(11, 8, 7, 4), (100, 16, 30, 70), (100, 16, 0, 100)] {
        let s = AttnShape { b: 1, t, hq: 4, hkv: 2, hd };
        let q = rand_vec(&mut rng, s.t * s.hq * s.hd, 1.0);
        // The cache holds keys and values in f16: the reference attends to the same values.
        let f16 = |x: Vec<f32>| x.into_iter().map(|y| half::f16::from_f32(y).to_f32()).collect::<Vec<f32>>();
        let k = f16(rand_vec(&mut rng, s.t * s.hkv * s.hd, 1.0));
        let v = f16(rand_vec(&mut rng, s.t * s.hkv * s.hd, 1.0));
        let mut full = vec![0.0; q.len()];
        let mut probs = vec![0.0; s.hq * s.t * s.t];
        Cpu.attention(&mut full, &mut probs, &q, &k, &v, s, None);
        let qd = s.hq * s.hd;
        let qn = q[pos0 * qd..(pos0 + nnew) * qd].to_vec();
        let mut o = vec![0.0; nnew * qd];
        // The cached rows, then the new ones, as a decoding call appends them.
        let (mut kc, mut vc) = (Cpu.kv_zeros(k.len()), Cpu.kv_zeros(v.len()));
        let kvd = s.hkv * s.hd;
        let cached = [Segment { row: 0, n: pos0, pos0: 0 }];
        let (k_old, v_old) = (k[..pos0 * kvd].to_vec(), v[..pos0 * kvd].to_vec());
        if pos0 > 0 {
            Cpu.kv_append(&mut [&mut kc], &k_old, kvd, &cached);
            Cpu.kv_append(&mut [&mut vc], &v_old, kvd, &cached);
        }
        let new = [Segment { row: 0, n: nnew, pos0 }];
        let (k_new, v_new) = (k[pos0 * kvd..].to_vec(), v[pos0 * kvd..].to_vec());
        Cpu.kv_append(&mut [&mut kc], &k_new, kvd, &new);
        Cpu.kv_append(&mut [&mut vc], &v_new, kvd, &new);
        Cpu.attention_segments(&mut o, &qn, &[&kc], &[&vc], &new, s.hq, s.hkv, s.hd);
        let want: Vec<f64> = full[pos0 * qd..(pos0 + nnew) * qd].iter().map(|&x| x as f64).collect();
        assert_close(&o, &want, 1e-5, 1e-6, &format!("cached attention t={t} after {pos0}"));
    }
}

#[test]
fn swiglu_forward_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 40_000; // spans several parallel chunks
    let g = rand_vec(&mut rng, n, 8.0);
    let u = rand_vec(&mut rng, n, 2.0);
    let da = rand_vec(&mut rng, n, 1.0);
    let mut a = vec![0.0; n];
    Cpu.swiglu(&mut a, &g, &u);
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let want: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| g as f64 * sig(g as f64) * u as f64).collect();
    assert_close(&a, &want, 1e-5, 1e-6, "swiglu");
    let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
    Cpu.swiglu_backward(&mut dg, &mut du, &da, &g, &u);
    let want_du: Vec<f64> = (0..n).map(|i| da[i] as f64 * g[i] as f64 * sig(g[i] as f64)).collect();
    let want_dg: Vec<f64> = (0..n)
        .map(|i| {
            let (x, s) = (g[i] as f64, sig(g[i] as f64));
            da[i] as f64 * u[i] as f64 * (s + x * s * (1.0 - s))
        })
        .collect();
    assert_close(&du, &want_du, 1e-5, 1e-6, "swiglu du");
    assert_close(&dg, &want_dg, 1e-5, 1e-6, "swiglu dg");
}

#[test]
fn cross_entropy_and_logprobs() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (n, v) = (9, 1000);
    let logits = rand_vec(&mut rng, n * v, 10.0);
    let mut targets: Vec<u32> = (0..n).map(|_| rng.random::<u32>() % v as u32).collect();
    targets[3] = IGNORE;
    let scale = 0.25;
    let mut g = logits.clone();
    let lp = Cpu.target_logprobs(&logits, &targets, v);
    let (sum, count) = Cpu.cross_entropy(&mut g, &targets, v, scale);
    assert_eq!(count, n - 1);
    let mut want_sum = 0.0;
    let mut want_g = vec![0.0; n * v];
    for r in 0..n {
        if targets[r] == IGNORE {
            assert_eq!(lp[r], 0.0);
            continue;
        }
        let row: Vec<f64> = logits[r * v..(r + 1) * v].iter().map(|&x| x as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
        let lse = m + z.ln();
        let t = targets[r] as usize;
        want_sum += lse - row[t];
        assert!((lp[r] as f64 - (row[t] - lse)).abs() < 1e-4, "logprob row {r}");
        for j in 0..v {
            want_g[r * v + j] = scale as f64 * ((row[j] - lse).exp() - if j == t { 1.0 } else { 0.0 });
        }
    }
    assert!((sum - want_sum).abs() < 1e-3, "loss sum {sum} vs {want_sum}");
    assert_close(&g, &want_g, 1e-4, 1e-7, "dlogits");
}

#[test]
fn adamw_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 50_000;
    let mut p = rand_vec(&mut rng, n, 1.0);
    let g = rand_vec(&mut rng, n, 1.0);
    let mut m = rand_vec(&mut rng, n, 0.1);
    let mut v: Vec<f32> = rand_vec(&mut rng, n, 0.1).iter().map(|x| x.abs()).collect();
    let h = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 3 };
    let (p0, m0, v0) = (p.clone(), m.clone(), v.clone());
    Cpu.adamw(&mut p, &g, &mut m, &mut v, h);
    let (b1, b2, lr, wd) = (0.9f64, 0.95f64, 1e-2f64, 0.1f64);
    let mut want = vec![0.0; n];
    for i in 0..n {
        let mi = b1 * m0[i] as f64 + (1.0 - b1) * g[i] as f64;
        let vi = b2 * v0[i] as f64 + (1.0 - b2) * (g[i] as f64).powi(2);
        let (mh, vh) = (mi / (1.0 - b1.powi(3)), vi / (1.0 - b2.powi(3)));
        want[i] = p0[i] as f64 * (1.0 - lr * wd) - lr * mh / (vh.sqrt() + 1e-8);
    }
    assert_close(&p, &want, 1e-5, 1e-6, "adamw");
}

#[test]
fn embedding_forward_backward() {
    let (v, d) = (5, 3);
    let table: Vec<f32> = (0..v * d).map(|x| x as f32).collect();
    let ids = [4u32, 0, 4];
    let mut out = vec![0.0; ids.len() * d];
    Cpu.embedding(&mut out, &table, &ids, d);
    assert_eq!(out, vec![12.0, 13.0, 14.0, 0.0, 1.0, 2.0, 12.0, 13.0, 14.0]);
    let mut dt = vec![0.0; v * d];
    Cpu.embedding_backward(&mut dt, &vec![1.0; ids.len() * d], &ids, d);
    assert_eq!(&dt[12..15], &[2.0, 2.0, 2.0]);
    assert_eq!(&dt[0..3], &[1.0, 1.0, 1.0]);
    assert_eq!(&dt[3..12], &[0.0; 9]);
}

/// A linear layer keeps its weight packed between forwards (`backend::Weight`); a weight written
/// in between (as an optimizer step writes it) must be repacked, never used stale: the second
/// forward equals a fresh model's with the new weights, bit for bit.
#[test]
fn a_weight_written_after_a_forward_is_repacked() {
    use chatforge_core::backend::Precision;
    use chatforge_core::config::LlamaConfig;
    use chatforge_core::cpu::Cpu;
    use chatforge_core::model::Llama;
    let be = Cpu::with_precision(Precision::Bf16);
    let cfg = LlamaConfig::from_depth(1, 50, 16);
    let ids: Vec<u32> = (0..32).map(|i| (i * 7 % 50) as u32).collect();
    let mut m = Llama::new(be, cfg.clone(), 3);
    let before = m.forward(&ids, 2, 16);
    for p in m.params_mut() {
        if p.shape.len() == 2 {
            p.w.iter_mut().for_each(|x| *x *= 3.0);
        }
    }
    let after = m.forward(&ids, 2, 16);
    let mut fresh = Llama::new(be, cfg, 3);
    for (p, q) in fresh.params_mut().into_iter().zip(m.params()) {
        p.w.copy_from_slice(&q.w);
    }
    let want = fresh.forward(&ids, 2, 16);
    assert!(before.iter().zip(&after).any(|(x, y)| x != y), "the write changed nothing");
    assert!(after.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "a stale packed weight was used");
}
