use chatforge_core::backend::Op;
use chatforge_core::cpu::{bf16, matmul};
use std::time::Instant;
fn main() {
    let shapes = [
        (2048, 256, 256, Op::N, Op::T),
        (2048, 704, 256, Op::N, Op::T),
        (2048, 256, 704, Op::N, Op::T),
        (2048, 4096, 256, Op::N, Op::T),
        (256, 256, 2048, Op::T, Op::N),
        (704, 256, 2048, Op::T, Op::N),
        (4096, 256, 2048, Op::T, Op::N),
        (2048, 256, 704, Op::N, Op::N),
        (2048, 256, 4096, Op::N, Op::N),
        (1024, 1024, 1024, Op::N, Op::N),
    ];
    for &(m, n, k, ta, tb) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 / 1000.0).collect();
        let mut c = vec![0.0f32; m * n];
        let f = 2.0 * (m * n * k) as f64;
        let mut r = [0.0f64; 2];
        for (w, rr) in r.iter_mut().enumerate() {
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t = Instant::now();
                if w == 0 {
                    matmul(&mut c, &a, ta, &b, tb, m, n, k, false)
                } else {
                    bf16::matmul(&mut c, &a, ta, &b, tb, m, n, k, false)
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            *rr = f / best / 1e9;
        }
        println!("{m}x{n}x{k} {ta:?}{tb:?}: f32 {:.0} GF/s, bf16 {:.0} GF/s, x{:.2}", r[0], r[1], r[1] / r[0]);
    }
}
