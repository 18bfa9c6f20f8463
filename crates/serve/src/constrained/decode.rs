//! Decoding under a grammar: the vocabulary as bytes, and [`JsonConstraint`], a request's grammar and
//! state, which masks the logits of every token that may not come next and advances past the
//! token emitted.

use super::{Grammar, JsonState};

/// The vocabulary as byte strings, for trying tokens against a [`JsonState`].
pub struct TokenTable {
    pub bytes: Vec<Vec<u8>>,
    pub special: Vec<bool>,
}

/// The grammar of a request with its state, and the tokens the model may emit next.
#[derive(Clone)]
pub struct JsonConstraint {
    pub grammar: std::sync::Arc<Grammar>,
    pub state: JsonState,
}

impl JsonConstraint {
    pub fn new(grammar: std::sync::Arc<Grammar>) -> JsonConstraint {
        let state = grammar.start();
        JsonConstraint { grammar, state }
    }

    /// Sets the logits of every token that may not come next to −∞. `left`: tokens the output
    /// may still have, counting this one. `end`: the token that ends the output (`<|im_end|>`).
    pub fn mask(&self, logits: &mut [f32], table: &TokenTable, left: usize, end: u32) {
        let complete = self.state.complete(&self.grammar);
        let budget = left.saturating_sub(1);
        let mut allowed = 0;
        for (i, l) in logits.iter_mut().enumerate() {
            let ok = i < table.bytes.len() && !table.special[i] && !table.bytes[i].is_empty() && {
                let mut s = self.state.clone();
                s.feed(&self.grammar, &table.bytes[i]) && s.min_remaining(&self.grammar) <= budget
            };
            if ok || (complete && i as u32 == end) {
                allowed += 1;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if allowed == 0 {
            // Cannot happen while the budget covers the shortest completion (checked before
            // generation starts) and every byte has a token; end rather than emit noise.
            tracing::warn!("constrained decoding found no allowed token; ending the output");
            if let Some(l) = logits.get_mut(end as usize) {
                *l = 0.0;
            }
        }
    }

    /// Advances past an emitted token.
    pub fn advance(&mut self, bytes: &[u8]) {
        let ok = self.state.feed(&self.grammar, bytes);
        debug_assert!(ok, "a masked token was emitted");
    }

    /// The fewest bytes of a complete output.
    pub fn min_len(&self) -> usize {
        self.grammar.start().min_remaining(&self.grammar)
    }
}
