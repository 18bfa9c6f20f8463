//! Decoding tokens/s on a run's checkpoint, greedy single stream (batch 1) or `generate_batch`
//! at T = 1 (batch > 1), 200 new tokens after a 16-token prompt, three reps. For profiling
//! (`perf record`) and for the A/B of `chatforge_core::pool`: by default it runs from the main
//! thread, outside rayon's pool; `ON_POOL=1` runs it on a pool worker, as the CLI does.
//! `GEN=1` runs batch 1 through `generate_batch` (greedy) instead of the bare decode loop, to
//! see what the sampler and the generation loop add.
//!
//!     cargo run --release -p chatforge-core --example decode_prof -- runs/speedrun/sft [batch]
use std::time::Instant;

use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::sample::{argmax, generate_batch, GenOptions, SamplingParams};

/// As the CLI allocates: large blocks on 64-byte lines (`chatforge_core::alloc`).
#[global_allocator]
static ALLOC: chatforge_core::alloc::LineAligned = chatforge_core::alloc::LineAligned;

fn main() {
    if std::env::var("ON_POOL").is_ok_and(|v| v == "1") {
        return chatforge_core::pool::on_pool(run);
    }
    run()
}

fn run() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("runs/speedrun/sft"));
    let batch: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1);
    let model = load_model(Cpu::default(), &dir).unwrap();
    let prompt: Vec<u32> = (0..16u32).map(|i| (i * 37) % 4000 + 10).collect();
    if let Some(n) = std::env::var("PREFILL").ok().and_then(|v| v.parse::<usize>().ok()) {
        // Prefill figure: one n-token prompt into a fresh cache, 20 times.
        let long: Vec<u32> = (0..n as u32).map(|i| (i * 37) % 4000 + 10).collect();
        let mut ws = model.decode_ws();
        for rep in 0..3 {
            let t = Instant::now();
            for _ in 0..20 {
                let mut cache = model.new_cache(256);
                model.decode_into(&mut cache, &long, &mut ws);
            }
            println!("rep {rep}: prefill {n}: {:.0} tok/s", (20 * n) as f64 / t.elapsed().as_secs_f64());
        }
        return;
    }
    for rep in 0..3 {
        let t = Instant::now();
        let steps = 200;
        if batch == 1 && std::env::var("GEN").is_err() {
            let mut cache = model.new_cache(256);
            let mut ws = model.decode_ws();
            model.decode_into(&mut cache, &prompt, &mut ws);
            for _ in 0..steps {
                let tok = argmax(&ws.host);
                model.decode_into(&mut cache, &[tok], &mut ws);
            }
        } else {
            let opts = GenOptions {
                max_new: steps,
                params: SamplingParams { temperature: if batch == 1 { 0.0 } else { 1.0 }, top_k: 0, top_p: 1.0 },
                stop_ids: vec![],
            };
            let prompts = vec![prompt.clone(); batch];
            let seeds: Vec<u64> = (0..batch as u64).collect();
            generate_batch(&model, &prompts, &opts, &seeds, |_, _| true);
        }
        let s = t.elapsed().as_secs_f64();
        println!("rep {rep}: batch {batch}: {:.0} tok/s", (steps * batch) as f64 / s);
    }
}
