//! The prediction and its record: both laws fitted to the ladder with intervals, the target's
//! predicted loss (Chinchilla's when it could be fitted), the measured loss once the target ran,
//! and [`write`], which writes `scaling.json`, the report's `stages.scaling` and the plot.

use chatforge_rundir::fs::write_atomic;
use chatforge_rundir::report::{self, Key};
use chatforge_rundir::RunDir;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    bootstrap_chinchilla, bootstrap_compute_law, capability, plot, CapabilityFit, ChinchillaLaw, Estimate, LadderPoint, LrSweep,
    HUBER_DELTA, INTERVAL_LEVEL,
};
use crate::{Error, Result};

/// Parameters of the compute law with intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeLawFit {
    pub form: String,
    pub a: Estimate,
    pub b: Estimate,
    pub c: Estimate,
    /// The target's predicted loss under this law.
    pub prediction: Estimate,
}

/// Parameters of the Chinchilla law with intervals (N in compute parameters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChinchillaFit {
    pub form: String,
    #[serde(rename = "E")]
    pub e: Estimate,
    #[serde(rename = "A")]
    pub a: Estimate,
    pub alpha: Estimate,
    #[serde(rename = "B")]
    pub b: Estimate,
    pub beta: Estimate,
    pub prediction: Estimate,
    /// Compute-optimal tokens per parameter at the target's compute.
    pub tokens_per_param: Estimate,
    /// The compute-optimal (N, D) at the target's compute.
    pub optimal_params: f64,
    pub optimal_tokens: f64,
}

impl ChinchillaFit {
    /// The law at the point estimates.
    pub fn law(&self) -> ChinchillaLaw {
        ChinchillaLaw { e: self.e.value, a: self.a.value, alpha: self.alpha.value, b: self.b.value, beta: self.beta.value }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fits {
    pub compute_law: ComputeLawFit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chinchilla: Option<ChinchillaFit>,
    /// Why the Chinchilla law was not fitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chinchilla_skipped: Option<String>,
    pub huber_delta: f64,
    pub interval_level: f64,
    pub bootstrap_resamples: usize,
}

/// `R/scaling.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingReport {
    pub ladder: Vec<LadderPoint>,
    pub target: LadderPoint,
    pub fit: Fits,
    pub predicted_loss: f64,
    pub prediction_interval: [f64; 2],
    /// Which law `predicted_loss` comes from.
    pub prediction_law: String,
    pub extrapolation_factor: f64,
    pub recommended_tokens_per_param: Option<f64>,
    pub recommended_tokens_per_param_interval: Option<[f64; 2]>,
    /// The target's next-token accuracy predicted from the ladder (`capability.rs`), when the
    /// ladder measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<CapabilityFit>,
    /// The base learning rate the ladder and the target train with (before `lr_for_depth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_lr: Option<f32>,
    /// The sweep that chose it, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_sweep: Option<LrSweep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_interval: Option<bool>,
}

/// Fits both laws to the ladder and predicts the target (its `val_loss` is NaN until it ran).
/// The prediction is the Chinchilla law's (it knows the target's N and D) when that law could
/// be fitted, else the compute law's.
pub fn predict(ladder: &[LadderPoint], target: &LadderPoint, resamples: usize, seed: u64) -> Result<ScalingReport> {
    if let Some((i, p)) = ladder.iter().enumerate().find(|(_, p)| !p.val_loss.is_finite()) {
        return Err(Error::Input(format!(
            "ladder point {} (depth {}, {} tokens): the val loss is {}, not a finite number",
            i + 1,
            p.depth,
            p.tokens,
            p.val_loss
        )));
    }
    let largest = ladder.iter().map(|p| p.compute).fold(0.0, f64::max);
    let used: Vec<&LadderPoint> = ladder.iter().filter(|p| p.fitted).collect();
    if target.compute <= largest {
        return Err(Error::Input(format!(
            "the target ({:.3e} FLOPs) is not bigger than the ladder's largest run ({largest:.3e} FLOPs)",
            target.compute
        )));
    }
    let left_out = |e: Error| match e {
        Error::Input(m) if used.len() < ladder.len() => Error::Input(format!(
            "{m}; {} of the {} ladder runs were left out because their loss is not below the unigram loss yet (give them more tokens)",
            ladder.len() - used.len(),
            ladder.len()
        )),
        e => e,
    };
    let cl = bootstrap_compute_law(&used.iter().map(|p| (p.compute, p.val_loss)).collect::<Vec<_>>(), resamples, seed).map_err(left_out)?;
    let compute_law = ComputeLawFit {
        form: "L(C) = a·C^b + c, C in FLOPs".into(),
        a: cl.estimate(|l| l.a),
        b: cl.estimate(|l| l.b),
        c: cl.estimate(|l| l.c),
        prediction: cl.estimate(|l| l.predict(target.compute)),
    };
    let chin_points: Vec<(f64, f64, f64)> = used.iter().map(|p| (p.compute_params, p.tokens as f64, p.val_loss)).collect();
    let mut chin_boot = None;
    let (chinchilla, skipped) = match bootstrap_chinchilla(&chin_points, resamples, seed ^ 0xC41).map_err(left_out) {
        Ok(ch) => {
            let (n_opt, d_opt) = ch.fit.optimal_split(target.compute);
            let fit = ChinchillaFit {
                form: "L(N, D) = E + A/N^alpha + B/D^beta, N = train FLOPs per token / 6, D in tokens".into(),
                e: ch.estimate(|l| l.e),
                a: ch.estimate(|l| l.a),
                alpha: ch.estimate(|l| l.alpha),
                b: ch.estimate(|l| l.b),
                beta: ch.estimate(|l| l.beta),
                prediction: ch.estimate(|l| l.predict(target.compute_params, target.tokens as f64)),
                tokens_per_param: ch.estimate(|l| l.tokens_per_param(target.compute)),
                optimal_params: n_opt,
                optimal_tokens: d_opt,
            };
            chin_boot = Some(ch);
            (Some(fit), None)
        }
        Err(Error::Input(why)) => (None, Some(format!("Chinchilla law not fitted: {why}"))),
        Err(e) => return Err(e),
    };
    let (law, pred) = match &chinchilla {
        Some(ch) => ("chinchilla", ch.prediction),
        None => ("compute_law", compute_law.prediction),
    };
    let loss_draws: Vec<f64> = match &chin_boot {
        Some(ch) => ch.resamples.iter().map(|l| l.predict(target.compute_params, target.tokens as f64)).collect(),
        None => cl.resamples.iter().map(|l| l.predict(target.compute)).collect(),
    };
    let capability = capability::predict(ladder, pred.value, &loss_draws, resamples, seed ^ 0xACC);
    Ok(ScalingReport {
        ladder: ladder.to_vec(),
        target: target.clone(),
        predicted_loss: pred.value,
        prediction_interval: pred.interval,
        prediction_law: law.into(),
        extrapolation_factor: target.compute / largest,
        recommended_tokens_per_param: chinchilla.as_ref().map(|c| c.tokens_per_param.value),
        recommended_tokens_per_param_interval: chinchilla.as_ref().map(|c| c.tokens_per_param.interval),
        capability,
        base_lr: None,
        lr_sweep: None,
        fit: Fits {
            compute_law,
            chinchilla,
            chinchilla_skipped: skipped,
            huber_delta: HUBER_DELTA,
            interval_level: INTERVAL_LEVEL,
            bootstrap_resamples: cl.resamples.len(),
        },
        actual_loss: None,
        relative_error: None,
        within_interval: None,
    })
}

impl ScalingReport {
    /// Records the target's measured loss.
    pub fn set_actual(&mut self, target: &LadderPoint) {
        self.target = target.clone();
        self.actual_loss = Some(target.val_loss);
        self.relative_error = Some((self.predicted_loss - target.val_loss) / target.val_loss);
        self.within_interval = Some(self.prediction_interval[0] <= target.val_loss && target.val_loss <= self.prediction_interval[1]);
        if let Some(c) = self.capability.as_mut() {
            c.set_actual(target.val_accuracy);
        }
    }
}

/// Writes `R/scaling.json`, `stages.scaling` of the report, and `R/plots/scaling.svg`.
pub fn write(run: &RunDir, s: &ScalingReport) -> Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(|e| Error::Input(format!("scaling.json: {e}")))?;
    write_atomic(&run.scaling_json(), text.as_bytes())?;
    plot(&run.plot("scaling.svg"), s)?;
    let cl = &s.fit.compute_law;
    let mut fig = json!({
        "ladder_points": s.ladder.len(),
        "target_depth": s.target.depth,
        "target_tokens": s.target.tokens,
        "target_compute": s.target.compute,
        "extrapolation_factor": s.extrapolation_factor,
        "predicted_loss": s.predicted_loss,
        "prediction_interval": s.prediction_interval,
        "prediction_law": s.prediction_law,
        "compute_law": format!("L(C) = {:.4e}·C^{:.4} + {:.4}", cl.a.value, cl.b.value, cl.c.value),
        "compute_law_prediction": cl.prediction.value,
        "recommended_tokens_per_param": s.recommended_tokens_per_param,
    });
    if let Some(ch) = &s.fit.chinchilla {
        fig["chinchilla_law"] = json!(format!(
            "L(N, D) = {:.4} + {:.4e}/N^{:.4} + {:.4e}/D^{:.4}",
            ch.e.value, ch.a.value, ch.alpha.value, ch.b.value, ch.beta.value
        ));
        fig["chinchilla_prediction"] = json!(ch.prediction.value);
    }
    if let Some(why) = &s.fit.chinchilla_skipped {
        fig["chinchilla_law"] = json!(why);
    }
    if let Some(w) = &s.lr_sweep {
        fig["lr_sweep"] =
            json!({"depth": w.rung.depth, "tokens": w.rung.tokens, "lrs": w.lrs, "val_losses": w.val_losses, "chosen": w.chosen});
    }
    if let Some(c) = &s.capability {
        fig["capability"] = json!({
            "metric": c.metric, "predicted": c.prediction.value, "interval": c.prediction.interval,
            "actual": c.actual, "relative_error": c.relative_error, "within_interval": c.within_interval,
        });
    }
    if let (Some(a), Some(e)) = (s.actual_loss, s.relative_error) {
        fig["actual_loss"] = json!(a);
        fig["relative_error"] = json!(e);
    }
    Ok(report::record(run, Key::Stage("scaling"), &fig)?)
}
