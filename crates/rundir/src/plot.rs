//! SVG charts (plotters): lines for curves over steps or sizes, grouped bars for distributions,
//! a histogram on top of the bars. A chart with no finite point writes nothing.

use std::path::Path;

use plotters::prelude::*;

use crate::fs::write_atomic;
use crate::{Error, Result};

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
