//! The run's record: `metrics.jsonl` (one line per step/event), `report.json` (every figure of
//! every stage), rendered to `report.md` and `report.html`, and SVG plots under `plots/`.

use std::io::Write;
use std::path::Path;

use chatforge_core::checkpoint::write_atomic;
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::{Error, Result};

/// Appends one JSON object as a line of `run/metrics.jsonl`.
pub fn append_metrics(run: &Path, record: &Value) -> Result<()> {
    let path = run.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(f, "{record}").map_err(|e| Error::io(&path, e))
}

/// Rewrites `metrics.jsonl` without the lines of `stage` whose step is beyond `step`
/// (a resumed run re-logs them).
pub fn truncate_metrics(run: &Path, stage: &str, step: usize) -> Result<()> {
    let path = run.join("metrics.jsonl");
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
    Ok(write_atomic(&path, out.as_bytes())?)
}

/// Every metrics line of `stage`.
pub fn read_metrics(run: &Path, stage: &str) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else { return vec![] };
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["stage"] == stage).collect()
}

pub fn read_report(run: &Path) -> Value {
    std::fs::read_to_string(run.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({"stages": {}, "run": {}}))
}

/// Merges `figures` into `report.json` under `key` (e.g. "stages.base" or "data") and re-renders
/// `report.md` and `report.html`.
pub fn update_report(run: &Path, key: &str, figures: Value) -> Result<()> {
    let mut report = read_report(run);
    let mut slot = &mut report;
    for part in key.split('.') {
        if !slot.get(part).is_some_and(|v| v.is_object()) {
            slot[part] = json!({});
        }
        slot = &mut slot[part];
    }
    if let (Some(dst), Value::Object(src)) = (slot.as_object_mut(), figures) {
        dst.extend(src);
    }
    write_atomic(&run.join("report.json"), serde_json::to_string_pretty(&report).unwrap().as_bytes())?;
    write_atomic(&run.join("report.md"), render_md(run, &report).as_bytes())?;
    write_atomic(&run.join("report.html"), render_html(run, &report).as_bytes())?;
    Ok(())
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.len() > 120 {
                format!("{}…", &s[..s.char_indices().nth(117).map_or(s.len(), |(i, _)| i)])
            } else {
                s
            }
        }
    }
}

fn sections(report: &Value) -> Vec<(String, &serde_json::Map<String, Value>)> {
    let mut out = vec![];
    if let Some(stages) = report["stages"].as_object() {
        for (name, v) in stages {
            if let Some(o) = v.as_object() {
                out.push((format!("stage: {name}"), o));
            }
        }
    }
    if let Some(o) = report.as_object() {
        for (name, v) in o {
            if name != "stages" {
                if let Some(o) = v.as_object() {
                    out.push((name.clone(), o));
                }
            }
        }
    }
    out
}

fn plots(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run.join("plots"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".svg")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn render_md(run: &Path, report: &Value) -> String {
    let mut s = format!("# chatforge report: {}\n\n", run.display());
    for (name, o) in sections(report) {
        s += &format!("## {name}\n\n| figure | value |\n|---|---|\n");
        for (k, v) in o {
            s += &format!("| {k} | {} |\n", fmt_value(v).replace('|', "\\|"));
        }
        s += "\n";
    }
    for p in plots(run) {
        s += &format!("![{p}](plots/{p})\n\n");
    }
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn render_html(run: &Path, report: &Value) -> String {
    let mut s = String::from(
        "<!doctype html><meta charset=utf-8><title>chatforge report</title>\
         <style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}\
         th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee;margin:1em 0}</style>",
    );
    s += &format!("<h1>chatforge report</h1><p>{}</p>", html_escape(&run.display().to_string()));
    for (name, o) in sections(report) {
        s += &format!("<h2>{}</h2><table><tr><th>figure</th><th>value</th></tr>", html_escape(&name));
        for (k, v) in o {
            s += &format!("<tr><td>{}</td><td>{}</td></tr>", html_escape(k), html_escape(&fmt_value(v)));
        }
        s += "</table>";
    }
    for p in plots(run) {
        s += &format!("<img src=\"plots/{p}\" alt=\"{p}\">");
    }
    s
}

/// A line chart of named (x, y) series as SVG.
pub fn line_plot(path: &Path, title: &str, xlabel: &str, ylabel: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    let err = |e: String| Error::Plot { path: path.to_path_buf(), msg: e };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc(xlabel).y_desc(ylabel).draw().map_err(|e| err(e.to_string()))?;
        let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        for (i, (name, data)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(data.iter().copied(), c.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// `run/plots/<file>`: a stage's train loss per step and val loss at each eval, from metrics.jsonl.
pub fn plot_stage_loss(run: &Path, stage: &str, title: &str, file: &str) -> Result<()> {
    let m = read_metrics(run, stage);
    let pick = |k: &str| -> Vec<(f64, f64)> { m.iter().filter_map(|v| Some((v["step"].as_f64()?, v[k].as_f64()?))).collect() };
    line_plot(&run.join("plots").join(file), title, "step", "nats / token", &[("train", pick("loss")), ("val", pick("val_loss"))])
}

/// A histogram of `values` in `bins` equal bins as SVG, with optional vertical markers (name, x).
pub fn histogram_plot(path: &Path, title: &str, xlabel: &str, values: &[f64], bins: usize, markers: &[(&str, f64)]) -> Result<()> {
    let err = |e: String| Error::Plot { path: path.to_path_buf(), msg: e };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if vals.is_empty() || bins == 0 {
        return Ok(());
    }
    let (lo, hi) = vals.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let w = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in &vals {
        counts[(((v - lo) / w) as usize).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap() as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc(xlabel).y_desc("count").draw().map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.95, c as f64)], BLUE.mix(0.6).filled())
            }))
            .map_err(|e| err(e.to_string()))?;
        let colours = [RED, GREEN, BLACK, MAGENTA];
        for (i, (name, x)) in markers.iter().enumerate() {
            let c = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(vec![(*x, 0.0), (*x, top)], c.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        if !markers.is_empty() {
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}
