//! The report card: one column per stage in BASE, SFT, RM, PPO, DPO order, every headline figure,
//! and a system card that states the safety figures together.

use chatforge_rundir::card::{render_html, render_md, stage_columns, system_card, table};
use serde_json::json;

fn report() -> serde_json::Value {
    json!({
        "stages": {
            "sft": {"val_bpb": 2.9, "family_scores": {"arithmetic": {"before": 0.0, "after": 0.25}}, "json_adherence": 0.9,
                    "harmful_compliance": 0.05, "over_refusal": 0.1, "injection_resistance": 0.4, "system_adherence": 0.8,
                    "symmetry_length_gap": 0.3, "symmetry_reward_gap": null, "worst_case_rate": 0.2,
                    "evals": {"refusal": {"harmful_n": 20, "benign_n": 10, "n": 30}, "many": {"samples_per_prompt": 100}}},
            "ppo": {"harmful_compliance": 0.01, "over_refusal": 0.12, "family_scores": {"arithmetic": 0.3}, "kl": 0.05},
            "base": {"val_bpb": 2.41, "params": 5310720, "tokens": 4505600},
            "scaling": {"predicted": 5.1},
            "rm": {"pair_accuracy": 0.7}
        },
        "run": {"hardware": {"cpu": "Xeon", "cores": 2}, "wall_s": 1000.0}
    })
}

#[test]
fn columns_rows_and_system_card() {
    let r = report();
    assert_eq!(stage_columns(&r), ["base", "sft", "rm", "ppo"], "model stages in order; scaling is not a column");
    let (header, rows) = table(&r);
    assert_eq!(header, ["figure", "BASE", "SFT", "RM", "PPO"]);
    let row = |label: &str| rows.iter().find(|r| r[0] == label).unwrap_or_else(|| panic!("no row {label}: {rows:?}")).clone();
    assert_eq!(row("val bits per byte"), ["val bits per byte", "2.4100", "2.9000", "—", "—"]);
    // The base column takes SFT's `before` family score; SFT shows its `after`.
    assert_eq!(row("family: arithmetic"), ["family: arithmetic", "0.0%", "25.0%", "—", "30.0%"]);
    assert_eq!(row("harmful compliance"), ["harmful compliance", "—", "5.0%", "—", "1.0%"]);
    assert_eq!(row("symmetry: reward gap")[2], "n/a");
    assert_eq!(row("parameters")[1], "5,310,720");
    assert_eq!(row("pair accuracy")[3], "0.7000", "a new stage's own figures get rows");
    assert_eq!(row("RL: KL to SFT")[4], "0.050");
    // The system card describes the latest chat stage with safety figures: PPO.
    let card = system_card(&r).join("\n");
    assert!(card.contains("PPO") && card.contains("1.0%") && card.contains("12.0%"), "{card}");
    let sft_only = json!({"stages": {"sft": r["stages"]["sft"].clone()}});
    let card = system_card(&sft_only).join("\n");
    assert!(
        card.contains("5.0% of 20") && card.contains("10.0% of 10") && card.contains("40.0%") && card.contains("no reward model"),
        "{card}"
    );
    let dir = std::env::temp_dir();
    let md = render_md(&dir, &r);
    assert!(md.contains("| figure | BASE | SFT | RM | PPO |") && md.contains("## System card") && md.contains("## run"), "{md}");
    let html = render_html(&dir, &r);
    assert!(html.contains("<th>PPO</th>") && html.contains("Xeon") && html.contains("stage: scaling"));
}
