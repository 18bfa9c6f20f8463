//! What the CLI tests share: the tiny base run they start from, the tiny imported model, and
//! running a `chatforge` command on a run folder. (Each test file uses some of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tiny random Qwen2-shaped HF folder for `chatforge import` (tools/make_import_fixture.py).
pub fn qwen2_tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_tiny")
}

/// `chatforge <args[0]> --run <run> <args[1..]>`, its output captured.
pub fn chatforge(args: &[&str], run: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge")).arg(args[0]).arg("--run").arg(run).args(&args[1..]).output().unwrap()
}

/// [`chatforge`], which must succeed; returns stdout and stderr together.
pub fn ok(args: &[&str], run: &Path) -> String {
    let out = chatforge(args, run);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chatforge {args:?} failed:\n{text}");
    text
}

/// `pretrain` arguments (after the subcommand's `--run`) for a tiny base model in seconds: the
/// byte tokenizer, depth 1, context 128, 4 steps on the tokenizer test corpus.
pub fn tiny_pretrain() -> Vec<String> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/tokenizer_corpus.txt");
    let args = [
        "pretrain",
        "--tokenizer",
        "bytes",
        "--depth",
        "1",
        "--context",
        "128",
        "--batch",
        "2",
        "--steps",
        "4",
        "--eval-tokens",
        "128",
        "--data",
    ];
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.push(corpus.to_string_lossy().into_owned());
    v
}
