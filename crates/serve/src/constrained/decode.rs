//! Decoding under a grammar: the vocabulary as bytes, and [`JsonConstraint`], a request's grammar and
//! state, which masks the logits of every token that may not come next and advances past the
//! token emitted.

use super::{Grammar, JsonState};

/// The vocabulary as byte strings, for trying tokens against a [`JsonState`], with the same
/// strings as a trie (every prefix once), so that masking walks a state through each prefix
/// once and drops every token under a prefix the state refuses, instead of trying 4,096 tokens
/// from the start each.
pub struct TokenTable {
    pub bytes: Vec<Vec<u8>>,
    pub special: Vec<bool>,
    trie: Vec<Node>,
}

/// A trie node: the next bytes with their nodes, and the tokens whose bytes end here.
#[derive(Default)]
struct Node {
    next: Vec<(u8, u32)>,
    tokens: Vec<u32>,
}

impl TokenTable {
    /// Special tokens and empty strings are never allowed, so they stay out of the trie.
    pub fn new(bytes: Vec<Vec<u8>>, special: Vec<bool>) -> TokenTable {
        let mut trie = vec![Node::default()];
        for (id, b) in bytes.iter().enumerate() {
            if b.is_empty() || special.get(id).copied().unwrap_or(true) {
                continue;
            }
            let mut at = 0usize;
            for &c in b {
                at = match trie[at].next.iter().find(|e| e.0 == c) {
                    Some(&(_, n)) => n as usize,
                    None => {
                        trie.push(Node::default());
                        let n = trie.len() - 1;
                        trie[at].next.push((c, n as u32));
                        n
                    }
                };
            }
            trie[at].tokens.push(id as u32);
        }
        TokenTable { bytes, special, trie }
    }

    /// Every token whose bytes `step` accepts one by one from `start` and whose final state `ok`
    /// accepts, passed to `allow` (in no particular order). A state is copied once per prefix,
    /// and not at all along bytes that `inert` says `step` would accept without changing it.
    pub fn walk<S: Clone>(
        &self,
        start: &S,
        step: impl Fn(&mut S, u8) -> bool,
        inert: impl Fn(&S, u8) -> bool,
        ok: impl Fn(&S) -> bool,
        mut allow: impl FnMut(u32),
    ) {
        // States live in `states`; a node on the stack points at its own, shared along inert bytes,
        // with `ok`'s verdict computed once per state.
        let mut states: Vec<(S, Option<bool>)> = vec![(start.clone(), None)];
        let mut stack: Vec<(u32, usize)> = vec![(0, 0)];
        while let Some((node, si)) = stack.pop() {
            for &(b, child) in &self.trie[node as usize].next {
                let ci = if inert(&states[si].0, b) {
                    si
                } else {
                    let mut s = states[si].0.clone();
                    if !step(&mut s, b) {
                        continue;
                    }
                    states.push((s, None));
                    states.len() - 1
                };
                let n = &self.trie[child as usize];
                if !n.tokens.is_empty() {
                    let verdict = match states[ci].1 {
                        Some(v) => v,
                        None => {
                            let v = ok(&states[ci].0);
                            states[ci].1 = Some(v);
                            v
                        }
                    };
                    if verdict {
                        n.tokens.iter().for_each(|&t| allow(t));
                    }
                }
                if !n.next.is_empty() {
                    stack.push((child, ci));
                }
            }
        }
    }

    /// Whether `token` is in the trie [`TokenTable::walk`] walks (not special, not empty).
    pub fn walkable(&self, token: u32) -> bool {
        let t = token as usize;
        t < self.bytes.len() && !self.bytes[t].is_empty() && !self.special.get(t).copied().unwrap_or(true)
    }

    /// Sets every logit that [`TokenTable::walk`] does not allow to −∞ (and `end`'s too unless
    /// `end_ok`); returns how many stay.
    pub fn mask_walk<S: Clone>(
        &self,
        logits: &mut [f32],
        start: &S,
        step: impl Fn(&mut S, u8) -> bool,
        inert: impl Fn(&S, u8) -> bool,
        ok: impl Fn(&S) -> bool,
        end: Option<u32>,
    ) -> usize {
        let mut keep = vec![false; logits.len()];
        self.walk(start, step, inert, ok, |t| {
            if let Some(k) = keep.get_mut(t as usize) {
                *k = true;
            }
        });
        if let Some(k) = end.and_then(|e| keep.get_mut(e as usize)) {
            *k = true;
        }
        let mut allowed = 0;
        for (l, k) in logits.iter_mut().zip(keep) {
            if k {
                allowed += 1;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        allowed
    }
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
        let g = &*self.grammar;
        let allowed = table.mask_walk(
            logits,
            &self.state,
            |s, b| s.feed(g, &[b]),
            |s, b| s.inert(b),
            |s| s.min_remaining(g) <= budget,
            complete.then_some(end),
        );
        if allowed == 0 {
            // Cannot happen while the budget covers the shortest completion (checked before
            // generation starts) and every byte has a token; end rather than emit noise.
            tracing::warn!("constrained decoding found no allowed token; ending the output");
            if let Some(l) = logits.get_mut(end as usize) {
                *l = 0.0;
            }
        }
    }

    /// Whether [`JsonConstraint::mask`] keeps `token`, checked alone (for a draw before masking).
    pub fn allows(&self, table: &TokenTable, token: u32, left: usize, end: u32) -> bool {
        if token == end {
            return self.state.complete(&self.grammar);
        }
        let budget = left.saturating_sub(1);
        let mut s = self.state.clone();
        table.walkable(token) && s.feed(&self.grammar, &table.bytes[token as usize]) && s.min_remaining(&self.grammar) <= budget
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
