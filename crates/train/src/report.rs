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

fn render_md(run: &Path, report: &Value) -> String {
    crate::card::render_md(run, report)
}

fn render_html(run: &Path, report: &Value) -> String {
    crate::card::render_html(run, report)
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

/// Grouped bars as SVG: for each series, a bar of height y at each bin centre x (bins `width`
/// wide); the series share each bin side by side. For distributions (shares of samples).
pub fn bar_plot(path: &Path, title: &str, xlabel: &str, ylabel: &str, width: f64, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    let err = |e: String| Error::Plot { path: path.to_path_buf(), msg: e };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if pts.is_empty() || width.is_nan() || width <= 0.0 {
        return Ok(());
    }
    let x0 = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min) - width / 2.0;
    let x1 = pts.iter().map(|p| p.0).fold(f64::MIN, f64::max) + width / 2.0;
    let y1 = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.08;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc(xlabel).y_desc(ylabel).draw().map_err(|e| err(e.to_string()))?;
        let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        let k = series.len().max(1) as f64;
        for (i, (name, data)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            let w = width * 0.9 / k;
            let bars = data.iter().filter(|(_, y)| *y > 0.0).map(move |&(x, y)| {
                let left = x - width * 0.45 + w * i as f64;
                Rectangle::new([(left, 0.0), (left + w, y)], c.mix(0.75).filled())
            });
            chart
                .draw_series(bars)
                .map_err(|e| err(e.to_string()))?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.mix(0.75).filled()));
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

/// A histogram of `values` in `bins` equal bins, drawn by [`bar_plot`].
pub fn histogram_plot(path: &Path, title: &str, xlabel: &str, values: &[f64], bins: usize) -> Result<()> {
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
    let bars: Vec<(f64, f64)> = counts.iter().enumerate().map(|(i, &c)| (lo + (i as f64 + 0.5) * w, c as f64)).collect();
    bar_plot(path, title, xlabel, "answers", w, &[("answers", bars)])
}
