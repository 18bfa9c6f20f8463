//! A capability predicted from the ladder, as GPT-4's report predicted HumanEval before the big
//! run: the base model's next-token accuracy on the val tokens (`pretrain::next_token_accuracy`,
//! the share of the 32,768 scored tokens whose target is the model's top-1 token).
//!
//! How, in order:
//! 1. Map loss to capability on the ladder: `ln acc = u + v·L`, ordinary least squares over the
//!    fitted ladder points (downstream figures follow the pretraining loss, whatever the size
//!    that reached it; log accuracy is linear in loss over the ladder's range, where accuracy
//!    itself bends up as loss falls).
//! 2. Plug in the target's predicted loss: `acc = e^(u + v·L̂)`.
//! 3. The interval: each pairs-bootstrap resample of the ladder refits (u, v) and is evaluated at
//!    one bootstrap draw of the predicted loss (resample i with the loss law's resample i), so it
//!    holds both the mapping's and the loss law's uncertainty; 5th to 95th percentile.
//!
//! The form was compared (linear, log, logit and linear in e^−L) on two earlier speedruns'
//! targets at their actual losses, so those two runs are its val set; it is fixed here, before
//! any further target trains.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::fit::resample;
use super::{percentile_interval, Estimate, LadderPoint, INTERVAL_LEVEL};

/// `ln acc = u + v·L` fitted to the ladder, and the target's predicted accuracy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapabilityFit {
    pub metric: String,
    pub form: String,
    pub u: Estimate,
    pub v: Estimate,
    /// The target's predicted next-token accuracy, at its predicted loss.
    pub prediction: Estimate,
    pub points: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_interval: Option<bool>,
}

/// Least squares of `ln acc` on loss: (u, v), or `None` without two distinct losses.
fn ols(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), &(l, acc)| (a + l / n, b + acc.ln() / n));
    let sxx: f64 = points.iter().map(|&(l, _)| (l - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|&(l, acc)| (l - mx) * (acc.ln() - my)).sum();
    (sxx > 1e-12).then(|| (my - sxy / sxx * mx, sxy / sxx))
}

/// Fits the mapping to the fitted ladder points that measured an accuracy and predicts the
/// target's accuracy at `loss` (`loss_draws`: the loss law's bootstrap predictions). `None`
/// with fewer than 3 such points (a ladder written before accuracy was measured).
pub fn predict(ladder: &[LadderPoint], loss: f64, loss_draws: &[f64], resamples: usize, seed: u64) -> Option<CapabilityFit> {
    let points: Vec<(f64, f64)> = ladder
        .iter()
        .filter(|p| p.fitted && p.val_accuracy > 0.0 && p.val_accuracy.is_finite())
        .map(|p| (p.val_loss, p.val_accuracy))
        .collect();
    if points.len() < 3 {
        return None;
    }
    let (u, v) = ols(&points)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let distinct = |s: &[(f64, f64)]| s.iter().any(|p| (p.0 - s[0].0).abs() > 1e-9);
    let (mut us, mut vs, mut preds) = (vec![], vec![], vec![]);
    for i in 0..resamples {
        let Some((ru, rv)) = resample(&points, &mut rng, distinct).and_then(|s| ols(&s)) else { continue };
        us.push(ru);
        vs.push(rv);
        let l = loss_draws.get(i % loss_draws.len().max(1)).copied().filter(|x| x.is_finite()).unwrap_or(loss);
        preds.push((ru + rv * l).exp());
    }
    let est = |value: f64, draws: &[f64]| Estimate { value, interval: percentile_interval(draws, INTERVAL_LEVEL) };
    Some(CapabilityFit {
        metric: "next-token accuracy on the val tokens (top-1)".into(),
        form: "ln acc = u + v·L, L the val loss".into(),
        u: est(u, &us),
        v: est(v, &vs),
        prediction: est((u + v * loss).exp(), &preds),
        points: points.len(),
        actual: None,
        relative_error: None,
        within_interval: None,
    })
}

impl CapabilityFit {
    /// Records the target's measured accuracy.
    pub fn set_actual(&mut self, acc: f64) {
        if !acc.is_finite() {
            return;
        }
        let [lo, hi] = self.prediction.interval;
        self.actual = Some(acc);
        self.relative_error = Some((self.prediction.value - acc) / acc);
        self.within_interval = Some(lo <= acc && acc <= hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(l: f64, acc: f64) -> LadderPoint {
        LadderPoint {
            depth: 1,
            params: 1,
            compute_params: 1.0,
            tokens: 1,
            compute: 1.0,
            val_loss: l,
            val_accuracy: acc,
            unigram_loss: 9.0,
            fitted: true,
            wall_s: 0.0,
        }
    }

    #[test]
    fn recovers_an_exact_log_linear_mapping() {
        let ladder: Vec<LadderPoint> = [6.5, 6.0, 5.5, 5.2].iter().map(|&l| point(l, (0.5 - 0.4 * l).exp())).collect();
        let c = predict(&ladder, 4.7, &[4.6, 4.8, 4.7], 50, 1).unwrap();
        assert!((c.u.value - 0.5).abs() < 1e-9 && (c.v.value + 0.4).abs() < 1e-9);
        assert!((c.prediction.value - (0.5f64 - 0.4 * 4.7).exp()).abs() < 1e-9);
        let [lo, hi] = c.prediction.interval;
        assert!(lo < c.prediction.value && c.prediction.value < hi, "the loss draws spread it: {lo} {hi}");
        let mut c = c;
        c.set_actual(0.2);
        assert_eq!(c.within_interval, Some(false));
        assert!(predict(&ladder[..2], 4.7, &[], 10, 1).is_none(), "two points are too few");
        let unmeasured: Vec<LadderPoint> = ladder.iter().map(|p| point(p.val_loss, f64::NAN)).collect();
        assert!(predict(&unmeasured, 4.7, &[], 10, 1).is_none());
    }
}
