//! Scaling-law fits: known parameters come back from noisy synthetic ladders of each law, the
//! bootstrap interval holds the truth, and bad ladders are refused with a clear message.

use chatforge_rundir::RunDir;
use chatforge_train::pretrain::PretrainConfig;
use chatforge_train::scaling::{
    bootstrap_chinchilla, bootstrap_compute_law, check_predicted, check_target, fit_chinchilla, fit_compute_law, grid, parse_ladder,
    percentile_interval, predict, write, ChinchillaLaw, ComputeLaw, LadderPoint, Rung, ScaleConfig, MAX_RUNG_FRACTION,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Multiplicative noise of relative size `sd` (uniform, so its standard deviation is `sd`).
fn noisy(rng: &mut ChaCha8Rng, sd: f64) -> f64 {
    1.0 + sd * 3f64.sqrt() * (2.0 * rng.random::<f64>() - 1.0)
}

fn compute_ladder(truth: &ComputeLaw, sd: f64, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..10).map(|i| 1e11 * 2f64.powf(i as f64 * 0.7)).map(|c| (c, truth.predict(c) * noisy(&mut rng, sd))).collect()
}

fn chinchilla_ladder(truth: &ChinchillaLaw, sd: f64, seed: u64) -> Vec<(f64, f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pts = vec![];
    for n in [3e5, 1e6, 2.3e6, 5e6] {
        for d in [1e5, 2e5, 4e5, 8e5, 1.6e6] {
            pts.push((n, d, truth.predict(n, d) * noisy(&mut rng, sd)));
        }
    }
    pts
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

#[test]
fn the_compute_law_is_recovered_from_noisy_points() {
    let truth = ComputeLaw { a: 900.0, b: -0.2, c: 3.2 };
    let pts = compute_ladder(&truth, 0.002, 1);
    let fit = fit_compute_law(&pts).unwrap();
    assert!(close(fit.b, truth.b, 0.15), "{fit:?}");
    assert!(close(fit.c, truth.c, 0.05), "{fit:?}");
    // The extrapolation 10x beyond the largest point is what the law is for.
    let big = 10.0 * pts.iter().map(|p| p.0).fold(0.0, f64::max);
    assert!(close(fit.predict(big), truth.predict(big), 0.01), "{} vs {}", fit.predict(big), truth.predict(big));
    // Without noise the fit is essentially exact.
    let exact = fit_compute_law(&compute_ladder(&truth, 0.0, 1)).unwrap();
    assert!(close(exact.b, truth.b, 1e-3) && close(exact.c, truth.c, 1e-3) && close(exact.a, truth.a, 1e-2), "{exact:?}");
}

#[test]
fn the_chinchilla_law_is_recovered_from_noisy_points() {
    let truth = ChinchillaLaw { e: 2.5, a: 400.0, alpha: 0.34, b: 900.0, beta: 0.5 };
    let fit = fit_chinchilla(&chinchilla_ladder(&truth, 0.002, 2)).unwrap();
    assert!(close(fit.e, truth.e, 0.1), "{fit:?}");
    assert!(close(fit.alpha, truth.alpha, 0.25) && close(fit.beta, truth.beta, 0.25), "{fit:?}");
    let (n, d) = (2e7, 4e6);
    assert!(close(fit.predict(n, d), truth.predict(n, d), 0.01), "{} vs {}", fit.predict(n, d), truth.predict(n, d));
    let exact = fit_chinchilla(&chinchilla_ladder(&truth, 0.0, 2)).unwrap();
    for (got, want) in [(exact.e, truth.e), (exact.alpha, truth.alpha), (exact.beta, truth.beta), (exact.a, truth.a), (exact.b, truth.b)] {
        assert!(close(got, want, 0.02), "{exact:?}");
    }
    // The compute-optimal split obeys C = 6ND, and the ratio matches the closed form.
    let c = 1e15;
    let (n, d) = fit.optimal_split(c);
    assert!(close(6.0 * n * d, c, 1e-9));
    let (tn, td) = truth.optimal_split(c);
    assert!(close(n / tn, 1.0, 0.5) && close(d / td, 1.0, 0.5), "{n} {d} vs {tn} {td}");
    // Nearby splits of the same compute are worse: it is a minimum.
    for f in [0.8, 1.25] {
        assert!(truth.predict(tn * f, td / f) > truth.predict(tn, td));
    }
    // optimal_tokens inverts it: the tokens for which tn parameters is the optimal size.
    assert!(close(truth.optimal_tokens(tn), td, 1e-9), "{} vs {td}", truth.optimal_tokens(tn));
}

#[test]
fn bootstrap_intervals_contain_the_truth() {
    let truth = ComputeLaw { a: 900.0, b: -0.2, c: 3.2 };
    let pts = compute_ladder(&truth, 0.003, 3);
    let big = 10.0 * pts.iter().map(|p| p.0).fold(0.0, f64::max);
    let bs = bootstrap_compute_law(&pts, 100, 7).unwrap();
    assert!(bs.resamples.len() >= 90, "{}", bs.resamples.len());
    for (name, est, want) in [
        ("b", bs.estimate(|l| l.b), truth.b),
        ("c", bs.estimate(|l| l.c), truth.c),
        ("L", bs.estimate(|l| l.predict(big)), truth.predict(big)),
    ] {
        assert!(est.interval[0] <= want && want <= est.interval[1], "{name}: {want} not in {:?}", est.interval);
        assert!(est.interval[0] < est.interval[1], "{name}: an empty interval {:?}", est.interval);
    }
    let truth = ChinchillaLaw { e: 2.5, a: 400.0, alpha: 0.34, b: 900.0, beta: 0.5 };
    let bs = bootstrap_chinchilla(&chinchilla_ladder(&truth, 0.003, 4), 60, 8).unwrap();
    for (name, est, want) in [("E", bs.estimate(|l| l.e), truth.e), ("L", bs.estimate(|l| l.predict(2e7, 4e6)), truth.predict(2e7, 4e6))] {
        assert!(est.interval[0] <= want && want <= est.interval[1], "{name}: {want} not in {:?}", est.interval);
    }
}

#[test]
fn too_few_points_and_non_finite_losses_are_refused() {
    let truth = ComputeLaw { a: 900.0, b: -0.2, c: 3.2 };
    let pts = compute_ladder(&truth, 0.0, 1);
    let e = fit_compute_law(&pts[..3]).unwrap_err().to_string();
    assert!(e.contains("at least 4") && e.contains("got 3"), "{e}");
    // Repeats of one compute do not count twice.
    let e = fit_compute_law(&[pts[0], pts[0], pts[1], pts[2], pts[2]]).unwrap_err().to_string();
    assert!(e.contains("got 3"), "{e}");
    let mut bad = pts.clone();
    bad[4].1 = f64::NAN;
    let e = fit_compute_law(&bad).unwrap_err().to_string();
    assert!(e.contains("ladder point 5") && e.contains("NaN") && e.contains("finite"), "{e}");
    bad[4].1 = f64::INFINITY;
    assert!(fit_compute_law(&bad).unwrap_err().to_string().contains("inf"));

    let chin = ChinchillaLaw { e: 2.5, a: 400.0, alpha: 0.34, b: 900.0, beta: 0.5 };
    let pts = chinchilla_ladder(&chin, 0.0, 2);
    let e = fit_chinchilla(&pts[..4]).unwrap_err().to_string();
    assert!(e.contains("at least 5"), "{e}");
    // Two model sizes cannot separate E from A/N^α.
    let two: Vec<_> = pts.iter().copied().filter(|p| p.0 < 2e6).collect();
    let e = fit_chinchilla(&two).unwrap_err().to_string();
    assert!(e.contains("3 model sizes") && e.contains("2 sizes"), "{e}");
    let mut bad = pts.clone();
    bad[0].2 = f64::NAN;
    assert!(fit_chinchilla(&bad).unwrap_err().to_string().contains("finite"));
}

fn point(depth: usize, n: f64, tokens: u64, loss: f64) -> LadderPoint {
    LadderPoint {
        depth,
        params: n as usize,
        compute_params: n,
        tokens,
        compute: 6.0 * n * tokens as f64,
        val_loss: loss,
        val_accuracy: f64::NAN,
        unigram_loss: 100.0,
        fitted: loss < 100.0,
        wall_s: 0.0,
    }
}

#[test]
fn predict_fits_both_laws_and_refuses_bad_ladders() {
    let truth = ChinchillaLaw { e: 2.5, a: 400.0, alpha: 0.34, b: 900.0, beta: 0.5 };
    let mut ladder = vec![];
    for (depth, n) in [(1, 3e5), (2, 1e6), (3, 2.3e6)] {
        for d in [1e5, 2e5, 4e5] {
            ladder.push(point(depth, n, d as u64, truth.predict(n, d)));
        }
    }
    let target = point(4, 5e6, 2_000_000, f64::NAN);
    let s = predict(&ladder, &target, 30, 1).unwrap();
    assert_eq!(s.prediction_law, "chinchilla");
    assert!(close(s.predicted_loss, truth.predict(5e6, 2e6), 0.01), "{} vs {}", s.predicted_loss, truth.predict(5e6, 2e6));
    assert!(s.extrapolation_factor > 10.0, "{}", s.extrapolation_factor);
    assert!(s.recommended_tokens_per_param.unwrap() > 0.0);
    let json = serde_json::to_value(&s).unwrap();
    for key in ["fit", "predicted_loss", "prediction_interval", "extrapolation_factor", "recommended_tokens_per_param", "ladder"] {
        assert!(json.get(key).is_some(), "scaling.json lacks {key}");
    }
    assert!(json["fit"]["compute_law"]["b"]["interval"].is_array() && json["fit"]["chinchilla"]["alpha"]["value"].is_number());

    // Five points, two sizes: the compute law only, with the reason Chinchilla was skipped.
    let s = predict(&ladder[..5], &target, 10, 1).unwrap();
    assert_eq!(s.prediction_law, "compute_law");
    assert!(s.fit.chinchilla.is_none() && s.fit.chinchilla_skipped.as_deref().unwrap().contains("3 model sizes"));
    assert!(s.recommended_tokens_per_param.is_none());
    // Five points, three sizes and three budgets: Chinchilla's five parameters would pass
    // through all of them, and every bootstrap resample would be the same five, so no interval.
    let five: Vec<_> = [0, 1, 2, 3, 6].iter().map(|&i| ladder[i].clone()).collect();
    let s = predict(&five, &target, 10, 1).unwrap();
    assert_eq!(s.prediction_law, "compute_law");
    assert!(s.fit.chinchilla_skipped.as_deref().unwrap().contains("one more for its bootstrap interval"), "{:?}", s.fit.chinchilla_skipped);
    assert!(s.prediction_interval[1] > s.prediction_interval[0], "{:?}", s.prediction_interval);
    // Four points of distinct compute: not even the compute law's interval.
    let e = predict(&ladder[..4], &target, 10, 1).unwrap_err().to_string();
    assert!(e.contains("compute law") && e.contains("one more"), "{e}");

    // A target no bigger than the ladder, and a diverged run, are refused.
    let small = point(1, 3e5, 100_000, f64::NAN);
    assert!(predict(&ladder, &small, 10, 1).unwrap_err().to_string().contains("not bigger"));
    let mut bad = ladder.clone();
    bad[2].val_loss = f64::NAN;
    let e = predict(&bad, &target, 10, 1).unwrap_err().to_string();
    assert!(e.contains("ladder point 3") && e.contains("NaN"), "{e}");
}

#[test]
fn ladders_parse_and_bad_specs_are_named() {
    let l = parse_ladder("2:100000, 1:50_000,1:50000").unwrap();
    assert_eq!(l, vec![Rung { depth: 1, tokens: 50000 }, Rung { depth: 2, tokens: 100000 }]);
    assert_eq!(grid(&[1, 2], &[10, 20]).unwrap().len(), 4);
    for bad in ["1-5000", "x:5", "1:", "0:100", ""] {
        assert!(parse_ladder(bad).is_err(), "{bad}");
    }
    assert!(parse_ladder("1-5000").unwrap_err().to_string().contains("depth:tokens"));
    let iv = percentile_interval(&[1.0, 2.0, 3.0, 4.0, 5.0, f64::NAN], 0.5);
    assert_eq!(iv, [2.0, 4.0]);
}

#[test]
fn no_rung_exceeds_a_tenth_of_the_target_and_the_target_waits_for_its_prediction() {
    let vocab = 4096;
    let base = PretrainConfig { grad_accum: 1, ..Default::default() };
    let ladder = parse_ladder("1:600000,1:1200000,1:2400000,2:500000,2:1200000,3:400000").unwrap();
    let mut cfg = ScaleConfig { base, ladder, target: Rung { depth: 4, tokens: 4_505_600 }, bootstrap: 20, lr_sweep: vec![] };
    // Every rung at most MAX_RUNG_FRACTION of the target's compute (the speedrun's own ladders are
    // checked in `chatforge_stages::speedrun`).
    let factor = check_target(&cfg, vocab).unwrap();
    let target_c = cfg.size_of(cfg.target, vocab).3;
    for &r in &cfg.ladder {
        assert!(cfg.size_of(r, vocab).3 <= MAX_RUNG_FRACTION * target_c, "{r:?}");
    }
    assert!(factor >= 1.0 / MAX_RUNG_FRACTION, "{factor}");
    // A rung over the fraction is refused, and says why.
    let mut near = cfg.clone();
    near.ladder.push(Rung { depth: 4, tokens: 500_000 });
    let e = check_target(&near, vocab).unwrap_err().to_string();
    assert!(e.contains("at least 10x") && e.contains("depth 4, 500000 tokens"), "{e}");

    // The target may not train before R/scaling.json holds its prediction.
    let dir = std::env::temp_dir().join(format!("chatforge-scaling-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = RunDir::new(&dir);
    let e = check_predicted(&run, &cfg, vocab).unwrap_err().to_string();
    assert!(e.contains("trains only after its prediction is written"), "{e}");
    let truth = ChinchillaLaw { e: 2.5, a: 400.0, alpha: 0.34, b: 900.0, beta: 0.5 };
    let points: Vec<LadderPoint> = cfg
        .ladder
        .iter()
        .map(|&r| {
            let (_, n, d, _) = cfg.size_of(r, vocab);
            point(r.depth, n, d, truth.predict(n, d as f64))
        })
        .collect();
    let (params, n, d, c) = cfg.size_of(cfg.target, vocab);
    let target = LadderPoint { params, compute: c, ..point(4, n, d, f64::NAN) };
    write(&run, &predict(&points, &target, 10, 1).unwrap()).unwrap();
    check_predicted(&run, &cfg, vocab).unwrap();
    // A prediction for another target does not count.
    cfg.target.tokens *= 2;
    assert!(check_predicted(&run, &cfg, vocab).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
