//! `chatforge eval` end to end on a tiny base model: the bundled registry, few-shot prompting,
//! per-sample files, report.json figures and the report card.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
}

#[test]
fn eval_a_tiny_base_model_with_the_bundled_registry() {
    let run = std::env::temp_dir().join(format!("chatforge-eval-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/tokenizer_corpus.txt");
    let ok = bin()
        .args(["pretrain", "--run"])
        .arg(&run)
        .arg("--data")
        .arg(&corpus)
        .args(["--tokenizer", "bytes", "--depth", "1", "--context", "128", "--batch", "2", "--steps", "2", "--eval-tokens", "128"])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = bin().args(["eval", "--run"]).arg(&run).args(["--stage", "base", "--limit", "3", "--samples", "2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "eval failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // The judge (the sft stage) does not exist here: that eval is skipped, not failed.
    assert!(stdout.contains("skipping judged"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let base = &report["stages"]["base"];
    for figure in [
        "val_bpb",
        "harmful_compliance",
        "over_refusal",
        "injection_resistance",
        "symmetry_length_gap",
        "json_adherence",
        "worst_case_rate",
    ] {
        assert!(base.get(figure).is_some(), "{figure} missing: {base}");
    }
    assert!(base["family_scores"]["arithmetic"].is_number(), "{base}");
    assert!(base["evals"]["refusal"]["n"].as_u64() == Some(3));
    let rows = std::fs::read_to_string(run.join("evals/base/arithmetic.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 3);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("<th>BASE</th>") && html.contains("prompt-injection resistance") && html.contains("System card"));
    // The card in headless Chromium (Debian's; CI installs it): the page parses, the stage
    // column and the figures are in the DOM, and a screenshot is drawn.
    browser_check(&run);
    // An eval asked for by name that cannot run is an error that says why.
    let out = bin().args(["eval", "--run"]).arg(&run).args(["--stage", "base", "--eval", "judged"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("judged"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&run).ok();
}

fn browser_check(run: &std::path::Path) {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        assert!(std::env::var("CHATFORGE_REQUIRE_BROWSER").is_err(), "CHATFORGE_REQUIRE_BROWSER is set but /usr/bin/chromium is missing");
        eprintln!("skipping the browser check: no /usr/bin/chromium");
        return;
    }
    let url = format!("file://{}", run.join("report.html").display());
    let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"];
    let dom = Command::new(chromium).args(flags).arg("--dump-dom").arg(&url).output().unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<th>BASE</th>") && dom.contains("harmful compliance") && dom.contains("System card"), "{dom}");
    let png = run.join("card.png");
    let out = Command::new(chromium)
        .args(flags)
        .arg("--window-size=1100,1400")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "a blank or missing screenshot ({} bytes)", bytes.len());
}
