//! Causal attention for training, one (sequence, KV head) group per task, its blocks above the
//! diagonal skipped: the forward keeps the softmax probabilities, the backward reads them. With
//! document starts, a row's softmax also runs from its document's first position only (packed
//! conversations do not see each other); the zeros it leaves make the backward's dS zero there.

use multiversion::multiversion;
use rayon::prelude::*;

use super::*;

#[multiversion(targets = "simd")]
fn causal_softmax_rows(p: &mut [f32], t: usize, r0: usize, r1: usize, scale: f32, docs: Option<&[u32]>) {
    for i in r0..r1 {
        let row = &mut p[i * t..(i + 1) * t];
        let start = docs.map_or(0, |d| (d[i] as usize).min(i));
        let (before, row) = row.split_at_mut(start);
        before.fill(0.0);
        let (live, dead) = row.split_at_mut(i + 1 - start);
        let m = max(live) * scale;
        let s = exp_shift_sum(live, scale, m);
        let inv = 1.0 / s;
        for x in live.iter_mut() {
            *x *= inv;
        }
        dead.fill(0.0);
    }
}

/// dS = P ⊙ (dP − Σ_j dP_j P_j) on rows r0..r1 (in place of dP), zero above the diagonal.
#[multiversion(targets = "simd")]
fn softmax_backward_rows(dp: &mut [f32], p: &[f32], t: usize, r0: usize, r1: usize, ncols: usize) {
    for i in r0..r1 {
        let (dpr, pr) = (&mut dp[i * t..i * t + ncols], &p[i * t..i * t + ncols]);
        let live = i + 1;
        let c = dot(&dpr[..live], &pr[..live]);
        for j in 0..live {
            dpr[j] = pr[j] * (dpr[j] - c);
        }
        dpr[live..].fill(0.0);
    }
}

pub(super) fn attention_forward(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], s: AttnShape, docs: Option<&[u32]>) {
    let AttnShape { b, t, hq, hkv, hd } = s;
    let (qd, kvd, group) = (hq * hd, hkv * hd, hq / hkv);
    assert_eq!(q.len(), b * t * qd);
    assert_eq!(k.len(), b * t * kvd);
    assert_eq!(v.len(), b * t * kvd);
    assert_eq!(out.len(), b * t * qd);
    assert_eq!(probs.len(), b * hq * t * t);
    if let Some(d) = docs {
        assert_eq!(d.len(), b * t, "attention: one document start per position");
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let (o_ptr, p_ptr) = (SendPtr(out.as_mut_ptr()), SendPtr(probs.as_mut_ptr()));
    (0..b * hq).into_par_iter().for_each(|task| {
        let (bi, h) = (task / hq, task % hq);
        let kvh = h / group;
        // Views of this head: rows are positions.
        let qv = |r: usize| View { ptr: q[(bi * t + r) * qd + h * hd..].as_ptr(), rs: qd as isize, cs: 1 };
        let kt = View { ptr: k[bi * t * kvd + kvh * hd..].as_ptr(), rs: 1, cs: kvd as isize }; // K^T [hd, t]
        let vv = View { ptr: v[bi * t * kvd + kvh * hd..].as_ptr(), rs: kvd as isize, cs: 1 };
        let p = unsafe { std::slice::from_raw_parts_mut(p_ptr.get().add(task * t * t), t * t) };
        for r0 in (0..t).step_by(ATTN_BLOCK) {
            let r1 = (r0 + ATTN_BLOCK).min(t);
            let (rows, ncols) = (r1 - r0, r1);
            unsafe {
                // S[r0..r1, 0..ncols] = Q_rows · K^T  (the 1/√hd scale is folded into the softmax)
                gemm_view(rows, ncols, hd, p.as_mut_ptr().add(r0 * t), t as isize, qv(r0), kt, 1.0, false, false);
            }
            causal_softmax_rows(p, t, r0, r1, scale, docs.map(|d| &d[bi * t..(bi + 1) * t]));
            unsafe {
                // O[r0..r1] = P[r0..r1, 0..ncols] · V[0..ncols]
                let pv = View { ptr: p.as_ptr().add(r0 * t), rs: t as isize, cs: 1 };
                let dst = o_ptr.get().add((bi * t + r0) * qd + h * hd);
                gemm_view(rows, hd, ncols, dst, qd as isize, pv, vv, 1.0, false, false);
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub(super) fn attention_backward_cpu(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    probs: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let AttnShape { b, t, hq, hkv, hd } = s;
    let (qd, kvd, group) = (hq * hd, hkv * hd, hq / hkv);
    assert!(scratch.len() >= b * hkv * t * t, "attention_backward: scratch too small");
    assert_eq!(dq.len(), q.len());
    assert_eq!(dk.len(), k.len());
    assert_eq!(dv.len(), v.len());
    let scale = 1.0 / (hd as f32).sqrt();
    let (dq_p, dk_p, dv_p, sc_p) =
        (SendPtr(dq.as_mut_ptr()), SendPtr(dk.as_mut_ptr()), SendPtr(dv.as_mut_ptr()), SendPtr(scratch.as_mut_ptr()));
    // One task per (sequence, KV head): the query heads sharing a KV head accumulate into dK, dV.
    (0..b * hkv).into_par_iter().for_each(|task| {
        let (bi, kvh) = (task / hkv, task % hkv);
        let kv_off = bi * t * kvd + kvh * hd;
        unsafe {
            for r in 0..t {
                std::slice::from_raw_parts_mut(dk_p.get().add(kv_off + r * kvd), hd).fill(0.0);
                std::slice::from_raw_parts_mut(dv_p.get().add(kv_off + r * kvd), hd).fill(0.0);
            }
        }
        let dp = unsafe { std::slice::from_raw_parts_mut(sc_p.get().add(task * t * t), t * t) };
        let k_rows = View { ptr: k[kv_off..].as_ptr(), rs: kvd as isize, cs: 1 };
        let v_t = View { ptr: v[kv_off..].as_ptr(), rs: 1, cs: kvd as isize }; // V^T [hd, t]
        for h in kvh * group..(kvh + 1) * group {
            let p = &probs[(bi * hq + h) * t * t..(bi * hq + h + 1) * t * t];
            let q_off = bi * t * qd + h * hd;
            for r0 in (0..t).step_by(ATTN_BLOCK) {
                let r1 = (r0 + ATTN_BLOCK).min(t);
                let (rows, ncols) = (r1 - r0, r1);
                let do_rows = View { ptr: dout[q_off + r0 * qd..].as_ptr(), rs: qd as isize, cs: 1 };
                let q_rows = View { ptr: q[q_off + r0 * qd..].as_ptr(), rs: qd as isize, cs: 1 };
                unsafe {
                    // dP = dO · V^T
                    gemm_view(rows, ncols, hd, dp.as_mut_ptr().add(r0 * t), t as isize, do_rows, v_t, 1.0, false, false);
                }
                softmax_backward_rows(dp, p, t, r0, r1, ncols);
                unsafe {
                    let ds = View { ptr: dp.as_ptr().add(r0 * t), rs: t as isize, cs: 1 };
                    let ds_t = View { ptr: dp.as_ptr().add(r0 * t), rs: 1, cs: t as isize };
                    let p_t = View { ptr: p.as_ptr().add(r0 * t), rs: 1, cs: t as isize };
                    // dQ[rows] = scale · dS · K
                    let dq_dst = dq_p.get().add(q_off + r0 * qd);
                    gemm_view(rows, hd, ncols, dq_dst, qd as isize, ds, k_rows, scale, false, false);
                    // dK[0..ncols] += scale · dS^T · Q[rows]
                    gemm_view(ncols, hd, rows, dk_p.get().add(kv_off), kvd as isize, ds_t, q_rows, scale, true, false);
                    // dV[0..ncols] += P^T · dO[rows]
                    gemm_view(ncols, hd, rows, dv_p.get().add(kv_off), kvd as isize, p_t, do_rows, 1.0, true, false);
                }
            }
        }
    });
}
