//! Decoding attention alone (`Backend::attention_segments`, one row per sequence): 32 sequences x 4 layers of KV caches
//! at length L, distinct (the cache streams from memory) or all one cache (it stays in L2), the
//! same arithmetic; microseconds per layer and the cache's GB/s.
//!
//!     cargo run --release -p chatforge-core --example attend_bench -- [L]
use std::time::Instant;

use chatforge_core::backend::{Backend, Segment};
use chatforge_core::cpu::Cpu;

/// As the CLI allocates: large blocks on 64-byte lines (`chatforge_core::alloc`).
#[global_allocator]
static ALLOC: chatforge_core::alloc::LineAligned = chatforge_core::alloc::LineAligned;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let len: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(116);
    let (b, hq, hd, layers) = (32usize, 4usize, 64usize, 4usize);
    let kvd = hq * hd;
    let mk = |seed: usize| (0..len * kvd).map(|i| (((i * 7 + seed * 13) % 97) as f32 - 48.0) / 97.0).collect::<Vec<f32>>();
    let kv = |x: Vec<f32>| {
        let mut c = Cpu.kv_zeros(x.len());
        Cpu.kv_append(&mut [&mut c], &x, x.len(), &[Segment { row: 0, n: 1, pos0: 0 }]);
        c
    };
    let caches: Vec<_> = (0..b * layers).map(|i| (kv(mk(i)), kv(mk(i + 1000)))).collect();
    let q: Vec<f32> = (0..b * kvd).map(|i| ((i % 31) as f32 - 15.0) / 31.0).collect();
    let mut out = vec![0.0f32; b * kvd];
    let segs: Vec<Segment> = (0..b).map(|i| Segment { row: i, n: 1, pos0: len - 1 }).collect();
    chatforge_core::pool::on_pool(|| {
        for shared in [false, true] {
            let t = Instant::now();
            let reps = 200;
            for r in 0..reps {
                let l = r % layers;
                let pick = |i: usize| if shared { 0 } else { l * b + i };
                let ks: Vec<_> = (0..b).map(|i| &caches[pick(i)].0).collect();
                let vs: Vec<_> = (0..b).map(|i| &caches[pick(i)].1).collect();
                Cpu.attention_segments(&mut out, &q, &ks, &vs, &segs, hq, hq, hd);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let bytes = (b * len * kvd * 2 * std::mem::size_of_val(&caches[0].0[0])) as f64;
            println!("len {len} shared {shared}: {:.1} us per layer call, {:.1} GB/s of KV", s * 1e6, bytes / s / 1e9);
        }
    });
}
