//! A global allocator that starts every allocation of [`LINE_FROM`] bytes or more on a 64-byte
//! cache line; smaller ones are the system allocator's as they are.
//!
//! Why: the engine's kernels load whole 64-byte AVX-512 registers along rows of weights,
//! activations and the KV cache, and glibc places a large block 16 bytes past a page start, so
//! every such load straddles two cache lines. Measured on a 2-core Xeon (model 207),
//! `skinny_bench` at 240 rows over the speedrun model's layer shapes, the same kernel on the same
//! data: 132–139 GFLOP/s as malloc places it, 172–179 on 64-byte lines. Rows of 256 or 704 floats
//! are whole lines, so one aligned start aligns every row.
//!
//! A binary opts in with `#[global_allocator] static A: LineAligned = LineAligned;` (the CLI
//! does); a library cannot choose the program's allocator. The alignment is a function of the
//! size alone, so `dealloc` and `realloc` recompute the layout `alloc` used.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes start on a cache line.
pub const LINE_FROM: usize = 512;
const LINE: usize = 64;

pub struct LineAligned;

/// The layout actually asked of the system for `l`.
fn lined(l: Layout) -> Layout {
    if l.size() >= LINE_FROM && l.align() < LINE {
        // SAFETY: LINE is a power of two and the size was valid for a smaller alignment; a size
        // that overflows when rounded up to 64 cannot be allocated anyway (checked below).
        unsafe { Layout::from_size_align_unchecked(l.size(), LINE) }
    } else {
        l
    }
}

unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > isize::MAX as usize - LINE {
            return std::ptr::null_mut();
        }
        System.alloc(lined(l))
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > isize::MAX as usize - LINE {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(lined(l))
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, lined(l))
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, l.align());
        if lined(l).align() == lined(new).align() {
            // The same alignment before and after: the system reallocates (in place if it can).
            return System.realloc(p, lined(l), new_size);
        }
        let q = self.alloc(new);
        if !q.is_null() {
            std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
            self.dealloc(p, l);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: LineAligned = LineAligned;

    /// Large vectors start on a line, through growth and shrinking across the threshold, and
    /// keep their contents.
    #[test]
    fn large_blocks_start_on_a_line_and_keep_their_contents() {
        let line = |p: *const f32| (p as usize).is_multiple_of(LINE);
        for n in [128usize, 1000, 70_000, 1 << 20] {
            let v = vec![1.5f32; n];
            assert!(line(v.as_ptr()), "{n} floats");
        }
        let mut v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        for i in 100..300_000 {
            v.push(i as f32);
            if v.len() * 4 >= LINE_FROM && v.len() == v.capacity() {
                assert!(line(v.as_ptr()));
            }
        }
        v.truncate(10);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        let big = vec![0u8; 1 << 16];
        assert!(big.iter().all(|&b| b == 0) && (big.as_ptr() as usize).is_multiple_of(LINE));
    }
}
