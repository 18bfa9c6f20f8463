//! Matmul microbenchmark: the fp32 `gemm` path against the bf16 kernel (`cpu::bf16`) on the
//! training step's own shapes (2,048 tokens of the 5.3M-parameter `bench train` model: forward
//! x·Wᵀ, weight gradients dYᵀ·X, input gradients dY·W), best of 30 calls each, GFLOP/s and ratio.
//!
//!     cargo run --release -p chatforge-core --example mm_bench
//!
//! Threads come from rayon (`RAYON_NUM_THREADS`). Timings on shared machines vary: repeat.

use std::time::Instant;

use chatforge_core::backend::Op;
use chatforge_core::cpu::{bf16, matmul};

/// As the CLI allocates: large blocks on 64-byte lines (`chatforge_core::alloc`).
#[global_allocator]
static ALLOC: chatforge_core::alloc::LineAligned = chatforge_core::alloc::LineAligned;

fn main() {
    println!("native bf16 kernel (AVX512-BF16): {}, {} threads", bf16::native(), rayon::current_num_threads());
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
        let flops = 2.0 * (m * n * k) as f64;
        let mut rate = [0.0f64; 2];
        for (which, r) in rate.iter_mut().enumerate() {
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t = Instant::now();
                if which == 0 {
                    matmul(&mut c, &a, ta, &b, tb, m, n, k, false)
                } else {
                    bf16::matmul(&mut c, &a, ta, &b, tb, m, n, k, false)
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            *r = flops / best / 1e9;
        }
        println!("{m}x{n}x{k} {ta:?}{tb:?}: fp32 {:.0} GFLOP/s, bf16 {:.0} GFLOP/s, ratio {:.2}", rate[0], rate[1], rate[1] / rate[0]);
    }
}
