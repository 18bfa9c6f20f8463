//! Exact resume: a pretraining run killed at random moments (SIGKILL) and at chosen points of a
//! checkpoint write, then restarted, logs the same loss at every step, bit for bit, as a run
//! that was never stopped; in fp32 and in bf16 (native AVX512-BF16 where the CPU has it, else
//! the emulated path, which must be just as exact).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chatforge"))
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/tokenizer_corpus.txt")
}

const STEPS: usize = 40;

fn pretrain(run: &Path, precision: &str) -> Command {
    let mut c = Command::new(bin());
    c.args(["--threads", "2", "pretrain", "--precision", precision, "--run"]).arg(run).arg("--data").arg(corpus());
    c.args(["--tokenizer", "bytes", "--depth", "1", "--context", "32", "--batch", "4", "--steps"]);
    c.arg(STEPS.to_string());
    c.args(["--eval-every", "10", "--eval-tokens", "256", "--checkpoint-every", "3", "--sample-tokens", "8", "--warmup", "5"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Train loss per step from metrics.jsonl (each step exactly once).
fn losses(run: &Path) -> BTreeMap<u64, f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) {
            assert!(out.insert(step, loss).is_none(), "step {step} logged twice");
        }
    }
    out
}

fn lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

#[test]
fn killed_and_restarted_run_matches_uninterrupted_run_fp32() {
    killed_and_restarted("fp32");
}

#[test]
fn killed_and_restarted_run_matches_uninterrupted_run_bf16() {
    killed_and_restarted("bf16");
    // And bf16 is really another arithmetic: its losses are not fp32's.
    let tmp = tempdir("cmp");
    let (a, b) = (tmp.join("fp32"), tmp.join("bf16"));
    assert!(pretrain(&a, "fp32").status().unwrap().success());
    assert!(pretrain(&b, "bf16").status().unwrap().success());
    let (fp32, bf16) = (losses(&a), losses(&b));
    let differ = fp32.iter().filter(|(s, l)| bf16[s].to_bits() != l.to_bits()).count();
    assert!(differ > STEPS / 2, "only {differ} of {STEPS} bf16 losses differ from fp32's");
    let last = STEPS as u64;
    assert!((bf16[&last] - fp32[&last]).abs() < 0.05 * fp32[&last], "step {last}: bf16 {} vs fp32 {}", bf16[&last], fp32[&last]);
    std::fs::remove_dir_all(&tmp).ok();
}

fn killed_and_restarted(precision: &str) {
    let tmp = tempdir(precision);
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    assert!(pretrain(&a, precision).status().unwrap().success());
    let want = losses(&a);
    assert_eq!(want.len(), STEPS);

    // Crashes inside checkpoint writes: after the model is written but before the optimizer
    // state and state.json, and between the two renames of the commit.
    for crash in ["mid_write:6", "between_renames:12"] {
        let status = pretrain(&b, precision).env("CHATFORGE_CRASH", crash).status().unwrap();
        assert!(!status.success(), "{crash}: the run should have aborted");
    }
    // Then SIGKILLs at moments spread over the run.
    let mut kills = 0;
    for delay_lines in [3usize, 5, 4, 6] {
        let mut child = pretrain(&b, precision).spawn().unwrap();
        let start = lines(&b);
        let t = Instant::now();
        while lines(&b) < start + delay_lines && t.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 2, "the run finished before it could be killed");
    assert!(pretrain(&b, precision).status().unwrap().success());
    let got = losses(&b);
    assert_eq!(got.len(), STEPS, "every step logged once");
    for (step, l) in &want {
        assert_eq!(got[step].to_bits(), l.to_bits(), "step {step}: resumed {} vs uninterrupted {l}", got[step]);
    }
    // A corrupted checkpoint is an error naming the file, not a silent restart.
    let model = b.join("base/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let out = pretrain(&b, precision).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("model.safetensors") && err.contains("checksum"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}

fn tempdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("chatforge-resume-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}
