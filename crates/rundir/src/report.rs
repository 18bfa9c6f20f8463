//! The run's record: `metrics.jsonl` (one JSON line per step or event, each tagged with its
//! stage) and `report.json` (every figure of every stage), re-rendered as the report card
//! (`report.md`, `report.html`) on every update.
//!
//! `report.json` is written only through [`record`], under a typed [`Key`], from a figures
//! struct that derives `Serialize`; it is read back through [`Report`], whose getters
//! deserialize a section into its figures type. Its shape:
//! `{"data": {...}, "stages": {"base": {...}, "sft": {"sample": {...}, ...}, ...},
//!   "compare": {"ppo_vs_sft": {...}}, "run": {...}}`.

use std::io::Write;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::fs::write_atomic;
use crate::layout::RunDir;
use crate::{Error, Result};

/// Where a stage's figures go in `report.json`.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// `data`: what the data stage kept and removed.
    Data,
    /// `run`: configuration, hardware, stage times.
    Run,
    /// `stages.<stage>`: a stage's figures (merged with what is there).
    Stage(&'a str),
    /// `stages.<stage>.sample`: "ask it N times" on one prompt.
    Sample(&'a str),
    /// `compare.<a>_vs_<b>`: a win rate.
    Compare(&'a str, &'a str),
}

impl Key<'_> {
    fn path(&self) -> Vec<String> {
        match *self {
            Key::Data => vec!["data".into()],
            Key::Run => vec!["run".into()],
            Key::Stage(s) => vec!["stages".into(), s.into()],
            Key::Sample(s) => vec!["stages".into(), s.into(), "sample".into()],
            Key::Compare(a, b) => vec!["compare".into(), format!("{a}_vs_{b}")],
        }
    }
}

/// `report.json` as read back.
#[derive(Clone, Debug)]
pub struct Report(Value);

impl Report {
    /// The run's report (an empty one when there is none yet or it does not parse).
    pub fn load(run: &RunDir) -> Report {
        let v = std::fs::read_to_string(run.report_json()).ok().and_then(|t| serde_json::from_str(&t).ok());
        Report(v.unwrap_or_else(|| json!({"stages": {}, "run": {}})))
    }
    /// The section under `key`, untyped (`Value::Null` when absent).
    pub fn section(&self, key: Key) -> &Value {
        key.path().iter().fold(&self.0, |v, part| &v[part.as_str()])
    }
    /// The section under `key` as its figures type; `None` when absent or of another shape.
    pub fn get<T: DeserializeOwned>(&self, key: Key) -> Option<T> {
        let v = self.section(key);
        (!v.is_null()).then(|| serde_json::from_value(v.clone()).ok()).flatten()
    }
    /// The whole report, for the report card.
    pub fn value(&self) -> &Value {
        &self.0
    }
}

/// Merges `figures` (a struct or map) into `report.json` under `key`, then re-renders the
/// report card. Fields already there and not in `figures` are kept.
pub fn record(run: &RunDir, key: Key, figures: &impl Serialize) -> Result<()> {
    let figures =
        serde_json::to_value(figures).map_err(|e| Error::Format { path: run.report_json(), msg: format!("figures of {key:?}: {e}") })?;
    let mut report = Report::load(run).0;
    let mut slot = &mut report;
    for part in key.path() {
        if !slot.get(&part).is_some_and(|v| v.is_object()) {
            slot[&part] = json!({});
        }
        slot = &mut slot[&part];
    }
    if let (Some(dst), Value::Object(src)) = (slot.as_object_mut(), figures) {
        dst.extend(src);
    }
    write_atomic(&run.report_json(), serde_json::to_string_pretty(&report).unwrap().as_bytes())?;
    write_atomic(&run.report_md(), crate::card::render_md(run.root(), &report).as_bytes())?;
    write_atomic(&run.report_html(), crate::card::render_html(run.root(), &report).as_bytes())?;
    Ok(())
}

/// Appends one JSON object as a line of `metrics.jsonl`.
pub fn append_metrics(run: &RunDir, line: &Value) -> Result<()> {
    let path = run.metrics();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
}

/// Rewrites `metrics.jsonl` without the lines of `stage` whose step is beyond `step`
/// (a resumed run logs them again).
pub fn truncate_metrics(run: &RunDir, stage: &str, step: usize) -> Result<()> {
    let path = run.metrics();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => v["stage"] != stage || v["step"].as_u64().is_none_or(|s| s as usize <= step),
            Err(_) => false,
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomic(&path, out.as_bytes())
}

/// Every metrics line of `stage`.
pub fn read_metrics(run: &RunDir, stage: &str) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(run.metrics()) else { return vec![] };
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["stage"] == stage).collect()
}

/// `plots/<file>`: a stage's train loss per step and val loss at each eval, from metrics.jsonl.
pub fn plot_stage_loss(run: &RunDir, stage: &str, title: &str, file: &str) -> Result<()> {
    let m = read_metrics(run, stage);
    let pick = |k: &str| -> Vec<(f64, f64)> { m.iter().filter_map(|v| Some((v["step"].as_f64()?, v[k].as_f64()?))).collect() };
    crate::plot::line_plot(&run.plot(file), title, "step", "nats / token", &[("train", pick("loss")), ("val", pick("val_loss"))])
}

/// The machine, for the report card: CPU model, cores, memory.
pub fn hardware() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({"cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).ok(), "memory_gib": mem_gib,
           "os": std::env::consts::OS, "arch": std::env::consts::ARCH})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_merges_under_typed_keys_and_reads_back() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Figs {
            accuracy: f64,
            n: usize,
        }
        let dir = std::env::temp_dir().join(format!("chatforge-rundir-report-{}", std::process::id()));
        let run = RunDir::new(&dir);
        record(&run, Key::Stage("rm"), &Figs { accuracy: 0.75, n: 4 }).unwrap();
        record(&run, Key::Stage("rm"), &json!({"ece": 0.04})).unwrap();
        record(&run, Key::Sample("sft"), &json!({"n": 10})).unwrap();
        record(&run, Key::Compare("ppo", "sft"), &json!({"win_rate": 0.5})).unwrap();
        let r = Report::load(&run);
        assert_eq!(r.get::<Figs>(Key::Stage("rm")), Some(Figs { accuracy: 0.75, n: 4 }));
        assert_eq!(r.section(Key::Stage("rm"))["ece"], 0.04);
        assert_eq!(r.value()["stages"]["sft"]["sample"]["n"], 10);
        assert_eq!(r.value()["compare"]["ppo_vs_sft"]["win_rate"], 0.5);
        assert!(r.get::<Figs>(Key::Stage("dpo")).is_none());
        assert!(run.report_html().exists() && run.report_md().exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
