//! `plots/scaling.svg`: the ladder, the fitted laws, the prediction with its interval and the
//! actual point once the target ran, on a log compute axis.

use std::path::Path;

use chatforge_rundir::fs::write_atomic;
use plotters::prelude::*;

use super::{ChinchillaLaw, ComputeLaw, ScalingReport, INTERVAL_LEVEL};
use crate::{Error, Result};

/// Ladder points, the fitted compute law, the Chinchilla curve at the target's size, the
/// prediction with its interval and (once run) the actual point; compute on a log axis.
pub fn plot(path: &Path, s: &ScalingReport) -> Result<()> {
    let err = |e: String| Error::File(chatforge_rundir::Error::Plot { path: path.to_path_buf(), msg: e });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let c_lo = s.ladder.iter().map(|p| p.compute).fold(f64::MAX, f64::min) / 1.5;
    let c_hi = s.target.compute * 1.5;
    let xs: Vec<f64> = (0..=120).map(|i| c_lo * (c_hi / c_lo).powf(i as f64 / 120.0)).collect();
    let cl = s.fit.compute_law.clone();
    let law = ComputeLaw { a: cl.a.value, b: cl.b.value, c: cl.c.value };
    let curve: Vec<(f64, f64)> = xs.iter().map(|&c| (c, law.predict(c))).collect();
    let chin_curve: Vec<(f64, f64)> = s
        .fit
        .chinchilla
        .as_ref()
        .map(|ch| {
            let l = ChinchillaLaw { e: ch.e.value, a: ch.a.value, alpha: ch.alpha.value, b: ch.b.value, beta: ch.beta.value };
            let n = s.target.compute_params;
            xs.iter().map(|&c| (c, l.predict(n, c / (6.0 * n)))).filter(|p| p.1.is_finite()).collect()
        })
        .unwrap_or_default();
    let mut ys: Vec<f64> = s.ladder.iter().map(|p| p.val_loss).collect();
    ys.extend(s.prediction_interval.iter().filter(|v| v.is_finite()));
    ys.extend(s.actual_loss);
    ys.push(law.predict(c_hi));
    let (y0, y1) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = ((y1 - y0) * 0.08).max(1e-2);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let clip = |v: &[(f64, f64)]| -> Vec<(f64, f64)> { v.iter().copied().filter(|p| p.1 >= y0 && p.1 <= y1).collect() };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("scaling: predicted {:.4}, extrapolation {:.1}x", s.predicted_loss, s.extrapolation_factor),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((c_lo..c_hi).log_scale(), y0..y1)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("training compute (FLOPs)")
            .y_desc("final val loss (nats / token)")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(clip(&curve), RED.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label("L(C) = a·C^b + c")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        if !chin_curve.is_empty() {
            chart
                .draw_series(LineSeries::new(clip(&chin_curve), MAGENTA.stroke_width(1)))
                .map_err(|e| err(e.to_string()))?
                .label(format!("Chinchilla L(N, C/6N) at the target's N = {:.2e}", s.target.compute_params))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA.stroke_width(1)));
        }
        chart
            .draw_series(s.ladder.iter().filter(|p| p.fitted).map(|p| Circle::new((p.compute, p.val_loss), 4, BLUE.filled())))
            .map_err(|e| err(e.to_string()))?
            .label("ladder runs")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
        if s.ladder.iter().any(|p| !p.fitted) {
            chart
                .draw_series(s.ladder.iter().filter(|p| !p.fitted).map(|p| Circle::new((p.compute, p.val_loss), 4, BLUE.stroke_width(1))))
                .map_err(|e| err(e.to_string()))?
                .label("ladder runs not below the unigram loss (not fitted)")
                .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.stroke_width(1)));
        }
        let tc = s.target.compute;
        let [lo, hi] = s.prediction_interval;
        if lo.is_finite() && hi.is_finite() {
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(tc, lo.max(y0)), (tc, hi.min(y1))], GREEN.stroke_width(3))))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .draw_series(std::iter::once(Circle::new((tc, s.predicted_loss), 6, GREEN.filled())))
            .map_err(|e| err(e.to_string()))?
            .label(format!("prediction ({}) with {:.0}% interval", s.prediction_law, 100.0 * INTERVAL_LEVEL))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, GREEN.filled()));
        if let Some(a) = s.actual_loss {
            chart
                .draw_series(std::iter::once(Cross::new((tc, a), 7, BLACK.stroke_width(2))))
                .map_err(|e| err(e.to_string()))?
                .label(format!("actual {a:.4}"))
                .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}
