//! Decoding a tool call under a grammar: the call text the model writes,
//! `<tool_call>\n{"name": "<fn>", "arguments": <JSON>}\n</tool_call>`, with the name one of a
//! set of functions and the arguments a JSON object that function's parameter schema allows.
//!
//! A [`CallGrammar`] holds the functions (name, compiled argument grammar). A [`CallConstraint`]
//! walks one call byte by byte through its phases, in order: the opening literal (up to and
//! including the name's opening quote), the name, the literal between the name and the
//! arguments, the arguments (a [`JsonState`] of the chosen function's grammar), the closing
//! literal. Like [`super::JsonConstraint`] it knows the fewest bytes that finish the call from
//! where it stands, so masking keeps every token whose bytes continue the call and still leave
//! room to finish it within the tokens left.
//!
//! A constraint starts either before the opening literal ([`CallConstraint::forced`]: the whole
//! call is forced, for `tool_choice` `required` or a named function) or just after it
//! ([`CallConstraint::after_open`]: the model chose to write a call on its own, with
//! `tool_choice` `auto`, and only its name and arguments are constrained).

use std::sync::Arc;

use super::decode::TokenTable;
use super::{Grammar, JsonState};

/// What opens a call, up to the name's opening quote.
pub const OPEN: &str = "<tool_call>\n{\"name\": \"";
/// Between the name and the arguments.
const MID: &str = "\", \"arguments\": ";
/// After the arguments.
const CLOSE: &str = "}\n</tool_call>";

/// The functions a call may name, with the grammar of each one's arguments.
#[derive(Debug)]
pub struct CallGrammar {
    functions: Vec<(String, Arc<Grammar>)>,
}

impl CallGrammar {
    /// `functions`: (name, argument grammar); names are non-empty and use no byte that needs
    /// escaping in JSON (the API allows `[A-Za-z0-9_-]`).
    pub fn new(functions: Vec<(String, Arc<Grammar>)>) -> CallGrammar {
        debug_assert!(functions
            .iter()
            .all(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')));
        CallGrammar { functions }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().map(|(n, _)| n.as_str())
    }

    /// The fewest bytes of function `i`'s name, the literal after it, its arguments and the close.
    fn min_after_name(&self, i: usize) -> usize {
        let g = &self.functions[i].1;
        MID.len() + g.start().min_remaining(g) + CLOSE.len()
    }

    /// The fewest bytes of a whole call.
    pub fn min_len(self: &Arc<Self>) -> usize {
        CallConstraint::forced(self.clone()).min_remaining()
    }
}

#[derive(Debug, Clone)]
enum Phase {
    /// `pos` bytes of [`OPEN`] written.
    Open(usize),
    /// The name so far (a prefix of at least one name).
    Name(Vec<u8>),
    /// Function `f` chosen; `pos` bytes of [`MID`] written (the name's closing quote first).
    Mid {
        f: usize,
        pos: usize,
    },
    /// The arguments of function `f`.
    Args {
        f: usize,
        state: JsonState,
    },
    /// `pos` bytes of [`CLOSE`] written.
    Close(usize),
    Done,
}

/// One call being decoded (see the module docs).
#[derive(Debug, Clone)]
pub struct CallConstraint {
    grammar: Arc<CallGrammar>,
    phase: Phase,
}

impl CallConstraint {
    /// The whole call text, from `<tool_call>`.
    pub fn forced(grammar: Arc<CallGrammar>) -> CallConstraint {
        CallConstraint { grammar, phase: Phase::Open(0) }
    }

    /// A call the model opened itself: [`OPEN`] is written, the name comes next.
    pub fn after_open(grammar: Arc<CallGrammar>) -> CallConstraint {
        CallConstraint { grammar, phase: Phase::Name(Vec::new()) }
    }

    /// Whether the call is written out (nothing more may be added to it).
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Feeds bytes; false (state unspecified) if they cannot continue the call.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(b))
    }

    /// Whether byte `b` is accepted without changing the call's state (see [`JsonState::inert`]).
    fn inert(&self, b: u8) -> bool {
        matches!(&self.phase, Phase::Args { state, .. } if state.inert(b))
    }

    fn byte(&mut self, b: u8) -> bool {
        let fns = &self.grammar.functions;
        match &mut self.phase {
            Phase::Open(pos) => {
                if OPEN.as_bytes()[*pos] != b {
                    return false;
                }
                *pos += 1;
                if *pos == OPEN.len() {
                    self.phase = Phase::Name(Vec::new());
                }
                true
            }
            Phase::Name(name) => {
                if b == b'"' {
                    match fns.iter().position(|(n, _)| n.as_bytes() == name.as_slice()) {
                        Some(f) => {
                            self.phase = Phase::Mid { f, pos: 1 };
                            true
                        }
                        None => false,
                    }
                } else {
                    name.push(b);
                    fns.iter().any(|(n, _)| n.as_bytes().starts_with(name))
                }
            }
            Phase::Mid { f, pos } => {
                if MID.as_bytes()[*pos] != b {
                    return false;
                }
                *pos += 1;
                if *pos == MID.len() {
                    let f = *f;
                    self.phase = Phase::Args { f, state: fns[f].1.start() };
                }
                true
            }
            Phase::Args { f, state } => {
                if state.finished() {
                    self.phase = Phase::Close(0);
                    return self.byte(b);
                }
                state.feed(&fns[*f].1, &[b])
            }
            Phase::Close(pos) => {
                if CLOSE.as_bytes()[*pos] != b {
                    return false;
                }
                *pos += 1;
                if *pos == CLOSE.len() {
                    self.phase = Phase::Done;
                }
                true
            }
            Phase::Done => false,
        }
    }

    /// The fewest bytes that finish the call.
    pub fn min_remaining(&self) -> usize {
        let g = &self.grammar;
        let best_name = |prefix: &[u8]| {
            g.functions
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.as_bytes().starts_with(prefix))
                .map(|(i, (n, _))| n.len() - prefix.len() + g.min_after_name(i))
                .min()
                .unwrap_or(usize::MAX / 4)
        };
        match &self.phase {
            Phase::Open(pos) => OPEN.len() - pos + best_name(b""),
            Phase::Name(name) => best_name(name),
            Phase::Mid { f, pos } => g.min_after_name(*f) - pos,
            Phase::Args { f, state } => state.min_remaining(&g.functions[*f].1) + CLOSE.len(),
            Phase::Close(pos) => CLOSE.len() - pos,
            Phase::Done => 0,
        }
    }

    /// Whether [`CallConstraint::mask`] keeps `token`, checked alone (for a draw before masking).
    pub fn allows(&self, table: &TokenTable, token: u32, left: usize, end: u32) -> bool {
        if self.done() {
            return token == end;
        }
        let budget = left.saturating_sub(1);
        let mut s = self.clone();
        table.walkable(token) && s.feed(&table.bytes[token as usize]) && s.min_remaining() <= budget
    }

    /// Sets the logits of every token that may not come next to −∞ (see
    /// [`super::JsonConstraint::mask`]). Once the call is done only `end` may follow.
    pub fn mask(&self, logits: &mut [f32], table: &TokenTable, left: usize, end: u32) {
        let budget = left.saturating_sub(1);
        let allowed = if self.done() {
            table.mask_walk(logits, self, |_, _| false, |_, _| false, |_| false, Some(end))
        } else {
            table.mask_walk(logits, self, |s, b| s.byte(b), |s, b| s.inert(b), |s| s.min_remaining() <= budget, None)
        };
        if allowed == 0 {
            // Cannot happen while the budget covers the shortest call (checked before generation).
            tracing::warn!("constrained tool call found no allowed token; ending the output");
            if let Some(l) = logits.get_mut(end as usize) {
                *l = 0.0;
            }
        }
    }
}
