//! Where the engine's work runs: on a worker of rayon's global pool.
//!
//! Every parallel kernel (`par_iter`, `join`) called from a thread outside the pool is handed to
//! the pool's workers while the caller sleeps on a latch, and the idle workers spin in
//! `sched_yield` in between. With two cores that is three threads on two cores, and a handoff
//! and a wake-up for each of the ~20 kernels of a decoding step: measured on the speedrun's model
//! (2-core AMD EPYC), single-stream decoding ran at 0.8k tokens/s from the main thread and at
//! 3.8k on a worker, where a kernel's pieces are split with `join` and the calling thread does
//! its share. So a command's work, or a long-lived thread's loop iteration, goes through
//! [`on_pool`].

/// Runs `f` on a worker thread of the global pool (the calling thread waits), or in place when
/// the caller already is one. Nothing else changes: the same threads, the same results.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_on_a_worker_and_returns_the_result() {
        assert!(rayon::current_thread_index().is_none());
        let (on, v) = super::on_pool(|| (rayon::current_thread_index().is_some(), 6 * 7));
        assert!(on);
        assert_eq!(v, 42);
        // Nested: in place.
        assert!(super::on_pool(|| super::on_pool(|| rayon::current_thread_index().is_some())));
    }
}
