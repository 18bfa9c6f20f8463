//! What the CLI tests share: the tiny base run they start from.

use std::path::PathBuf;

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
