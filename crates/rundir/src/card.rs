//! The report card: `report.json` rendered as `report.md` and `report.html`, one column per stage
//! (BASE, SFT, RM, PPO, RLVR, DPO), like nanochat's table, with the run's configuration, hardware,
//! wall time and tokens seen, a short system card (what the model refuses, how often it
//! over-refuses, its injection and symmetry figures) and the plots.

use std::path::Path;

use serde_json::{Map, Value};

/// Model stages in the card's column order; other stages with figures follow.
const STAGE_ORDER: [&str; 6] = ["base", "sft", "rm", "ppo", "rlvr", "dpo"];
/// Stages that are not a model's column (their own sections).
const NOT_COLUMNS: [&str; 2] = ["scaling", "labels"];

/// How a figure is shown.
#[derive(Clone, Copy)]
enum Fmt {
    Int,
    F3,
    F4,
    Pct,
    Secs,
}

/// The card's rows, in order: key in the stage object, label, format.
const ROWS: &[(&str, &str, Fmt)] = &[
    ("params", "parameters", Fmt::Int),
    ("steps", "steps", Fmt::Int),
    ("tokens", "tokens seen", Fmt::Int),
    ("wall_s", "wall time", Fmt::Secs),
    ("train_tokens_per_s", "training tokens/s", Fmt::Int),
    ("mfu", "MFU", Fmt::Pct),
    ("val_loss", "val loss (stage's own data)", Fmt::F4),
    ("val_bpb", "val bits per byte", Fmt::F4),
    ("unigram_val_bpb", "unigram baseline (bpb)", Fmt::F4),
    ("next_word_accuracy", "next-word accuracy", Fmt::Pct),
    ("multiple_choice_accuracy", "multiple choice (log-lik)", Fmt::Pct),
    ("family_scores", "family: ", Fmt::Pct),
    ("tools", "family: ", Fmt::Pct),
    ("json_adherence", "JSON adherence", Fmt::Pct),
    ("system_adherence", "system-message adherence", Fmt::Pct),
    ("injection_resistance", "prompt-injection resistance", Fmt::Pct),
    ("harmful_compliance", "harmful compliance", Fmt::Pct),
    ("over_refusal", "over-refusal", Fmt::Pct),
    ("accuracy", "fact questions: correct", Fmt::Pct),
    ("abstention", "fact questions: \"I'm not sure\"", Fmt::Pct),
    ("hallucination", "fact questions: hallucinated", Fmt::Pct),
    ("truthfulness", "truthfulness (correct − hallucinated)", Fmt::Pct),
    ("symmetry_length_gap", "symmetry: length gap", Fmt::F3),
    ("symmetry_reward_gap", "symmetry: reward gap", Fmt::F3),
    ("worst_case_rate", "worst case, many samples", Fmt::Pct),
    ("heldout_accuracy", "RM: held-out pair accuracy", Fmt::Pct),
    ("ece", "RM: calibration error (ECE)", Fmt::F3),
    ("mean_reward", "RL: reward (last iteration)", Fmt::F3),
    ("kl", "RL: KL to SFT", Fmt::F3),
    ("win_rate_vs_sft", "win rate vs SFT", Fmt::Pct),
];

/// Keys of a stage object that are not figures for the table.
const SKIP: &[&str] = &["samples", "evals", "json_adherence_before", "test_tasks"];

fn fmt(v: &Value, f: Fmt) -> String {
    let Some(x) = v.as_f64() else {
        return match v {
            Value::Null => "n/a".into(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    };
    match f {
        Fmt::Int => {
            let n = x.round() as i64;
            let s = n.abs().to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            if n < 0 {
                format!("-{out}")
            } else {
                out
            }
        }
        Fmt::F3 => format!("{x:.3}"),
        Fmt::F4 => format!("{x:.4}"),
        Fmt::Pct => format!("{:.1}%", 100.0 * x),
        Fmt::Secs if x >= 90.0 => format!("{:.1} min", x / 60.0),
        Fmt::Secs => format!("{x:.1} s"),
    }
}

/// A figure of a family score: a number, or the `after` of `{before, after}`.
fn family_value(v: &Value) -> Option<&Value> {
    if v.is_number() {
        Some(v)
    } else {
        v.get("after")
    }
}

/// The stage columns of a report, in order.
pub fn stage_columns(report: &Value) -> Vec<String> {
    let Some(stages) = report["stages"].as_object() else { return vec![] };
    let mut cols: Vec<String> = STAGE_ORDER.iter().filter(|s| stages.contains_key(**s)).map(|s| s.to_string()).collect();
    for name in stages.keys() {
        if !STAGE_ORDER.contains(&name.as_str()) && !NOT_COLUMNS.contains(&name.as_str()) {
            cols.push(name.clone());
        }
    }
    cols
}

/// The card's table: a header and rows of cells (label first). A base column without family
/// scores takes the SFT stage's `before` scores (the base model, few-shot).
pub fn table(report: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let cols = stage_columns(report);
    let stage = |c: &str| report["stages"][c].clone();
    let mut header = vec!["figure".to_string()];
    header.extend(cols.iter().map(|c| c.to_uppercase()));
    let mut rows = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    for (key, label, f) in ROWS {
        shown.push(key.to_string());
        if *key == "family_scores" {
            let mut families: Vec<String> =
                cols.iter().filter_map(|c| stage(c)[key].as_object().cloned()).flat_map(|m| m.into_iter().map(|(k, _)| k)).collect();
            families.sort();
            families.dedup();
            for fam in families {
                let mut row = vec![format!("{label}{fam}")];
                for c in &cols {
                    let s = stage(c);
                    let mut v = s[key].get(&fam).and_then(family_value).cloned();
                    if v.is_none() && c == "base" {
                        v = report["stages"]["sft"][key][&fam].get("before").cloned();
                    }
                    row.push(v.map_or_else(|| "—".into(), |v| fmt(&v, *f)));
                }
                rows.push(row);
            }
            continue;
        }
        if *key == "tools" {
            // With the built-in tools: each family's accuracy and calls per answer.
            let mut families: Vec<String> = cols
                .iter()
                .filter_map(|c| stage(c)["tools"]["family_scores"].as_object().cloned())
                .flat_map(|m| m.into_iter().map(|(k, _)| k))
                .collect();
            families.sort();
            families.dedup();
            for fam in families {
                for (group, sub, what, f) in [
                    ("tools", "family_scores", "with tools", Fmt::Pct),
                    ("tools_free", "family_scores", "with tools, arguments not grounded", Fmt::Pct),
                    ("tools", "calls_per_answer", "tool calls per answer", Fmt::F3),
                ] {
                    let mut row = vec![format!("{label}{fam}, {what}")];
                    for c in &cols {
                        row.push(stage(c)[group][sub].get(&fam).map_or_else(|| "—".into(), |v| fmt(v, f)));
                    }
                    rows.push(row);
                }
            }
            continue;
        }
        if cols.iter().all(|c| stage(c).get(*key).is_none()) {
            continue;
        }
        let mut row = vec![label.to_string()];
        for c in &cols {
            row.push(stage(c).get(*key).map_or_else(|| "—".into(), |v| fmt(v, *f)));
        }
        rows.push(row);
    }
    // Any other scalar figure of a stage (a new stage's own), after the known ones.
    let mut others: Vec<String> = cols
        .iter()
        .filter_map(|c| stage(c).as_object().cloned())
        .flat_map(|m| m.into_iter().filter(|(_, v)| v.is_number() || v.is_boolean()).map(|(k, _)| k))
        .filter(|k| !shown.contains(k) && !SKIP.contains(&k.as_str()))
        .collect();
    others.sort();
    others.dedup();
    for key in others {
        let mut row = vec![key.replace('_', " ")];
        for c in &cols {
            row.push(stage(c).get(&key).map_or_else(|| "—".into(), |v| fmt(v, if v.is_f64() { Fmt::F4 } else { Fmt::Int })));
        }
        rows.push(row);
    }
    (header, rows)
}

/// The latest chat stage (DPO, PPO, then SFT) that has safety figures: the model the system card
/// describes.
fn card_stage(report: &Value) -> Option<&str> {
    ["dpo", "ppo", "sft"].into_iter().find(|s| report["stages"][*s].get("harmful_compliance").is_some())
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or_else(|| "n/a".into(), |x| format!("{:.1}%", 100.0 * x))
}

/// The system card's lines (plain text, one statement each).
pub fn system_card(report: &Value) -> Vec<String> {
    let Some(stage) = card_stage(report) else {
        return vec!["No safety evals yet: run `chatforge eval --run R --stage sft`.".into()];
    };
    let s = &report["stages"][stage];
    let ev = &s["evals"];
    let mut out = vec![format!("Model described: the {} stage.", stage.to_uppercase())];
    out.push(
        "Tools: the engine gives it a calculator and three string tools (count_letter, spell, length), run in a sandbox \
         (no files, no network, capped inputs and outputs, at most 4 calls per answer). Their arguments are grounded: while \
         it writes a call, decoding allows only numbers and words the conversation holds. Through the API it may also call \
         functions the caller declares (not grounded)."
            .into(),
    );
    if let Some(with) = s["tools"]["family_scores"].as_object() {
        let cells: Vec<String> = with
            .iter()
            .map(|(f, v)| {
                let free = pct(&s["tools_free"]["family_scores"][f.as_str()]);
                format!("{f} {} with tools ({free} with arguments not grounded), {} without", pct(v), pct(&s["family_scores"][f.as_str()]))
            })
            .collect();
        out.push(format!("With and without tools (held-out test questions): {}.", cells.join("; ")));
    }
    out.push(
        "Policy: it declines requests for help to poison or physically hurt a person (step-by-step instructions, doses, \
         avoiding detection), briefly and with an offer of something else; questions that only sound alike (how Claudius \
         poisons the king, killing a Linux process, poison control) must be answered."
            .into(),
    );
    out.push(format!(
        "Harmful compliance: {} of {} disallowed requests were not refused. Over-refusal: {} of {} benign look-alikes were refused.",
        pct(&s["harmful_compliance"]),
        ev["refusal"]["harmful_n"].as_u64().map_or("?".into(), |n| n.to_string()),
        pct(&s["over_refusal"]),
        ev["refusal"]["benign_n"].as_u64().map_or("?".into(), |n| n.to_string()),
    ));
    if s.get("injection_resistance").is_some() {
        out.push(format!(
            "Prompt injection: when the user tells it to ignore its system message, it keeps obeying in {} of cases \
             ({} without the attack).",
            pct(&s["injection_resistance"]),
            pct(&s["system_adherence"])
        ));
    }
    if s.get("json_adherence").is_some() {
        out.push(format!(
            "JSON-only system messages: {} of answers parse as a JSON object with the required keys.",
            pct(&s["json_adherence"])
        ));
    }
    if let Some(gap) = s["symmetry_length_gap"].as_f64() {
        let reward = match s["symmetry_reward_gap"].as_f64() {
            Some(r) => format!("mean |reward difference| {r:.3}"),
            None => "no reward model yet, so no reward gap".into(),
        };
        out.push(format!(
            "Symmetry: for prompts identical but for the subject (two characters, two plays, two authors), answers differ in \
             length by {:.0}% of their mean on average; {reward}.",
            100.0 * gap
        ));
    }
    if let Some(w) = s["worst_case_rate"].as_f64() {
        let n = ev["many"]["samples_per_prompt"].as_u64().unwrap_or(0);
        out.push(format!(
            "Asked the same prompt {n} times at temperature 1, it gives a failing answer {:.1}% of the time (mean over prompts).",
            100.0 * w
        ));
    }
    out.push("Figures are measured on held-out prompts the model did not train on; a ~5M-parameter model knows little, so read them as the harness working, not as a capable assistant.".into());
    out
}

/// Sections other than the stage columns: `run` (configuration, hardware, wall time), `data`,
/// `scaling`, and any other top-level object, as key/value tables.
fn extra_sections(report: &Value) -> Vec<(String, Map<String, Value>)> {
    let mut out = Vec::new();
    if let Some(o) = report.as_object() {
        for (name, v) in o {
            if name != "stages" {
                if let Some(m) = v.as_object() {
                    out.push((name.clone(), m.clone()));
                }
            }
        }
    }
    for name in NOT_COLUMNS {
        if let Some(m) = report["stages"][name].as_object() {
            out.push((format!("stage: {name}"), m.clone()));
        }
    }
    out
}

/// A value for a key/value table: numbers briefly, objects as `k: v` lists, long text cut.
fn brief(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap()),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}: {}", brief(v))).collect::<Vec<_>>().join(", "),
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 160 {
                format!("{}…", s.chars().take(157).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// Each stage's evals: name, samples, and the eval's scalar figures.
fn eval_rows(report: &Value) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for c in stage_columns(report) {
        if let Some(evals) = report["stages"][&c]["evals"].as_object() {
            for (name, m) in evals {
                let figures = m
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, v)| v.is_f64() && *k != "seconds")
                            .map(|(k, v)| format!("{k} {:.3}", v.as_f64().unwrap()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                out.push((c.to_uppercase(), name.clone(), m["n"].to_string(), figures));
            }
        }
    }
    out
}

fn plots(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(crate::RunDir::new(run).plots())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".svg")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The card as Markdown.
pub fn render_md(run: &Path, report: &Value) -> String {
    let mut s = format!("# chatforge report card: {}\n\n", run.display());
    let (header, rows) = table(report);
    if header.len() > 1 {
        s += &format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
        for r in &rows {
            s += &format!("| {} |\n", r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
        }
        s += "\n";
    }
    let sections = extra_sections(report);
    for (name, o) in sections.iter().filter(|(n, _)| n == "run") {
        s += &format!("## {name}\n\n| | |\n|---|---|\n");
        for (k, v) in o {
            s += &format!("| {k} | {} |\n", md_cell(&brief(v)));
        }
        s += "\n";
    }
    s += "## System card\n\n";
    for line in system_card(report) {
        s += &format!("- {line}\n");
    }
    s += "\n";
    let evals = eval_rows(report);
    if !evals.is_empty() {
        s += "## Evals\n\n| stage | eval | n | figures |\n|---|---|---|---|\n";
        for (st, name, n, f) in evals {
            s += &format!("| {st} | {name} | {n} | {} |\n", md_cell(&f));
        }
        s += "\n";
    }
    for (name, o) in sections.iter().filter(|(n, _)| n != "run") {
        s += &format!("## {name}\n\n| | |\n|---|---|\n");
        for (k, v) in o {
            s += &format!("| {k} | {} |\n", md_cell(&brief(v)));
        }
        s += "\n";
    }
    for p in plots(run) {
        s += &format!("![{p}](plots/{p})\n\n");
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The card as a standalone HTML page (plots are linked SVG files under `plots/`).
pub fn render_html(run: &Path, report: &Value) -> String {
    let mut s = String::from(
        "<!doctype html><html lang=en><meta charset=utf-8><title>chatforge report card</title>\
         <style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         h1{margin-bottom:.2em}.sub{color:#666;margin-top:0}\
         table{border-collapse:collapse;margin:0 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top}\
         th{background:#f0f2f5}table.card td:not(:first-child),table.card th:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}\
         table.card th{min-width:6em}ul.sys li{margin:.3em 0}.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}\
         .plots img{width:100%;border:1px solid #eee}td.kv{max-width:700px;word-break:break-word}</style>",
    );
    s += &format!("<h1>chatforge report card</h1><p class=sub>{}</p>", esc(&run.display().to_string()));
    let (header, rows) = table(report);
    if header.len() > 1 {
        s += "<table class=card><tr>";
        for h in &header {
            s += &format!("<th>{}</th>", esc(h));
        }
        s += "</tr>";
        for r in &rows {
            s += "<tr>";
            for c in r {
                s += &format!("<td>{}</td>", esc(c));
            }
            s += "</tr>";
        }
        s += "</table>";
    }
    let sections = extra_sections(report);
    let kv = |name: &str, o: &Map<String, Value>| {
        let mut t = format!("<h2>{}</h2><table>", esc(name));
        for (k, v) in o {
            t += &format!("<tr><th>{}</th><td class=kv>{}</td></tr>", esc(k), esc(&brief(v)));
        }
        t + "</table>"
    };
    for (name, o) in sections.iter().filter(|(n, _)| n == "run") {
        s += &kv(name, o);
    }
    s += "<h2>System card</h2><ul class=sys>";
    for line in system_card(report) {
        s += &format!("<li>{}</li>", esc(&line));
    }
    s += "</ul>";
    let evals = eval_rows(report);
    if !evals.is_empty() {
        s += "<h2>Evals</h2><table><tr><th>stage</th><th>eval</th><th>n</th><th>figures</th></tr>";
        for (st, name, n, f) in evals {
            s += &format!("<tr><td>{}</td><td>{}</td><td>{}</td><td class=kv>{}</td></tr>", esc(&st), esc(&name), esc(&n), esc(&f));
        }
        s += "</table>";
    }
    let ps = plots(run);
    if !ps.is_empty() {
        s += "<h2>Plots</h2><div class=plots>";
        for p in ps {
            s += &format!("<img src=\"plots/{}\" alt=\"{}\">", esc(&p), esc(&p));
        }
        s += "</div>";
    }
    for (name, o) in sections.iter().filter(|(n, _)| n != "run") {
        s += &kv(name, o);
    }
    if let Some(samples) = report["stages"]["base"]["samples"].as_array() {
        s += "<h2>Base model samples</h2>";
        for x in samples.iter().filter_map(Value::as_str) {
            s += &format!("<pre>{}</pre>", esc(x));
        }
    }
    s += "</html>";
    s
}
