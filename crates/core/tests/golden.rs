//! Golden tests: our model against HF `transformers` `LlamaForCausalLM` on tiny random checkpoints
//! made by `tools/make_fixtures.py` (logits, loss, and the gradient of every parameter).
//!
//! Tolerance: |ours − theirs| ≤ 2e-5 + 1e-4·|theirs| elementwise (f32 on both sides; the residual
//! differences come from summation order and our polynomial exp).

use std::path::PathBuf;

use chatforge_core::backend::IGNORE;
use chatforge_core::checkpoint::{load_model, TensorFile};
use chatforge_core::cpu::Cpu;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= 2e-5 + 1e-4 * w.abs(), "{what}[{i}]: ours {g}, transformers {w}");
        worst = worst.max(err / (1e-6 + w.abs()));
    }
    eprintln!("{what}: max relative error {worst:.2e}");
}

fn check(name: &str) {
    let dir = fixture(name);
    let golden = TensorFile::open(&dir.join("golden.safetensors")).unwrap();
    let mut model = load_model(Cpu, &dir).unwrap();
    let (shape, ids) = golden.get_i64("input_ids").unwrap();
    let (_, labels) = golden.get_i64("labels").unwrap();
    let (b, t) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    // HF shifts inside the loss: position i predicts labels[i + 1]; -100 is ignored.
    let mut targets = vec![IGNORE; b * t];
    for bi in 0..b {
        for i in 0..t - 1 {
            let l = labels[bi * t + i + 1];
            targets[bi * t + i] = if l < 0 { IGNORE } else { l as u32 };
        }
    }

    let logits = model.forward(&ids, b, t);
    assert_close(&logits, &golden.get("logits").unwrap().1, &format!("{name} logits"));

    model.zero_grad();
    let (loss, _) = model.forward_backward(&ids, &targets, b, t, None);
    let want_loss = golden.get("loss").unwrap().1[0];
    assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0), "{name} loss: ours {loss}, transformers {want_loss}");

    let names: Vec<String> = golden.names().into_iter().filter(|n| n.starts_with("grad.")).collect();
    assert_eq!(names.len(), model.params().len(), "{name}: one gradient per parameter");
    for p in model.params() {
        let want = golden.get(&format!("grad.{}", p.name)).unwrap().1;
        assert_close(&p.g, &want, &format!("{name} grad {}", p.name));
    }
}

#[test]
fn tied_gqa_matches_transformers() {
    check("tied_gqa");
}

#[test]
fn untied_mha_matches_transformers() {
    check("untied_mha");
}

/// Cached decoding gives the same next-token logits as the full forward.
#[test]
fn cached_decode_matches_forward() {
    let dir = fixture("tied_gqa");
    let golden = TensorFile::open(&dir.join("golden.safetensors")).unwrap();
    let model = load_model(Cpu, &dir).unwrap();
    let (shape, ids) = golden.get_i64("input_ids").unwrap();
    let (t, v) = (shape[1], model.cfg.vocab_size);
    let ids: Vec<u32> = ids[..t].iter().map(|&x| x as u32).collect();
    let want = golden.get("logits").unwrap().1;
    let mut cache = model.new_cache(t);
    // prefill 10 tokens, then one at a time
    let mut got = model.decode(&mut cache, &ids[..10]);
    assert_close(&got, &want[9 * v..10 * v], "decode prefill");
    for i in 10..t {
        got = model.decode(&mut cache, &ids[i..i + 1]);
        assert_close(&got, &want[i * v..(i + 1) * v], &format!("decode step {i}"));
    }
}
