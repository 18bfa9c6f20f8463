//! LoRA adapters against `peft`: an adapter saved by `peft` (tools/make_lora_fixture.py, rank 4
//! on every linear layer of a tiny Qwen2 with q/k/v biases) loads onto its base and gives
//! peft's logits, loss, adapter gradients and merged weights; ours round-trip through PEFT's
//! format; a fresh adapter leaves the model unchanged; decoding sees the adapter; and what we
//! cannot compute is refused by name.
//!
//! Tolerance as the golden tests: |ours − theirs| ≤ 2e-5 + 1e-4·|theirs| elementwise.

use std::path::{Path, PathBuf};

use chatforge_core::backend::IGNORE;
use chatforge_core::checkpoint::{load_model, TensorFile};
use chatforge_core::cpu::Cpu;
use chatforge_core::model::lora::{load_adapter, save_adapter, LoraConfig, ADAPTER_CONFIG};
use chatforge_core::model::Llama;
use chatforge_core::sample::{argmax, generate, SamplingParams};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 2e-5 + 1e-4 * w.abs(), "{what}[{i}]: ours {g}, peft {w}");
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chatforge-lora-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn with_peft_adapter() -> Llama<Cpu> {
    let mut m = load_model(Cpu, &fixture("qwen2")).unwrap();
    load_adapter(&mut m, &fixture("lora_qwen2")).unwrap();
    m
}

/// The golden batch: ids, next-token targets (HF shifts inside its loss), rows, length.
fn batch(golden: &TensorFile) -> (Vec<u32>, Vec<u32>, usize, usize) {
    let (shape, ids) = golden.get_i64("input_ids").unwrap();
    let (_, labels) = golden.get_i64("labels").unwrap();
    let (b, t) = (shape[0], shape[1]);
    let mut targets = vec![IGNORE; b * t];
    for bi in 0..b {
        for i in 0..t - 1 {
            let l = labels[bi * t + i + 1];
            targets[bi * t + i] = if l < 0 { IGNORE } else { l as u32 };
        }
    }
    (ids.iter().map(|&x| x as u32).collect(), targets, b, t)
}

#[test]
fn a_peft_adapter_gives_peft_logits_loss_gradients_and_merge() {
    let golden = TensorFile::open(&fixture("lora_qwen2/golden.safetensors")).unwrap();
    let mut m = with_peft_adapter();
    let (ids, targets, b, t) = batch(&golden);
    assert_close(&m.forward(&ids, b, t), &golden.get("logits").unwrap().1, "logits");

    m.zero_grad();
    let (loss, _) = m.forward_backward(&ids, &targets, b, t, None);
    let want = golden.get("loss").unwrap().1[0];
    assert!((loss - want).abs() <= 1e-5 * want.abs().max(1.0), "loss: ours {loss}, peft {want}");
    let trainable = m.trainable();
    let grads: Vec<String> = golden.names().into_iter().filter(|n| n.starts_with("grad.")).collect();
    assert_eq!(trainable.len(), grads.len(), "one trainable tensor per adapter matrix, and nothing else");
    assert_eq!(trainable.len(), 2 * 7 * 2, "A and B on 7 layers of 2 blocks");
    for p in &trainable {
        assert!(p.name.contains(".lora_"), "{} trains, but the base is frozen", p.name);
        assert_close(&p.g, &golden.get(&format!("grad.{}", p.name)).unwrap().1, &format!("grad {}", p.name));
    }
    for p in m.params() {
        if p.shape.len() == 2 {
            assert!(p.g.is_empty(), "{} is frozen but has a gradient buffer", p.name);
        }
    }

    for p in m.params() {
        assert_close(&m.effective_weight(p), &golden.get(&format!("merged.{}", p.name)).unwrap().1, &format!("merged {}", p.name));
    }
    m.merge_lora();
    assert!(!m.has_lora() && m.trainable().len() == m.params().len());
    assert_close(&m.forward(&ids, b, t), &golden.get("logits").unwrap().1, "logits after merging");
}

#[test]
fn our_adapter_round_trips_through_peft_format() {
    let mut m = load_model(Cpu, &fixture("qwen2")).unwrap();
    let cfg = LoraConfig { r: 3, alpha: 5.0, targets: vec!["q_proj".into(), "down_proj".into()], rslora: false };
    m.add_lora(&cfg, 11).unwrap();
    // Make B nonzero, as training would.
    for p in m.trainable_mut() {
        if p.name.contains("lora_B") {
            let n = p.numel();
            *p.w = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.01).collect();
        }
    }
    let dir = tempdir("roundtrip");
    save_adapter(&m, &dir, "../qwen2").unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["r"], 3);
    assert_eq!(json["target_modules"], serde_json::json!(["q_proj", "down_proj"]));
    let mut back = load_model(Cpu, &fixture("qwen2")).unwrap();
    load_adapter(&mut back, &dir).unwrap();
    assert_eq!(back.lora_config().unwrap(), cfg);
    let (a, b) = (m.trainable(), back.trainable());
    assert_eq!(a.len(), 2 * 2 * 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.name, &x.shape, &*x.w), (&y.name, &y.shape, &*y.w), "adapter tensors round-trip bit for bit");
    }
    let ids: Vec<u32> = (0..10).map(|i| i * 7 % 50).collect();
    assert_eq!(m.forward(&ids, 1, 10), back.forward(&ids, 1, 10));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_fresh_adapter_changes_nothing_and_decoding_sees_a_trained_one() {
    let mut base = load_model(Cpu, &fixture("qwen2")).unwrap();
    let mut m = load_model(Cpu, &fixture("qwen2")).unwrap();
    m.add_lora(&LoraConfig::default(), 1).unwrap();
    let ids: Vec<u32> = (0..12).map(|i| (i * 13 + 5) % 60).collect();
    assert_eq!(base.forward(&ids, 1, 12), m.forward(&ids, 1, 12), "B = 0: the adapted model is the base model");
    let (trainable, total) = m.trainable_count();
    // r·(in + out) per layer: q 32+32, k and v 32+16, o 32+32, gate and up 32+64, down 64+32.
    assert_eq!(trainable, 2 * 8 * (64 + 48 + 48 + 64 + 96 + 96 + 96), "adapter parameters of {total}");

    // The peft adapter changes the output; KV-cached decoding must see it as the full forward does.
    let mut m = with_peft_adapter();
    let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let prompt = [3u32, 17, 40];
    let mut seq = prompt.to_vec();
    for _ in 0..10 {
        let v = m.cfg.vocab_size;
        let logits = m.forward(&seq, 1, seq.len());
        seq.push(argmax(&logits[(seq.len() - 1) * v..seq.len() * v]));
    }
    assert_eq!(generate(&m, &prompt, 10, &greedy, &[], 0), seq[3..], "cached decoding with the adapter");
    assert_ne!(generate(&base, &prompt, 10, &greedy, &[], 0), seq[3..], "the adapter changes the greedy answer");
}

#[test]
fn what_we_cannot_compute_is_refused_by_name() {
    let src = fixture("lora_qwen2");
    let write = |tag: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let dir = tempdir(tag);
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap();
        edit(&mut j);
        std::fs::write(dir.join(ADAPTER_CONFIG), j.to_string()).unwrap();
        dir
    };
    let err = |dir: &Path| {
        let mut m = load_model(Cpu, &fixture("qwen2")).unwrap();
        let e = load_adapter(&mut m, dir).unwrap_err().to_string();
        std::fs::remove_dir_all(dir).unwrap();
        e
    };
    let e = err(&write("dora", &|j| j["use_dora"] = true.into()));
    assert!(e.contains("use_dora"), "{e}");
    let e = err(&write("regex", &|j| j["target_modules"] = ".*proj".into()));
    assert!(e.contains("target_modules"), "{e}");
    let e = err(&write("lm_head", &|j| j["target_modules"] = serde_json::json!(["q_proj", "lm_head"])));
    assert!(e.contains("lm_head"), "{e}");
    // A rank the file's tensors do not have: the tensor is named with both shapes.
    let e = err(&write("rank", &|j| j["r"] = 5.into()));
    assert!(e.contains("lora_A") && e.contains("[4, 32]") && e.contains("[5, 32]"), "{e}");
    // Fewer targets than the file holds: the extra tensor is named.
    let e = err(&write("fewer", &|j| j["target_modules"] = serde_json::json!(["q_proj"])));
    assert!(e.contains("not an adapter of this model"), "{e}");
}
