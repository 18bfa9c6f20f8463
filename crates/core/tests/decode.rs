//! The engine's generation: KV-cached (and batched) decoding gives the same tokens as
//! recomputing the whole sequence at every step.

use chatforge_core::config::LlamaConfig;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::sample::{argmax, generate, generate_batch, GenOptions, SamplingParams};

fn model() -> Llama<Cpu> {
    let mut cfg = LlamaConfig::from_depth(2, 61, 48);
    cfg.num_key_value_heads = Some(1); // GQA: 2 query heads share one KV head
    cfg.num_attention_heads = 2;
    cfg.head_dim = Some(64);
    let mut m = Llama::new(Cpu, cfg, 7);
    // Larger weights than the 0.02 init so greedy paths are not all the same token.
    for p in m.params_mut() {
        if p.shape.len() == 2 {
            p.w.iter_mut().for_each(|x| *x *= 25.0);
        }
    }
    m
}

/// Greedy decoding by running the full forward over the growing sequence each step.
fn greedy_full(m: &mut Llama<Cpu>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let v = m.cfg.vocab_size;
    for _ in 0..n {
        let t = seq.len();
        let logits = m.forward(&seq, 1, t);
        seq.push(argmax(&logits[(t - 1) * v..t * v]));
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn cached_and_batched_decoding_equal_full_recomputation() {
    let mut m = model();
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![5], vec![9, 8, 7, 6, 5, 4, 3, 2], vec![60, 0, 33, 12]];
    let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let n = 20;
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| greedy_full(&mut m, p, n)).collect();
    let distinct: std::collections::BTreeSet<u32> = want.iter().flatten().copied().collect();
    assert!(distinct.len() > 3, "the test model should not be degenerate: {want:?}");
    for (p, w) in prompts.iter().zip(&want) {
        assert_eq!(&generate(&m, p, n, &greedy, &[], 0), w, "single-sequence cached decoding");
    }
    let opts = GenOptions { max_new: n, params: greedy, stop_ids: vec![] };
    let got = generate_batch(&m, &prompts, &opts, &[0, 1, 2, 3], |_, _| true);
    assert_eq!(got, want, "batched cached decoding");
}

#[test]
fn sampling_is_seeded_per_sequence_whatever_the_batch() {
    let m = model();
    let p: Vec<Vec<u32>> = vec![vec![4, 5, 6], vec![7], vec![1, 2, 3, 4, 5, 6, 7, 8, 9], vec![30, 31], vec![50; 5], vec![11, 22]];
    let seeds: Vec<u64> = (40..46).collect();
    for params in [SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.95 }, SamplingParams { temperature: 0.8, top_k: 0, top_p: 1.0 }] {
        let opts = GenOptions { max_new: 12, params, stop_ids: vec![] };
        let batched = generate_batch(&m, &p, &opts, &seeds, |_, _| true);
        let distinct: std::collections::BTreeSet<&Vec<u32>> = batched.iter().collect();
        assert!(distinct.len() > 3, "sampled answers should differ: {batched:?}");
        for i in 0..p.len() {
            let alone = generate_batch(&m, &p[i..i + 1], &opts, &seeds[i..i + 1], |_, _| true);
            assert_eq!(alone[0], batched[i], "{params:?}: sequence {i} alone vs in a batch of {}", p.len());
        }
        let pair = generate_batch(&m, &p[2..4], &opts, &seeds[2..4], |_, _| true);
        assert_eq!(pair, batched[2..4], "{params:?}: in a batch of 2");
    }
}

#[test]
fn stop_ids_and_callback_end_sequences() {
    let m = model();
    let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let first = generate(&m, &[1, 2, 3], 5, &greedy, &[], 0);
    let opts = GenOptions { max_new: 5, params: greedy, stop_ids: vec![first[2]] };
    let got = generate_batch(&m, &[vec![1, 2, 3]], &opts, &[0], |_, _| true);
    assert_eq!(got[0], first[..first.iter().position(|&t| t == first[2]).unwrap()].to_vec());
    let mut seen = 0;
    let opts = GenOptions { max_new: 10, params: greedy, stop_ids: vec![] };
    let got = generate_batch(&m, &[vec![1, 2, 3]], &opts, &[0], |_, _| {
        seen += 1;
        seen < 3
    });
    assert_eq!(got[0].len(), 3);
}

/// Tokens put in at a stop (a tool's result) continue the same cache: the output equals greedy
/// decoding of the prompt, the stop token and the put-in tokens, recomputed from scratch; and a
/// sequence batched with others is unchanged by their put-ins.
#[test]
fn tokens_put_in_at_a_stop_continue_the_same_cache() {
    use chatforge_core::sample::generate_batch_with;
    let mut m = model();
    let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let prompt = vec![1, 2, 3];
    let first = greedy_full(&mut m, &prompt, 6);
    let stop = first[3];
    let cut = first.iter().position(|&t| t == stop).unwrap();
    let put = vec![40u32, 41, 42];
    // What follows the put-in tokens, computed without any cache.
    let mut full = prompt.clone();
    full.extend(&first[..cut]);
    full.push(stop);
    full.extend(&put);
    let after = greedy_full(&mut m, &full, 5);
    let n_after = after.iter().position(|&t| t == stop).unwrap_or(after.len());
    let opts = GenOptions { max_new: cut + 1 + put.len() + 5, params: greedy, stop_ids: vec![stop] };
    let other = vec![9u32, 8, 7];
    let alone = generate_batch(&m, std::slice::from_ref(&other), &opts, &[0], |_, _| true);
    let mut stops = 0;
    let got = generate_batch_with(
        &m,
        &[prompt, other],
        &opts,
        &[0, 1],
        |_, _| true,
        |i, _| {
            (i == 0 && {
                stops += 1;
                stops == 1
            })
            .then(|| put.clone())
        },
        |_, _, _| {},
    );
    let mut want = first[..cut].to_vec();
    want.push(stop);
    want.extend(&put);
    want.extend(&after[..n_after.min(opts.max_new - want.len())]);
    assert_eq!(got[0].tokens, want);
    let sampled: Vec<bool> = (0..want.len()).map(|k| !(cut + 1..cut + 1 + put.len()).contains(&k)).collect();
    assert_eq!(got[0].generated, sampled);
    assert_eq!(got[1].tokens, alone[0], "a batched sequence is unchanged by another's put-in tokens");
}

/// Prefix caching: prompts sharing a prefix (identical, one a prefix of another, a common
/// header) give, batched together, exactly the tokens each gives alone.
#[test]
fn shared_prefixes_are_reused_exactly() {
    let m = model();
    let head: Vec<u32> = vec![3, 14, 15, 9, 26, 5, 35];
    let with = |tail: &[u32]| head.iter().chain(tail).copied().collect::<Vec<u32>>();
    let p = vec![with(&[8, 9]), with(&[7]), with(&[8, 9]), head.clone(), with(&[8, 9, 10, 11]), vec![40, 41]];
    let seeds: Vec<u64> = (0..p.len() as u64).map(|i| 100 + i % 2).collect();
    for params in [SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 }, SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 }] {
        let opts = GenOptions { max_new: 10, params, stop_ids: vec![] };
        let batched = generate_batch(&m, &p, &opts, &seeds, |_, _| true);
        for i in 0..p.len() {
            let alone = generate_batch(&m, &p[i..i + 1], &opts, &seeds[i..i + 1], |_, _| true);
            assert_eq!(alone[0], batched[i], "{params:?}: prompt {i}");
        }
        if params.temperature == 0.0 {
            let mut mm = model();
            assert_eq!(batched[1], greedy_full(&mut mm, &p[1], 10), "against full recomputation");
        }
    }
}

/// With `doc_sep`, a row packed with two documents gives the second the logits it gets alone
/// (RoPE sees only relative positions), and the decoding cache agrees; without it, the second
/// document sees the first.
#[test]
fn doc_sep_makes_packed_documents_independent() {
    let mut m = model();
    let v = m.cfg.vocab_size;
    let sep = 60u32;
    let (a, b): (Vec<u32>, Vec<u32>) = ((1..20).collect(), (30..41).collect());
    let mut row = a.clone();
    row.push(sep);
    row.extend(&b);
    let t = row.len();
    m.doc_sep = Some(sep);
    let packed = m.forward(&row, 1, t);
    m.doc_sep = None;
    let alone = m.forward(&b, 1, b.len());
    let second = &packed[(a.len() + 1) * v..];
    // Within float error of logits this large (RoPE rotates by other absolute angles).
    let scale = alone.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = second.iter().zip(&alone).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5 * scale, "packed vs alone: {worst} (logits up to {scale})");
    let first = m.forward(&a, 1, a.len());
    assert!(packed[..a.len() * v].iter().zip(&first).all(|(x, y)| (x - y).abs() < 1e-5 * scale));
    let mixed = m.forward(&row, 1, t);
    let moved = mixed[(a.len() + 1) * v..].iter().zip(&alone).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-2 * scale, "without doc_sep the second document should see the first ({moved} of {scale})");
}

/// Prompts prefilled together (`decode_seqs_into`, as the server admits them) give each sequence
/// the same logits and cache, bit for bit, as prefilling it alone, and decoding goes on the same.
#[test]
fn prompts_prefilled_together_equal_prefilled_alone() {
    let m = model();
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![5], vec![9, 8, 7, 6, 5, 4, 3, 2], vec![60, 0, 33, 12]];
    let v = m.cfg.vocab_size;
    // Alone: a prompt, then two tokens.
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let mut c = m.new_cache(32);
            let mut out = m.decode(&mut c, p);
            out.extend(m.decode(&mut c, &[4]));
            out.extend(m.decode(&mut c, &[11]));
            out
        })
        .collect();
    // Together, then one token of each per step.
    let mut caches: Vec<_> = (0..prompts.len()).map(|_| m.new_cache(32)).collect();
    let mut ws = m.decode_ws();
    let ids: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let mut refs: Vec<_> = caches.iter_mut().collect();
    m.decode_seqs_into(&mut refs, &ids, &mut ws);
    let mut together: Vec<Vec<f32>> = ws.host.chunks_exact(v).map(|r| r.to_vec()).collect();
    for tok in [4, 11] {
        m.decode_batch_into(&mut refs, &vec![tok; prompts.len()], &mut ws);
        for (t, row) in together.iter_mut().zip(ws.host.chunks_exact(v)) {
            t.extend_from_slice(row);
        }
    }
    let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(bits(a), bits(b), "sequence {i}");
    }
}
