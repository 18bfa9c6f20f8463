//! The single-stream decode step's matmuls alone: the skinny kernel at one activation row over
//! the speedrun model's weights (4 layers of q, k, v, o 256×256, gate, up 704×256, down 256×704,
//! then the 4096×256 head), 29 calls per "token", timed over many tokens. It separates the
//! kernel's streaming rate from the rest of a decode step (`decode_prof`).
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p chatforge-core --example skinny_bench -- [rows]
use std::time::Instant;

use chatforge_core::cpu::skinny::matmul_nt;

/// As the CLI allocates: large blocks on 64-byte lines (`chatforge_core::alloc`).
#[global_allocator]
static ALLOC: chatforge_core::alloc::LineAligned = chatforge_core::alloc::LineAligned;

fn main() {
    let (d, f, v) = (256usize, 704usize, 4096usize);
    let mut shapes = Vec::new();
    for _ in 0..4 {
        shapes.extend([(d, d), (d, d), (d, d), (d, d), (f, d), (f, d), (d, f)]);
    }
    // NO_HEAD=1: the layers alone, as a prefill runs them (the head sees only the last row).
    if std::env::var_os("NO_HEAD").is_none() {
        shapes.push((v, d));
    }
    let weights: Vec<Vec<f32>> =
        shapes.iter().map(|&(n, k)| (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1e3 - 0.5).collect()).collect();
    let bytes: usize = shapes.iter().map(|&(n, k)| n * k * 4).sum();
    let m: usize = std::env::args().nth(1).map_or(1, |s| s.parse().expect("rows: a number"));
    let x: Vec<f32> = (0..m * f).map(|i| (i % 17) as f32 / 17.0).collect();
    let mut y = vec![0.0f32; m * v];
    let step = |y: &mut Vec<f32>| {
        for (w, &(n, k)) in weights.iter().zip(&shapes) {
            matmul_nt(&mut y[..m * n], &x[..m * k], w, m, n, k, false);
        }
    };
    chatforge_core::pool::on_pool(|| {
        for _ in 0..50 {
            step(&mut y);
        }
        for rep in 0..3 {
            let tokens = 2000 / m.min(100);
            let t = Instant::now();
            for _ in 0..tokens {
                step(&mut y);
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "rep {rep}: {m} rows, {} threads, {:.1} MB of weights per step: {:.0} steps/s, {:.1} GB/s, {:.0} GFLOP/s",
                rayon::current_num_threads(),
                bytes as f64 / 1e6,
                tokens as f64 / s,
                (tokens * bytes) as f64 / s / 1e9,
                (tokens * bytes / 4 * 2 * m) as f64 / s / 1e9
            );
        }
    });
}
