//! Sampling from logits: temperature, top-k, top-p (nucleus), greedy at temperature 0.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::Backend;
use crate::model::Llama;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.8, top_k: 0, top_p: 1.0 }
    }
}

/// Below this weight (relative to the most likely token's) a token is left out of the sorted
/// candidates of top-p, unless the candidates above it hold less than top_p of the mass.
const NUCLEUS_FLOOR: f32 = 1e-6;

thread_local! {
    /// The sampler's scratch: one weight per vocabulary entry, reused token after token.
    static WEIGHTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Picks the next token from `logits` (temperature 0 = argmax; top_k 0 = no limit), with one
/// uniform draw per token.
///
/// Fused: the weights e^((l − max)/T) are computed in one vectorised pass into a reused buffer.
/// Without top-k or top-p the draw walks them in vocabulary order; nothing is sorted. Top-k
/// selects its k candidates in linear time and sorts only those; top-p sorts only the tokens
/// within a factor [`NUCLEUS_FLOOR`] of the most likely one when they already hold top_p of the
/// mass (the nucleus, a prefix of the sorted order, then lies among them), else all of them.
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    with_weights(logits, p.temperature, |w, total| {
        let r: f32 = rng.random();
        let top_k = if p.top_k == 0 { logits.len() } else { p.top_k.min(logits.len()) };
        if top_k == logits.len() && p.top_p >= 1.0 {
            return walk(w.iter().copied().enumerate().map(|(i, x)| (i as u32, x)), r * total, logits.len());
        }
        // Candidates in descending order of logit (ties: lower id first), as the nucleus is defined.
        let desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let mut idx: Vec<u32> = if top_k < logits.len() {
            let mut all: Vec<u32> = (0..logits.len() as u32).collect();
            all.select_nth_unstable_by(top_k - 1, desc);
            all.truncate(top_k);
            all
        } else {
            let near: Vec<u32> = (0..logits.len() as u32).filter(|&i| w[i as usize] >= NUCLEUS_FLOOR).collect();
            let mass: f32 = near.iter().map(|&i| w[i as usize]).sum();
            if mass >= p.top_p * total {
                near
            } else {
                (0..logits.len() as u32).collect()
            }
        };
        idx.sort_unstable_by(desc);
        let mass: f32 = if top_k < logits.len() { idx.iter().map(|&i| w[i as usize]).sum() } else { total };
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = idx.iter().position(|&i| {
                acc += w[i as usize];
                acc >= p.top_p * mass
            });
            idx.truncate(keep.map_or(idx.len(), |k| k + 1));
        }
        let kept: f32 = idx.iter().map(|&i| w[i as usize]).sum();
        walk(idx.iter().map(|&i| (i, w[i as usize])), r * kept, logits.len())
    })
}

/// A draw from the softmax of `logits` restricted to the tokens `keep` allows, by rejection: up
/// to `tries` draws from the whole softmax (temperature only: no top-k or top-p), the first one
/// kept returned; `None` when every one is refused, and the caller then masks the refused tokens
/// and calls [`sample`] with the same `rng`. Either way the token is distributed exactly as the
/// masked softmax: with Z the allowed mass, P(x) = p(x)·Σ_{i<n}(1 − Z)^i + (1 − Z)^n·p(x)/Z =
/// p(x)/Z. The first try draws as [`sample`] does. At temperature 0 the candidates are the
/// `tries` largest logits in order (ties: lower id first, as [`argmax`]), so the first kept one
/// is the masked argmax.
pub fn sample_where(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng, tries: usize, keep: impl Fn(u32) -> bool) -> Option<u32> {
    assert!(p.temperature <= 0.0 || (p.top_k == 0 && p.top_p >= 1.0), "sample_where: the whole softmax only");
    if tries == 0 {
        return None;
    }
    if p.temperature <= 0.0 {
        // The `tries` best (logit descending, id ascending), by insertion into a short list.
        let mut best: Vec<u32> = Vec::with_capacity(tries + 1);
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == tries && l <= logits[best[tries - 1] as usize] {
                continue;
            }
            let at = best.partition_point(|&b| logits[b as usize] >= l);
            best.insert(at, i as u32);
            best.truncate(tries);
        }
        return best.into_iter().take_while(|&t| logits[t as usize] > f32::NEG_INFINITY).find(|&t| keep(t));
    }
    with_weights(logits, p.temperature, |w, total| {
        (0..tries).find_map(|_| {
            let r: f32 = rng.random();
            let t = walk(w.iter().copied().enumerate().map(|(i, x)| (i as u32, x)), r * total, logits.len());
            keep(t).then_some(t)
        })
    })
}

/// `f(weights, total)` over the softmax weights e^((l − max)/T) of `logits`, computed in one
/// vectorised pass into the thread's reused buffer.
fn with_weights<R>(logits: &[f32], temperature: f32, f: impl FnOnce(&[f32], f32) -> R) -> R {
    let scale = 1.0 / temperature;
    let shift = crate::cpu::max_of(logits) * scale;
    WEIGHTS.with(|cell| {
        let mut w = cell.borrow_mut();
        w.resize(logits.len(), 0.0);
        let total = crate::cpu::exp_weights(&mut w, logits, scale, shift);
        f(&w, total)
    })
}

/// The token where the running sum of `weights` first exceeds `target` (the last one if rounding
/// leaves it short).
fn walk(weights: impl Iterator<Item = (u32, f32)>, target: f32, vocab: usize) -> u32 {
    let mut acc = 0.0;
    let mut last = vocab as u32 - 1;
    for (i, x) in weights {
        if x > 0.0 {
            last = i;
        }
        acc += x;
        if target < acc {
            return i;
        }
    }
    last
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Generates up to `max_new` tokens after `prompt` with a KV cache; stops after any `stop` id
/// (which is not included). Deterministic for a given seed.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    max_new: usize,
    params: &SamplingParams,
    stop: &[u32],
    seed: u64,
) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cap = model.cfg.max_position_embeddings;
    let prompt = if prompt.len() >= cap { &prompt[prompt.len() - cap + 1..] } else { prompt };
    let mut cache = model.new_cache(cap);
    let mut ws = model.decode_ws();
    model.decode_into(&mut cache, prompt, &mut ws);
    let mut out = Vec::new();
    while out.len() < max_new {
        let tok = sample(&ws.host, params, &mut rng);
        if stop.contains(&tok) {
            break;
        }
        out.push(tok);
        if cache.len >= cache.capacity {
            break;
        }
        model.decode_into(&mut cache, &[tok], &mut ws);
    }
    out
}

/// What `generate_batch` does per sequence.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub max_new: usize,
    pub params: SamplingParams,
    /// Token ids that end a sequence (not included in the output), e.g. `<|im_end|>`.
    pub stop_ids: Vec<u32>,
}

/// Generates for several prompts at once: each prompt is prefilled into its own KV cache, then
/// all live sequences advance together, one batched decode step per token. `seeds[i]` seeds
/// sequence i's sampler, so a sequence's output does not depend on what it is batched with.
/// `on_token(i, token)` sees every token as it comes (streaming); returning false stops sequence i.
pub fn generate_batch<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenOptions,
    seeds: &[u64],
    on_token: impl FnMut(usize, u32) -> bool,
) -> Vec<Vec<u32>> {
    generate_batch_with(model, prompts, opts, seeds, on_token, |_, _| None, |_, _, _| {}).into_iter().map(|g| g.tokens).collect()
}

/// One sequence's output from [`generate_batch_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    /// What follows the prompt: sampled tokens, and the tokens `on_stop` put in.
    pub tokens: Vec<u32>,
    /// `generated[k]`: whether `tokens[k]` was sampled from the model (true) or put in (false).
    pub generated: Vec<bool>,
}

/// Prefills each non-empty prompt into its cache and returns its last position's logits (all
/// `None` unless `run`). Prefix caching: a prompt that begins like one prefilled before it copies
/// the keys and values of the shared prefix instead of recomputing them (the same prompt
/// answered n times, a shared system prompt or few-shot header) and runs only the rest; an
/// identical prompt copies everything, logits included. Exact: decoding computes each row on
/// its own (`Backend::linear_rows`), so a row's keys and values do not depend on where a prompt
/// was split, and a sequence's tokens do not depend on what it is batched with.
fn prefill<B: Backend>(
    model: &Llama<B>,
    prompts: &[&[u32]],
    caches: &mut [crate::model::KvCache<B>],
    ws: &mut crate::model::DecodeWs<B>,
    run: bool,
) -> Vec<Option<Vec<f32>>> {
    let n = prompts.len();
    let mut logits: Vec<Option<Vec<f32>>> = vec![None; n];
    if !run {
        return logits;
    }
    // Each prompt's source: the earlier prompt sharing the longest prefix with it, if any; and its
    // level, one more than its source's (0 without one). A level is prefilled in one pass
    // (`Llama::decode_seqs_into`) once the levels before it, which hold its sources, are.
    let mut src: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut level = vec![0usize; n];
    for i in 0..n {
        let p = prompts[i];
        if p.is_empty() {
            continue;
        }
        let shared = |j: usize| prompts[j].iter().zip(p).take_while(|(a, b)| a == b).count();
        let best = (0..i).filter(|&j| !prompts[j].is_empty()).map(|j| (shared(j), j)).max_by_key(|&(len, j)| (len, std::cmp::Reverse(j)));
        if let Some((len, j)) = best.filter(|&(len, _)| len > 0) {
            src[i] = Some((j, len));
            level[i] = level[j] + 1;
        }
    }
    let levels = (0..n).filter(|&i| !prompts[i].is_empty()).map(|i| level[i] + 1).max().unwrap_or(0);
    for lv in 0..levels {
        let members: Vec<usize> = (0..n).filter(|&i| !prompts[i].is_empty() && level[i] == lv).collect();
        // What each member still runs (at least its last token, for its logits).
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &i in &members {
            let p = prompts[i];
            let Some((j, len)) = src[i] else {
                runs.push((i, 0));
                continue;
            };
            let (head, tail) = caches.split_at_mut(i);
            if len == p.len() && prompts[j].len() == p.len() {
                // The same prompt: its cache and logits.
                model.copy_cache(&mut tail[0], &head[j], len);
                logits[i] = logits[j].clone();
                continue;
            }
            let len = len.min(p.len() - 1);
            model.copy_cache(&mut tail[0], &head[j], len);
            runs.push((i, len));
        }
        // Passes of at most PREFILL_ROWS rows (the workspace grows with the rows of a pass).
        let mut rest = &runs[..];
        while !rest.is_empty() {
            let mut rows = 0;
            let take = rest.iter().take_while(|&&(i, from)| {
                rows += prompts[i].len() - from;
                rows <= PREFILL_ROWS
            });
            let k = take.count().max(1);
            let (pass, later) = rest.split_at(k);
            rest = later;
            let ids: Vec<&[u32]> = pass.iter().map(|&(i, from)| &prompts[i][from..]).collect();
            let mut refs: Vec<&mut crate::model::KvCache<B>> =
                caches.iter_mut().enumerate().filter(|(i, _)| pass.iter().any(|r| r.0 == *i)).map(|(_, c)| c).collect();
            model.decode_seqs_into(&mut refs, &ids, ws);
            let v = model.cfg.vocab_size;
            for (k, &(i, _)) in pass.iter().enumerate() {
                logits[i] = Some(ws.host[k * v..(k + 1) * v].to_vec());
            }
        }
    }
    logits
}

/// The most prompt rows prefilled in one pass.
const PREFILL_ROWS: usize = 4096;

/// [`generate_batch`] with two hooks. Where a sequence stops: when sequence i samples a stop
/// token, `on_stop(i, tokens so far)` may return tokens to put in (a tool's result and the
/// header of the next turn). Then the stop token and those tokens join the output, are
/// prefilled into the sequence's cache, and decoding goes on; `None` ends the sequence as usual.
/// The `max_new` cap counts every output token. A sequence whose cache cannot hold what is put
/// in ends there. Before each sample: `mask(i, tokens so far, logits)` may set logits to −∞
/// (constrained decoding, such as grounded tool arguments).
#[allow(clippy::too_many_arguments)]
pub fn generate_batch_with<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenOptions,
    seeds: &[u64],
    mut on_token: impl FnMut(usize, u32) -> bool,
    mut on_stop: impl FnMut(usize, &[u32]) -> Option<Vec<u32>>,
    mut mask: impl FnMut(usize, &[u32], &mut [f32]),
) -> Vec<Generated> {
    let cap = model.cfg.max_position_embeddings;
    let n = prompts.len();
    let mut rngs: Vec<ChaCha8Rng> = seeds.iter().map(|&s| ChaCha8Rng::seed_from_u64(s)).collect();
    let mut caches: Vec<_> = (0..n).map(|_| model.new_cache(cap)).collect();
    let mut out = vec![Generated::default(); n];
    let mut next = vec![0u32; n];
    let mut live = vec![true; n];
    // The stop token and the tokens put in after it, for the next pass.
    let mut pieces: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut ws = model.decode_ws();
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| if p.len() >= cap { &p[p.len() - cap + 1..] } else { &p[..] }).collect();
    let mut logits = prefill(model, &prompts, &mut caches, &mut ws, opts.max_new > 0);
    for i in 0..n {
        match &mut logits[i] {
            Some(l) => {
                mask(i, &[], l);
                next[i] = sample(l, &opts.params, &mut rngs[i]);
            }
            None => live[i] = false,
        }
    }
    loop {
        // Accept each live sequence's sampled token, or end the sequence (or put tokens in).
        for i in 0..n {
            if !live[i] {
                continue;
            }
            let tok = next[i];
            if opts.stop_ids.contains(&tok) {
                let room = |k: usize| caches[i].len + k < caches[i].capacity && out[i].tokens.len() + k < opts.max_new;
                match on_stop(i, &out[i].tokens) {
                    Some(put) if !put.is_empty() && room(put.len() + 1) => {
                        on_token(i, tok);
                        out[i].tokens.push(tok);
                        out[i].generated.push(true);
                        for &t in &put {
                            on_token(i, t);
                        }
                        out[i].tokens.extend_from_slice(&put);
                        out[i].generated.extend(std::iter::repeat_n(false, put.len()));
                        // Decoded with the others' tokens in this step's pass.
                        pieces[i] = vec![tok];
                        pieces[i].extend_from_slice(&put);
                    }
                    _ => live[i] = false,
                }
                continue;
            }
            out[i].tokens.push(tok);
            out[i].generated.push(true);
            if !on_token(i, tok) || out[i].tokens.len() >= opts.max_new || caches[i].len >= caches[i].capacity {
                live[i] = false;
            }
        }
        if !live.contains(&true) {
            break;
        }
        // One pass: each live sequence's sampled token, or the stop token and what was put in.
        let idx: Vec<usize> = (0..n).filter(|&i| live[i]).collect();
        let ids: Vec<&[u32]> =
            idx.iter().map(|&i| if pieces[i].is_empty() { std::slice::from_ref(&next[i]) } else { &pieces[i][..] }).collect();
        let mut refs: Vec<&mut crate::model::KvCache<B>> =
            caches.iter_mut().enumerate().filter(|(i, _)| live[*i]).map(|(_, c)| c).collect();
        model.decode_seqs_into(&mut refs, &ids, &mut ws);
        pieces.iter_mut().for_each(Vec::clear);
        let v = model.cfg.vocab_size;
        for (k, &i) in idx.iter().enumerate() {
            let l = &mut ws.host[k * v..(k + 1) * v];
            mask(i, &out[i].tokens, l);
            next[i] = sample(l, &opts.params, &mut rngs[i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empirical frequencies over 40k draws match the intended distribution within 4.5 sigma.
    fn check_distribution(logits: &[f32], p: SamplingParams, want: &[f64]) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 40_000;
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[sample(logits, &p, &mut rng) as usize] += 1;
        }
        for (i, (&c, &q)) in counts.iter().zip(want).enumerate() {
            let sigma = (q * (1.0 - q) / n as f64).sqrt().max(1e-9);
            let got = c as f64 / n as f64;
            assert!((got - q).abs() <= 4.5 * sigma + 1e-12, "{p:?}: token {i} drawn {got:.4}, expected {q:.4}");
        }
    }

    /// Draws before masking, then the masked draw on refusal, follow the masked softmax (even
    /// where the allowed tokens hold little mass and most draws are refused); greedy gives the
    /// masked argmax, ties to the lower id.
    #[test]
    fn draws_before_masking_follow_the_masked_softmax() {
        let logits = [1.0f32, 0.5, 2.0, -1.0, 0.0, 2.0];
        let p = SamplingParams { temperature: 0.9, top_k: 0, top_p: 1.0 };
        for (keep, tries) in [(vec![1usize, 3, 4], 2), (vec![0, 2], 1), (vec![3], 8)] {
            let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / 0.9).exp()).collect();
            let z: f64 = keep.iter().map(|&i| e[i]).sum();
            let want: Vec<f64> = (0..e.len()).map(|i| if keep.contains(&i) { e[i] / z } else { 0.0 }).collect();
            let masked: Vec<f32> = logits.iter().enumerate().map(|(i, &l)| if keep.contains(&i) { l } else { f32::NEG_INFINITY }).collect();
            let (mut rng, n) = (ChaCha8Rng::seed_from_u64(3), 40_000);
            let mut counts = vec![0usize; logits.len()];
            for _ in 0..n {
                let t = sample_where(&logits, &p, &mut rng, tries, |t| keep.contains(&(t as usize)))
                    .unwrap_or_else(|| sample(&masked, &p, &mut rng));
                counts[t as usize] += 1;
            }
            for (i, (&c, &q)) in counts.iter().zip(&want).enumerate() {
                let sigma = (q * (1.0 - q) / n as f64).sqrt().max(1e-9);
                assert!((c as f64 / n as f64 - q).abs() <= 4.5 * sigma + 1e-12, "keep {keep:?}: token {i}");
            }
        }
        let greedy = SamplingParams { temperature: 0.0, ..p };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(sample_where(&logits, &greedy, &mut rng, 3, |_| true), Some(2));
        assert_eq!(sample_where(&logits, &greedy, &mut rng, 3, |t| t != 2), Some(5));
        assert_eq!(sample_where(&logits, &greedy, &mut rng, 3, |t| t == 1 || t == 4), None);
        assert_eq!(sample_where(&logits, &greedy, &mut rng, 6, |t| t == 1 || t == 4), Some(1));
        assert_eq!(sample_where(&logits, &greedy, &mut rng, 0, |_| true), None, "no tries: the caller masks");
    }

    #[test]
    fn samples_follow_the_softmax_with_top_k_and_top_p() {
        let logits = [1.0f32, 0.5, 2.0, -1.0, 0.0, 1.5];
        let t = 0.7f64;
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / t).exp()).collect();
        let norm = |keep: &[usize]| {
            let z: f64 = keep.iter().map(|&i| e[i]).sum();
            (0..e.len()).map(|i| if keep.contains(&i) { e[i] / z } else { 0.0 }).collect::<Vec<f64>>()
        };
        let base = SamplingParams { temperature: t as f32, top_k: 0, top_p: 1.0 };
        check_distribution(&logits, base, &norm(&[0, 1, 2, 3, 4, 5]));
        check_distribution(&logits, SamplingParams { top_k: 3, ..base }, &norm(&[2, 5, 0]));
        // Sorted probabilities: 2: .521, 5: .255, 0: .125, ...; top_p .6 keeps the first two.
        check_distribution(&logits, SamplingParams { top_p: 0.6, ..base }, &norm(&[2, 5]));
        check_distribution(&logits, SamplingParams { top_k: 4, top_p: 0.85, ..base }, &norm(&[2, 5, 0]));
    }

    #[test]
    fn greedy_and_top_k() {
        let logits = [0.1, 3.0, 0.2, 2.9];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        assert_eq!(sample(&logits, &greedy, &mut rng), 1);
        let k2 = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0 };
        for _ in 0..100 {
            let t = sample(&logits, &k2, &mut rng);
            assert!(t == 1 || t == 3, "top-k 2 sampled {t}");
        }
        let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.3 };
        for _ in 0..100 {
            assert_eq!(sample(&logits, &p, &mut rng), 1);
        }
    }
}
