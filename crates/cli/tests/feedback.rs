//! The feedback and RLHF stages end to end from the CLI on a tiny model: simulated labels into
//! SQLite, the reward model, many samples ranked by it, preference export, DPO, PPO, win rates.

use std::path::PathBuf;
use std::process::Command;

mod common;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
}

fn ok(args: &[&str], run: &PathBuf) -> String {
    let out = bin().arg(args[0]).arg("--run").arg(run).args(&args[1..]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chatforge {args:?} failed:\n{text}");
    text
}

#[test]
fn labels_reward_model_sampling_dpo_and_ppo() {
    let run = std::env::temp_dir().join(format!("chatforge-feedback-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let pre = common::tiny_pretrain();
    ok(&pre.iter().map(String::as_str).collect::<Vec<_>>(), &run);
    ok(&["sft", "--steps", "3", "--batch", "2", "--small-suite"], &run);

    // Without labels, the reward model says what to do.
    let out = bin().args(["rm", "--run"]).arg(&run).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("label"), "{out:?}");

    let text = ok(&["label", "--simulated", "--pairs", "120", "--samples-per-prompt", "4"], &run);
    assert!(text.contains("judges agree on"), "{text}");
    let db = rusqlite::Connection::open(run.join("feedback.sqlite")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM comparisons c JOIN raters r ON r.id = c.rater_id WHERE r.simulated = 1", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 120, "{n} simulated comparisons");

    let text = ok(&["rm", "--epochs", "1"], &run);
    assert!(text.contains("held-out accuracy"), "{text}");
    assert!(run.join("rm/model.safetensors").exists() && run.join("plots/rm_loss.svg").exists());

    let text = ok(&["sample", "-n", "64", "--prompt", "Spell \"cat\" letter by letter.", "--max-tokens", "8"], &run);
    assert!(text.contains("p50") && text.contains("--- worst"), "{text}");
    let text = ok(&["sample", "--best-of", "4", "--prompt", "What is 2 + 2?", "--max-tokens", "8"], &run);
    assert!(text.contains("best of 4"), "{text}");

    let prefs = run.join("prefs.jsonl");
    let out = bin().args(["prefs", "export", "--run"]).arg(&run).arg("--out").arg(&prefs).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = std::fs::read_to_string(&prefs).unwrap().lines().next().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["prompt"].is_array() && v["chosen"][0]["role"] == "assistant" && v["rejected"].is_array(), "{line}");

    let text = ok(&["dpo", "--epochs", "0.2"], &run);
    assert!(text.contains("win rate vs SFT"), "{text}");
    // The PTX term (the SFT loss mixed into DPO) ran and was logged at every step.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let dpo_rows: Vec<serde_json::Value> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["stage"] == "dpo" && v["loss"].is_number())
        .collect();
    assert!(!dpo_rows.is_empty() && dpo_rows.iter().all(|v| v["ptx_loss"].as_f64().is_some_and(|x| x.is_finite() && x > 0.0)), "{metrics}");
    let text = ok(&["ppo", "--iterations", "2", "--rollouts", "4"], &run);
    assert!(text.contains("win rate vs SFT") && text.contains("KL to SFT"), "{text}");
    assert!(run.join("plots/rl.svg").exists());
    // Headroom: best-of-k picked three ways; the gold judge's pick can only gain with k.
    let text = ok(&["headroom", "--n", "2"], &run);
    assert!(text.contains("gold judge") && text.contains("orders"), "{text}");
    assert!(run.join("plots/headroom.svg").exists());
    // Data efficiency: two pair counts, each through RM + PPO and DPO; the main stages stay as they were.
    let ppo_before = std::fs::read(run.join("ppo/model.safetensors")).unwrap();
    let text =
        ok(&["pairs-curve", "--pairs", "15,30", "--iterations", "1", "--rollouts", "4", "--rm-epochs", "0.2", "--dpo-epochs", "0.2"], &run);
    assert!(text.contains("   15 pairs") && text.contains("   30 pairs"), "{text}");
    assert!(run.join("plots/win_rate_by_pairs.svg").exists() && run.join("pairs/n30/ppo/model.safetensors").exists());
    assert_eq!(std::fs::read(run.join("ppo/model.safetensors")).unwrap(), ppo_before, "the curve must not touch R/ppo");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let s = &report["stages"];
    for key in ["simulated_agreement", "strict_agreement", "pairs"] {
        assert!(s["labels"][key].is_number(), "labels.{key}: {report}");
    }
    let rows = s["headroom"]["best_of"].as_array().unwrap_or_else(|| panic!("headroom.best_of: {report}"));
    assert_eq!(rows.iter().map(|r| r["k"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    let gold = |i: usize| rows[i]["gold"]["win_rate"].as_f64().unwrap();
    assert!(gold(1) >= gold(0), "{rows:?}");
    assert!((0.0..=1.0).contains(&s["headroom"]["rm_ranking_accuracy"].as_f64().unwrap()));
    for key in ["heldout_accuracy", "heldout_accuracy_noisy", "gold_accuracy_noisy", "tie_pairs", "pairs", "ece"] {
        assert!(s["rm"][key].is_number(), "rm.{key}: {report}");
    }
    for stage in ["ppo", "dpo"] {
        for key in ["win_rate_vs_sft", "json_adherence", "harmful_compliance", "over_refusal"] {
            assert!(s[stage][key].is_number(), "{stage}.{key}: {report}");
        }
    }
    assert!(s["ppo"]["kl"].is_number());
    for stage in ["ppo", "dpo"] {
        let rows = s[stage]["win_rate_by_pairs"].as_array().unwrap_or_else(|| panic!("{stage}.win_rate_by_pairs: {report}"));
        assert_eq!(rows.iter().map(|r| r["pairs"].as_u64().unwrap()).collect::<Vec<_>>(), [15, 30]);
        assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r["win_rate"].as_f64().unwrap())));
    }
    std::fs::remove_dir_all(&run).ok();
}

#[test]
fn pairs_curve_without_a_chat_model_is_refused_and_creates_nothing() {
    let run = std::env::temp_dir().join(format!("chatforge-curve-empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let out = bin().args(["pairs-curve", "--run"]).arg(&run).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no SFT model"), "{err}");
    assert!(!run.exists(), "a refused pairs-curve must not create {}", run.display());
}
