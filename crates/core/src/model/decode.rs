//! Cached decoding over the model's blocks: a KV cache per sequence, a prompt prefilled in one
//! pass, then one batched step per token for every live sequence.
//!
//! In order: the cache, the step's workspace, the blocks over new rows (`forward_rows`), and the
//! calls over them: one sequence (`decode`: a prompt, or the tokens a tool put in), one token of
//! each of several (`decode_batch_into`), and the new tokens of several at once
//! (`decode_seqs_into`, which the other two are).
//!
//! Why this shape: decoding is bound by one pass over the weights per step, so every live
//! sequence shares that pass (one row each in every matmul), and the step's buffers live in a
//! [`DecodeWs`] reused step after step (no allocation per token). A batched step's linear
//! layers use `Backend::linear_rows`, whose rows do not see each other: a sequence decodes the
//! same tokens alone or in any batch (the sampler's seed is per sequence).

use super::{Llama, Param};
use crate::backend::{Backend, Segment};

/// Keys and values of past positions of one sequence, per layer `[capacity, kvd]`.
pub struct KvCache<B: Backend> {
    pub(super) k: Vec<B::Kv>,
    pub(super) v: Vec<B::Kv>,
    pub len: usize,
    pub capacity: usize,
}

/// The buffers of one decoding call, sized to its rows when it starts and reused by the next:
/// x, h `[n,d]`, rstd `[n]`, q, o `[n,qd]`, k, v `[n,kvd]`, gate/up/act `[n,F]`, logits `[n,V]`;
/// with q/k norms, raw `[n,qd]` or `[n,kvd]` and head_rstd `[n·Hq]` or `[n·Hkv]`.
pub struct DecodeWs<B: Backend> {
    x: B::Buf,
    h: B::Buf,
    rstd: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    o: B::Buf,
    g: B::Buf,
    u: B::Buf,
    a: B::Buf,
    raw: B::Buf,
    head_rstd: B::Buf,
    last: B::Buf,
    logits: B::Buf,
    /// The logits on the host, `[n·V]`.
    pub host: Vec<f32>,
}

/// `linear` for the rows of a batched step: each row's result is independent of the others.
fn linear_rows<B: Backend>(be: &B, y: &mut B::Buf, x: &B::Buf, w: &Param<B>, n: usize, acc: bool) {
    let (out, inp) = (w.shape[0], w.shape[1]);
    be.linear_rows(y, x, &w.w, n, out, inp, acc);
    if let Some(l) = &w.lora {
        l.forward(be, y, x, n, true);
    }
}

/// `linear_rows` and then the layer's bias, if it has one.
fn linear_rows_b<B: Backend>(be: &B, y: &mut B::Buf, x: &B::Buf, w: &Param<B>, b: &Option<Param<B>>, n: usize, acc: bool) {
    linear_rows(be, y, x, w, n, acc);
    if let Some(b) = b {
        be.add_bias(y, &b.w);
    }
}

impl<B: Backend> Llama<B> {
    pub fn new_cache(&self, capacity: usize) -> KvCache<B> {
        let kvd = self.cfg.kv_heads() * self.cfg.head_dim();
        let capacity = capacity.min(self.cfg.max_position_embeddings);
        KvCache {
            k: (0..self.blocks.len()).map(|_| self.be.kv_zeros(capacity * kvd)).collect(),
            v: (0..self.blocks.len()).map(|_| self.be.kv_zeros(capacity * kvd)).collect(),
            len: 0,
            capacity,
        }
    }

    /// Makes `dst` hold the first `len` positions of `src` (prefix caching).
    pub fn copy_cache(&self, dst: &mut KvCache<B>, src: &KvCache<B>, len: usize) {
        assert!(len <= src.len && len <= dst.capacity, "copy_cache: {len} positions from a cache of {}", src.len);
        let kvd = self.cfg.kv_heads() * self.cfg.head_dim();
        for (d, s) in dst.k.iter_mut().zip(&src.k).chain(dst.v.iter_mut().zip(&src.v)) {
            self.be.kv_copy_prefix(d, s, len * kvd);
        }
        dst.len = len;
    }

    /// An empty workspace; each call sizes it to its rows.
    pub fn decode_ws(&self) -> DecodeWs<B> {
        let z = || self.be.zeros(0);
        DecodeWs {
            x: z(),
            h: z(),
            rstd: z(),
            q: z(),
            k: z(),
            v: z(),
            o: z(),
            g: z(),
            u: z(),
            a: z(),
            raw: z(),
            head_rstd: z(),
            last: z(),
            logits: z(),
            host: Vec::new(),
        }
    }

    fn fit(&self, ws: &mut DecodeWs<B>, n: usize) {
        let (be, c) = (&self.be, &self.cfg);
        let (d, qd, kvd, f) = (c.hidden_size, c.num_attention_heads * c.head_dim(), c.kv_heads() * c.head_dim(), c.intermediate_size);
        for (buf, len) in [(&mut ws.x, n * d), (&mut ws.h, n * d), (&mut ws.rstd, n), (&mut ws.q, n * qd), (&mut ws.o, n * qd)] {
            be.resize(buf, len);
        }
        for (buf, len) in [(&mut ws.k, n * kvd), (&mut ws.v, n * kvd), (&mut ws.g, n * f), (&mut ws.u, n * f), (&mut ws.a, n * f)] {
            be.resize(buf, len);
        }
    }

    /// The blocks over `n` new rows of token ids at `positions`: `kv(layer, k, v, q, out)` stores
    /// the rows' keys and values in their caches and writes the attention output. Leaves the
    /// final-normed hidden states `[n, d]` in `ws.h`. Every linear layer is `linear_rows`: no row
    /// sees another, so a prompt split anywhere, or a sequence in any batch, gives the same bits.
    fn forward_rows(
        &self,
        ws: &mut DecodeWs<B>,
        tokens: &[u32],
        positions: &[usize],
        mut kv: impl FnMut(usize, &B::Buf, &B::Buf, &B::Buf, &mut B::Buf),
    ) {
        let (be, c) = (&self.be, &self.cfg);
        let (n, d, v) = (tokens.len(), c.hidden_size, c.vocab_size);
        if let Some(&bad) = tokens.iter().find(|&&i| i as usize >= v) {
            panic!("token id {bad} out of range for vocab {v}");
        }
        let lin = |y: &mut B::Buf, x: &B::Buf, w: &Param<B>, b: &Option<Param<B>>, acc: bool| linear_rows_b(be, y, x, w, b, n, acc);
        let (hq, hkv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let rope = c.rope();
        self.fit(ws, n);
        be.embedding(&mut ws.x, &self.embed.w, tokens, d);
        for (l, blk) in self.blocks.iter().enumerate() {
            let at = &blk.attn;
            blk.input_norm.forward(be, &mut ws.h, &mut ws.rstd, &ws.x);
            match (&at.q_norm, &at.k_norm) {
                (Some(qn), Some(kn)) => {
                    for (dst, w, b, norm, heads) in [(&mut ws.q, &at.q, &at.qb, qn, hq), (&mut ws.k, &at.k, &at.kb, kn, hkv)] {
                        be.resize(&mut ws.raw, n * heads * hd);
                        be.resize(&mut ws.head_rstd, n * heads);
                        lin(&mut ws.raw, &ws.h, w, b, false);
                        norm.forward(be, dst, &mut ws.head_rstd, &ws.raw);
                    }
                }
                _ => {
                    lin(&mut ws.q, &ws.h, &at.q, &at.qb, false);
                    lin(&mut ws.k, &ws.h, &at.k, &at.kb, false);
                }
            }
            lin(&mut ws.v, &ws.h, &at.v, &at.vb, false);
            be.rope_at(&mut ws.q, hq, hd, positions, &rope);
            be.rope_at(&mut ws.k, hkv, hd, positions, &rope);
            kv(l, &ws.k, &ws.v, &ws.q, &mut ws.o);
            lin(&mut ws.x, &ws.o, &at.o, &at.ob, true);
            let m = &blk.mlp;
            blk.post_norm.forward(be, &mut ws.h, &mut ws.rstd, &ws.x);
            lin(&mut ws.g, &ws.h, &m.gate, &m.gate_b, false);
            lin(&mut ws.u, &ws.h, &m.up, &m.up_b, false);
            be.swiglu(&mut ws.a, &ws.g, &ws.u);
            lin(&mut ws.x, &ws.a, &m.down, &m.down_b, true);
        }
        self.norm.forward(be, &mut ws.h, &mut ws.rstd, &ws.x);
    }

    /// Runs `ids` (new tokens at positions cache.len..) through the model, appends their keys and
    /// values to the cache and returns the logits `[V]` of the last one.
    pub fn decode(&self, cache: &mut KvCache<B>, ids: &[u32]) -> Vec<f32> {
        let mut ws = self.decode_ws();
        self.decode_into(cache, ids, &mut ws);
        std::mem::take(&mut ws.host)
    }

    /// [`Llama::decode`] with a reused workspace: the logits `[V]` are left in `ws.host`.
    pub fn decode_into(&self, cache: &mut KvCache<B>, ids: &[u32], ws: &mut DecodeWs<B>) {
        self.decode_seqs_into(std::slice::from_mut(&mut &mut *cache), &[ids], ws);
    }

    /// One decoding step for several sequences at once: `tokens[i]` is appended to `caches[i]`
    /// (each at its own position) and the logits `[V]` of each are returned.
    pub fn decode_batch(&self, caches: &mut [&mut KvCache<B>], tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut ws = self.decode_ws();
        self.decode_batch_into(caches, tokens, &mut ws);
        ws.host.chunks_exact(self.cfg.vocab_size).map(|r| r.to_vec()).collect()
    }

    /// [`Llama::decode_batch`] with a reused workspace: the logits `[n, V]` are left in `ws.host`.
    pub fn decode_batch_into(&self, caches: &mut [&mut KvCache<B>], tokens: &[u32], ws: &mut DecodeWs<B>) {
        let ids: Vec<&[u32]> = tokens.iter().map(std::slice::from_ref).collect();
        self.decode_seqs_into(caches, &ids, ws);
    }

    /// The new tokens of several sequences in one pass (prompts admitted together, or one token
    /// each while decoding): `ids[i]` is appended to `caches[i]` at its positions, and the logits
    /// `[n, V]` of each sequence's last token are left in `ws.host`. The matmuls run over all
    /// rows together; attention reads each sequence's own cache, so a sequence gets the same
    /// bits as in a call of its own.
    pub fn decode_seqs_into(&self, caches: &mut [&mut KvCache<B>], ids: &[&[u32]], ws: &mut DecodeWs<B>) {
        let (be, c) = (&self.be, &self.cfg);
        let (d, v) = (c.hidden_size, c.vocab_size);
        assert_eq!(caches.len(), ids.len(), "one cache per sequence");
        let (mut tokens, mut positions, mut segs) = (Vec::new(), Vec::new(), Vec::with_capacity(ids.len()));
        for (cache, t) in caches.iter().zip(ids) {
            assert!(!t.is_empty(), "decode needs at least one token");
            let pos0 = cache.len;
            assert!(pos0 + t.len() <= cache.capacity, "sequence of {} exceeds the cache of {}", pos0 + t.len(), cache.capacity);
            segs.push(Segment { row: tokens.len(), n: t.len(), pos0 });
            tokens.extend_from_slice(t);
            positions.extend(pos0..pos0 + t.len());
        }
        let (hq, hkv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        self.forward_rows(ws, &tokens, &positions, |l, k, vv, q, o| {
            let mut kd: Vec<&mut B::Kv> = caches.iter_mut().map(|cc| &mut cc.k[l]).collect();
            be.kv_append(&mut kd, k, hkv * hd, &segs);
            let mut vd: Vec<&mut B::Kv> = caches.iter_mut().map(|cc| &mut cc.v[l]).collect();
            be.kv_append(&mut vd, vv, hkv * hd, &segs);
            let ks: Vec<&B::Kv> = caches.iter().map(|cc| &cc.k[l]).collect();
            let vs: Vec<&B::Kv> = caches.iter().map(|cc| &cc.v[l]).collect();
            be.attention_segments(o, q, &ks, &vs, &segs, hq, hkv, hd);
        });
        for (cache, t) in caches.iter_mut().zip(ids) {
            cache.len += t.len();
        }
        // Only each sequence's last position's logits are needed.
        let n = ids.len();
        be.resize(&mut ws.logits, n * v);
        if tokens.len() == n {
            linear_rows(be, &mut ws.logits, &ws.h, self.head(), n, false);
        } else {
            let last: Vec<u32> = segs.iter().map(|s| (s.row + s.n - 1) as u32).collect();
            be.resize(&mut ws.last, n * d);
            be.embedding(&mut ws.last, &ws.h, &last, d);
            linear_rows(be, &mut ws.logits, &ws.last, self.head(), n, false);
        }
        be.download_into(&ws.logits, &mut ws.host);
    }
}
