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

/// Picks the next token from `logits` (temperature 0 = argmax; top_k 0 = no limit).
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if p.top_k > 0 {
        idx.truncate(p.top_k);
    }
    let m = logits[idx[0] as usize];
    let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i as usize] - m) / p.temperature).exp()).collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= total);
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs.iter().position(|&x| {
            acc += x;
            acc >= p.top_p
        });
        let keep = keep.map_or(probs.len(), |k| k + 1);
        probs.truncate(keep);
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
    }
    let r: f32 = rng.random();
    let mut acc = 0.0;
    for (i, &x) in probs.iter().enumerate() {
        acc += x;
        if r < acc {
            return idx[i];
        }
    }
    idx[probs.len() - 1]
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
    let mut logits = model.decode(&mut cache, prompt);
    let mut out = Vec::new();
    while out.len() < max_new {
        let tok = sample(&logits, params, &mut rng);
        if stop.contains(&tok) {
            break;
        }
        out.push(tok);
        if cache.len >= cache.capacity {
            break;
        }
        logits = model.decode(&mut cache, &[tok]);
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
    generate_batch_with(model, prompts, opts, seeds, on_token, |_, _| None).into_iter().map(|g| g.tokens).collect()
}

/// One sequence's output from [`generate_batch_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    /// What follows the prompt: sampled tokens, and the tokens `on_stop` put in.
    pub tokens: Vec<u32>,
    /// `generated[k]`: whether `tokens[k]` was sampled from the model (true) or put in (false).
    pub generated: Vec<bool>,
}

/// [`generate_batch`] with a hook where a sequence stops: when sequence i samples a stop token,
/// `on_stop(i, tokens so far)` may return tokens to put in (a tool's result and the header of
/// the next turn). Then the stop token and those tokens join the output, are prefilled into the
/// sequence's cache, and decoding goes on; `None` ends the sequence as usual. The `max_new` cap
/// counts every output token. A sequence whose cache cannot hold what is put in ends there.
pub fn generate_batch_with<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenOptions,
    seeds: &[u64],
    mut on_token: impl FnMut(usize, u32) -> bool,
    mut on_stop: impl FnMut(usize, &[u32]) -> Option<Vec<u32>>,
) -> Vec<Generated> {
    let cap = model.cfg.max_position_embeddings;
    let n = prompts.len();
    let mut rngs: Vec<ChaCha8Rng> = seeds.iter().map(|&s| ChaCha8Rng::seed_from_u64(s)).collect();
    let mut caches: Vec<_> = (0..n).map(|_| model.new_cache(cap)).collect();
    let mut out = vec![Generated::default(); n];
    let mut next = vec![0u32; n];
    let mut live = vec![true; n];
    // Sequences whose next token was sampled after tokens were put in: they skip one decode.
    let mut fresh = vec![false; n];
    for i in 0..n {
        let p = &prompts[i];
        let p = if p.len() >= cap { &p[p.len() - cap + 1..] } else { &p[..] };
        if p.is_empty() || opts.max_new == 0 {
            live[i] = false;
            continue;
        }
        let logits = model.decode(&mut caches[i], p);
        next[i] = sample(&logits, &opts.params, &mut rngs[i]);
    }
    loop {
        fresh.iter_mut().for_each(|f| *f = false);
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
                        let mut piece = vec![tok];
                        piece.extend_from_slice(&put);
                        let logits = model.decode(&mut caches[i], &piece);
                        next[i] = sample(&logits, &opts.params, &mut rngs[i]);
                        fresh[i] = true;
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
        // A sequence that had tokens put in already has its next token; the others decode.
        if !live.contains(&true) {
            break;
        }
        let idx: Vec<usize> = (0..n).filter(|&i| live[i] && !fresh[i]).collect();
        if idx.is_empty() {
            continue;
        }
        let tokens: Vec<u32> = idx.iter().map(|&i| next[i]).collect();
        let mut refs: Vec<&mut crate::model::KvCache<B>> =
            caches.iter_mut().enumerate().filter(|(i, _)| live[*i] && !fresh[*i]).map(|(_, c)| c).collect();
        let logits = model.decode_batch(&mut refs, &tokens);
        for (k, &i) in idx.iter().enumerate() {
            next[i] = sample(&logits[k], &opts.params, &mut rngs[i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
