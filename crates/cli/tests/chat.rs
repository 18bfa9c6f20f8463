//! End to end from the CLI on a tiny model: pretrain -> sft -> chat with piped stdin.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
}

#[test]
fn pretrain_sft_and_chat_from_piped_stdin() {
    let run = std::env::temp_dir().join(format!("chatforge-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/tokenizer_corpus.txt");
    let ok = bin()
        .args(["pretrain", "--run"])
        .arg(&run)
        .arg("--data")
        .arg(&corpus)
        .args(["--tokenizer", "bytes", "--depth", "1", "--context", "128", "--batch", "2", "--steps", "4", "--eval-tokens", "128"])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = bin().args(["sft", "--run"]).arg(&run).args(["--steps", "3", "--batch", "2", "--small-suite"]).output().unwrap();
    assert!(out.status.success(), "sft failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("JSON adherence"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert!(report["stages"]["sft"]["family_scores"]["system"]["after"].is_number(), "{report}");
    assert!(report["stages"]["sft"]["json_adherence"].is_number());

    let mut child =
        bin().args(["chat", "--run"]).arg(&run).args(["--max-tokens", "8"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Who speaks \"To be, or not to be\"?\n/system Answer in one word.\n/temperature 0\nAnd who wrote it?\n/quit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(system message set; conversation cleared)") && text.contains("(temperature 0)"), "{text}");
    // Two answers were printed (one line each, possibly empty for an untrained model).
    assert!(text.lines().count() >= 4, "{text}");
    std::fs::remove_dir_all(&run).ok();
}
