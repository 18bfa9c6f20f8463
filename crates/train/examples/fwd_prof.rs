//! The forward pass alone on a `bench train` shape (default: SmolLM2-135M's, bf16, batch 2 ×
//! 256), six timed calls after one warm-up: tokens/s, for profiling (`perf record`).
//!
//!     cargo run --release -p chatforge-train --example fwd_prof
use std::time::Instant;

use chatforge_core::backend::Precision;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_train::bench::BenchConfig;

/// As the CLI allocates: large blocks on 64-byte lines (`chatforge_core::alloc`).
#[global_allocator]
static ALLOC: chatforge_core::alloc::LineAligned = chatforge_core::alloc::LineAligned;

fn main() {
    let cfg = BenchConfig {
        layers: 30,
        hidden: 576,
        heads: 9,
        kv_heads: 3,
        intermediate: 1536,
        vocab: 49152,
        tied: true,
        batch: 2,
        precision: Precision::Bf16,
        ..Default::default()
    };
    chatforge_core::pool::on_pool(|| {
        let mut model = Llama::new(Cpu::with_precision(cfg.precision), cfg.model_config(), 0);
        let n = cfg.batch * cfg.context;
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % cfg.vocab as u32).collect();
        std::hint::black_box(model.forward_buf(&ids, cfg.batch, cfg.context));
        let faults = || std::fs::read_to_string("/proc/self/stat").unwrap().split_whitespace().nth(9).unwrap().parse::<u64>().unwrap();
        let f0 = faults();
        let t = Instant::now();
        for _ in 0..6 {
            std::hint::black_box(model.forward_buf(&ids, cfg.batch, cfg.context));
        }
        println!("forward: {:.1} tokens/s, {} minor page faults per call", (6 * n) as f64 / t.elapsed().as_secs_f64(), (faults() - f0) / 6);
    });
}
