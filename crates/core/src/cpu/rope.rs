//! Rotary embeddings on the CPU: cos/sin tables built from [`Rope::inv_freq`] (HF's frequencies,
//! with their scalings), cached per thread, and the rotation of one row's heads.

use multiversion::multiversion;

use crate::backend::Rope;

/// cos/sin tables `[positions, hd/2]`: angle = position · inv_freq, in f32 as HF computes it.
fn rope_table(positions: std::ops::Range<usize>, hd: usize, rope: &Rope) -> (Vec<f32>, Vec<f32>) {
    let inv_freq = rope.inv_freq(hd);
    let mut cos = Vec::with_capacity(positions.len() * inv_freq.len());
    let mut sin = Vec::with_capacity(positions.len() * inv_freq.len());
    for p in positions {
        for &f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

pub(super) type RopeTable = std::sync::Arc<(Vec<f32>, Vec<f32>)>;
/// (head dim, the frequencies' key), positions covered, the table.
type RopeSlot = Option<((usize, [u32; 5]), usize, RopeTable)>;

thread_local! {
    /// The last cos/sin table built, keyed by (head dim, frequencies), covering positions 0..len.
    static ROPE_TABLE: std::cell::RefCell<RopeSlot> = const { std::cell::RefCell::new(None) };
}

/// cos/sin for positions 0..end (at least), built once and reused while (hd, rope) stay the same.
pub(super) fn rope_table_cached(end: usize, hd: usize, rope: &Rope) -> RopeTable {
    let key = (hd, rope.key());
    ROPE_TABLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some((k, len, table)) = slot.as_ref() {
            if *k == key && *len >= end {
                return table.clone();
            }
        }
        let len = end.next_power_of_two().max(64);
        let table: RopeTable = std::sync::Arc::new(rope_table(0..len, hd, rope));
        *slot = Some((key, len, table.clone()));
        table
    })
}

/// Rotates the `heads` heads of one row (HF "rotate_half": i pairs with i + hd/2); `inverse`
/// applies the transposed rotation (the backward).
#[multiversion(targets = "simd")]
pub(super) fn rope_rows(x: &mut [f32], cos: &[f32], sin: &[f32], heads: usize, hd: usize, inverse: bool) {
    let half = hd / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    for head in x.chunks_exact_mut(hd).take(heads) {
        let (x1, x2) = head.split_at_mut(half);
        for i in 0..half {
            let (c, s) = (cos[i], sign * sin[i]);
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * c - b * s;
            x2[i] = b * c + a * s;
        }
    }
}
