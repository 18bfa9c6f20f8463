//! LoRA from the CLI on the tiny random Qwen2-shaped import (tools/make_import_fixture.py):
//! import → `sft --lora` → labels → `dpo --lora`. Each LoRA stage trains only its adapters (the
//! base's bytes are untouched), saves the merged model and, in `adapter/`, the adapters in
//! PEFT's format, and `peft` loads those adapters onto the base with the merged model's logits
//! (tools/peft_check.py, with the Python of `CHATFORGE_PYTHON`). A target that is not a linear
//! layer is refused by name, and so is a resume onto changed base weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{chatforge, ok, qwen2_tiny as fixture};

/// A Python with torch, transformers and peft, or None (a failure with CHATFORGE_REQUIRE_TORCH).
fn peft_python() -> Option<PathBuf> {
    let py = std::env::var_os("CHATFORGE_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into());
    let found =
        Command::new(&py).args(["-c", "import torch, transformers, peft"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if found {
        return Some(py);
    }
    let why = format!("{} cannot import torch, transformers and peft (pip install peft; or set CHATFORGE_PYTHON)", py.display());
    assert!(std::env::var_os("CHATFORGE_REQUIRE_TORCH").is_none(), "{why}");
    eprintln!("skipping the peft check: {why}");
    None
}

fn peft_check(py: &Path, base: &Path, stage: &Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/peft_check.py");
    let out = Command::new(py).arg(script).arg(base).arg(stage).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "peft check of {}:\n{stdout}{stderr}", stage.display());
    eprintln!("peft on {}: {}", stage.display(), stdout.trim());
}

#[test]
fn lora_sft_and_dpo_train_adapters_that_peft_loads() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let out = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .arg("import")
        .arg(fixture())
        .arg("--run")
        .arg(&run)
        .args(["--as", "base"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let base_bytes = std::fs::read(run.join("base/model.safetensors")).unwrap();

    // A module that is not a linear layer of a block is refused by name, before any work.
    let out = chatforge(&["sft", "--lora", "--lora-targets", "q_proj,lm_head", "--steps", "5", "--small-suite"], &run);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lm_head") && err.contains("q_proj, k_proj"), "{err}");
    assert!(!run.join("sft").exists());

    let text = ok(&["sft", "--lora", "--lora-r", "4", "--steps", "5", "--batch", "2", "--small-suite"], &run);
    assert!(text.contains("LoRA r 4 alpha 16"), "{text}");
    for f in ["model.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "trainer.safetensors"] {
        assert!(run.join("sft").join(f).is_file(), "sft/{f} missing");
    }
    assert_eq!(std::fs::read(run.join("base/model.safetensors")).unwrap(), base_bytes, "the base is frozen");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let sft = &report["stages"]["sft"];
    assert_eq!(sft["lora"]["r"], 4);
    let (trainable, total) = (sft["trainable_params"].as_u64().unwrap(), sft["total_params"].as_u64().unwrap());
    assert!(trainable > 0 && trainable * 10 < total, "{trainable} of {total} parameters trained");
    // The optimizer's state is the adapters' alone.
    let moments = chatforge_core::checkpoint::TensorFile::open(&run.join("sft/trainer.safetensors")).unwrap().names();
    assert!(moments.iter().filter(|n| n.starts_with("m.")).all(|n| n.contains(".lora_")), "{moments:?}");

    ok(&["label", "--simulated", "--pairs", "40", "--samples-per-prompt", "2"], &run);
    let text = ok(&["dpo", "--lora", "--epochs", "2.5"], &run);
    assert!(text.contains("win rate vs SFT"), "{text}");
    assert!(run.join("dpo/adapter/adapter_model.safetensors").is_file());
    let adapter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("dpo/adapter/adapter_config.json")).unwrap()).unwrap();
    let base_path = adapter["base_model_name_or_path"].as_str().unwrap();
    assert!(base_path.ends_with("sft"), "DPO's adapters sit on the SFT model: {base_path}");

    if let Some(py) = peft_python() {
        peft_check(&py, &run.join("base"), &run.join("sft"));
        peft_check(&py, &run.join("sft"), &run.join("dpo"));
    }

    // A LoRA checkpoint resumes only on the base it was trained on (its sha256 is recorded).
    std::fs::copy(run.join("sft/model.safetensors"), run.join("base/model.safetensors")).unwrap();
    let out = chatforge(&["sft", "--lora", "--lora-r", "4", "--steps", "5", "--batch", "2", "--small-suite"], &run);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("other base weights") && err.contains("base"), "{err}");
}
