//! The byte-level JSON state machine: the phases of objects, arrays and numbers, the frame stack,
//! and [`JsonState`], which accepts or refuses each byte under a [`Grammar`] and knows the fewest
//! bytes that complete the text from where it stands.

use super::schema::{Grammar, Node, ANY, ANY_LITERALS, FREE_OBJECT, MAX_DEPTH};

impl Grammar {
    pub fn start(&self) -> JsonState {
        JsonState { stack: vec![], scan: Scan::Start { node: self.root, space: false }, done: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ObjPhase {
    /// After `{`: a key or `}`.
    Open,
    /// Inside a key of a schema object (bytes in `key`).
    Key,
    /// After a key: `:`.
    Colon,
    /// A value is being scanned.
    Value,
    /// After a value: `,` or `}`.
    After,
    /// After `,`: a key (or one space).
    Comma,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ArrPhase {
    Open,
    Value,
    After,
    Comma,
}

#[derive(Debug, Clone)]
enum Frame {
    /// `seen`: bit i set once property i was written; `cur`: the property whose key was just read
    /// (schema objects).
    Obj {
        node: usize,
        phase: ObjPhase,
        seen: u64,
        cur: usize,
        key: Vec<u8>,
        spaced: bool,
    },
    Arr {
        item: usize,
        phase: ArrPhase,
        spaced: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NumPhase {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl NumPhase {
    fn complete(self) -> bool {
        matches!(self, NumPhase::Zero | NumPhase::Int | NumPhase::Frac | NumPhase::ExpDigits)
    }
}

#[derive(Debug, Clone)]
enum Scan {
    /// A value of `node` starts here (one space allowed first when `space`).
    Start {
        node: usize,
        space: bool,
    },
    /// Inside a string; `key` when it is a free object's key. `esc`: after a backslash.
    /// `cont`: UTF-8 continuation bytes still owed, and the range the next one must be in.
    Str {
        key: bool,
        esc: bool,
        cont: u8,
        lo: u8,
        hi: u8,
    },
    Num {
        int: bool,
        phase: NumPhase,
    },
    /// Matching one of the literals of `node`; `pos` bytes matched; `alive` bit i: literal i still matches.
    Lit {
        node: usize,
        pos: usize,
        alive: u64,
    },
    /// Between structural bytes (the frame on top says what comes).
    Frame,
}

/// Where the output stands in the grammar. Cheap to clone (a few small vectors).
#[derive(Debug, Clone)]
pub struct JsonState {
    stack: Vec<Frame>,
    scan: Scan,
    done: bool,
}

impl JsonState {
    /// Whether the output so far is a complete value (generation may end here).
    pub fn complete(&self, g: &Grammar) -> bool {
        if self.done {
            return true;
        }
        if !self.stack.is_empty() {
            return false;
        }
        match &self.scan {
            Scan::Num { phase, .. } => phase.complete(),
            // A literal that is whole here but also the prefix of a longer one (`1` of 1 and 10).
            Scan::Lit { node, pos, alive } => match &g.nodes[*node] {
                Node::Literals(l) => l.iter().enumerate().any(|(i, x)| alive >> i & 1 == 1 && x.len() == *pos),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether nothing more can follow (the value is closed).
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Feeds bytes; false (state unspecified) if they cannot continue the output.
    pub fn feed(&mut self, g: &Grammar, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(g, b))
    }

    /// The fewest bytes that complete the output.
    pub fn min_remaining(&self, g: &Grammar) -> usize {
        if self.done {
            return 0;
        }
        let mut n = match &self.scan {
            Scan::Start { node, .. } => g.min_value(*node),
            Scan::Str { esc, cont, .. } => usize::from(*esc) + *cont as usize + 1,
            Scan::Num { phase, .. } => usize::from(!phase.complete()),
            Scan::Lit { node, pos, alive } => match &g.nodes[*node] {
                Node::Literals(l) => {
                    l.iter().enumerate().filter(|(i, _)| alive >> i & 1 == 1).map(|(_, x)| x.len() - pos).min().unwrap_or(0)
                }
                _ => 0,
            },
            Scan::Frame => 0,
        };
        // The frames, innermost first. The innermost one may be mid-way (phase); the outer ones
        // are all waiting for a value to end.
        for (depth, f) in self.stack.iter().rev().enumerate() {
            n += match f {
                Frame::Arr { item, phase, .. } => match phase {
                    ArrPhase::Comma if depth == 0 => g.min_value(*item) + 1,
                    _ => 1,
                },
                Frame::Obj { node, phase, seen, cur, key, .. } => {
                    let phase = if depth == 0 { *phase } else { ObjPhase::Value };
                    match &g.nodes[*node] {
                        Node::Object(props) => match phase {
                            ObjPhase::Open => g.min_props(props, *seen, true) + 1,
                            // After a comma some property must follow, required or not.
                            ObjPhase::Comma => candidates(props, *seen)
                                .map(|i| props[i].0.len() + 3 + g.min_value(props[i].1) + g.min_props(props, *seen | 1 << i, false) + 1)
                                .min()
                                .unwrap_or(usize::MAX / 4),
                            ObjPhase::Value | ObjPhase::After => g.min_props(props, *seen, false) + 1,
                            ObjPhase::Colon => 1 + g.min_value(props[*cur].1) + g.min_props(props, *seen, false) + 1,
                            ObjPhase::Key => {
                                // Finish the key as the cheapest allowed property, then its value and the rest.
                                candidates(props, *seen)
                                    .filter(|&i| props[i].0.starts_with(key))
                                    .map(|i| {
                                        props[i].0.len() - key.len()
                                            + 2
                                            + g.min_value(props[i].1)
                                            + g.min_props(props, *seen | 1 << i, false)
                                            + 1
                                    })
                                    .min()
                                    .unwrap_or(usize::MAX / 4)
                            }
                        },
                        _ => match phase {
                            ObjPhase::Key | ObjPhase::Colon => 1 + 1 + 1,
                            ObjPhase::Comma => 2 + 1 + 1 + 1,
                            _ => 1,
                        },
                    }
                }
            };
        }
        n
    }

    /// Whether byte `b` is accepted and leaves the state exactly as it is: plain ASCII inside a
    /// string (not a quote, a backslash or a control byte), the bulk of a tool call's arguments.
    /// Masking walks such bytes without copying the state.
    pub fn inert(&self, b: u8) -> bool {
        !self.done && matches!(self.scan, Scan::Str { esc: false, cont: 0, .. }) && (0x20..=0x7F).contains(&b) && b != b'"' && b != b'\\'
    }

    fn byte(&mut self, g: &Grammar, b: u8) -> bool {
        if self.done {
            return false;
        }
        match self.scan.clone() {
            Scan::Start { node, space } => {
                if b == b' ' && space {
                    self.scan = Scan::Start { node, space: false };
                    return true;
                }
                self.start_value(g, node, b)
            }
            Scan::Str { key, esc, cont, lo, hi } => {
                if cont > 0 {
                    if b < lo || b > hi {
                        return false;
                    }
                    self.scan = Scan::Str { key, esc, cont: cont - 1, lo: 0x80, hi: 0xBF };
                    return true;
                }
                if esc {
                    if !matches!(b, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') {
                        return false;
                    }
                    self.scan = Scan::Str { key, esc: false, cont: 0, lo, hi };
                    return true;
                }
                match b {
                    b'"' => {
                        if key {
                            self.set_phase(ObjPhase::Colon);
                            self.scan = Scan::Frame;
                        } else {
                            self.end_value();
                        }
                        true
                    }
                    b'\\' => {
                        self.scan = Scan::Str { key, esc: true, cont: 0, lo, hi };
                        true
                    }
                    0x00..=0x1F | 0x80..=0xC1 | 0xF5..=0xFF => false,
                    0x20..=0x7F => true,
                    0xC2..=0xDF => {
                        self.scan = Scan::Str { key, esc, cont: 1, lo: 0x80, hi: 0xBF };
                        true
                    }
                    0xE0..=0xEF => {
                        let (lo, hi) = match b {
                            0xE0 => (0xA0, 0xBF),
                            0xED => (0x80, 0x9F),
                            _ => (0x80, 0xBF),
                        };
                        self.scan = Scan::Str { key, esc, cont: 2, lo, hi };
                        true
                    }
                    0xF0..=0xF4 => {
                        let (lo, hi) = match b {
                            0xF0 => (0x90, 0xBF),
                            0xF4 => (0x80, 0x8F),
                            _ => (0x80, 0xBF),
                        };
                        self.scan = Scan::Str { key, esc, cont: 3, lo, hi };
                        true
                    }
                }
            }
            Scan::Num { int, phase } => {
                use NumPhase::*;
                let next = match (phase, b) {
                    (Minus, b'0') => Some(Zero),
                    (Minus, b'1'..=b'9') => Some(Int),
                    (Int, b'0'..=b'9') => Some(Int),
                    (Zero | Int, b'.') if !int => Some(Dot),
                    (Zero | Int | Frac, b'e' | b'E') if !int => Some(Exp),
                    (Dot | Frac, b'0'..=b'9') => Some(Frac),
                    (Exp, b'+' | b'-') => Some(ExpSign),
                    (Exp | ExpSign | ExpDigits, b'0'..=b'9') => Some(ExpDigits),
                    _ => None,
                };
                match next {
                    Some(p) => {
                        self.scan = Scan::Num { int, phase: p };
                        true
                    }
                    None if phase.complete() && !self.stack.is_empty() => {
                        // The number ended; the byte belongs to the enclosing object or array.
                        self.end_value();
                        self.byte(g, b)
                    }
                    None => false,
                }
            }
            Scan::Lit { node, pos, alive } => {
                let Node::Literals(lits) = &g.nodes[node] else { return false };
                let mut still = 0u64;
                for (i, l) in lits.iter().enumerate() {
                    if alive >> i & 1 == 1 && l.get(pos) == Some(&b) {
                        still |= 1 << i;
                    }
                }
                if still == 0 {
                    // A literal that is complete here (and a prefix of a longer one) may end.
                    let whole = lits.iter().enumerate().any(|(i, l)| alive >> i & 1 == 1 && l.len() == pos);
                    if whole && !self.stack.is_empty() {
                        self.end_value();
                        return self.byte(g, b);
                    }
                    return false;
                }
                let pos = pos + 1;
                let longer = lits.iter().enumerate().any(|(i, l)| still >> i & 1 == 1 && l.len() > pos);
                if longer {
                    self.scan = Scan::Lit { node, pos, alive: still };
                } else {
                    self.end_value();
                }
                true
            }
            Scan::Frame => self.frame_byte(g, b),
        }
    }

    fn set_phase(&mut self, p: ObjPhase) {
        if let Some(Frame::Obj { phase, .. }) = self.stack.last_mut() {
            *phase = p;
        }
    }

    /// A value ended: the enclosing frame waits for `,` or its closing bracket.
    fn end_value(&mut self) {
        self.scan = Scan::Frame;
        match self.stack.last_mut() {
            None => self.done = true,
            Some(Frame::Obj { phase, .. }) => *phase = ObjPhase::After,
            Some(Frame::Arr { phase, .. }) => *phase = ArrPhase::After,
        }
    }

    fn start_value(&mut self, g: &Grammar, node: usize, b: u8) -> bool {
        let n = &g.nodes[node];
        let any = matches!(n, Node::Any);
        match b {
            b'{' if any || matches!(n, Node::FreeObject | Node::Object(_)) => {
                if self.stack.len() >= MAX_DEPTH {
                    return false;
                }
                let node = if any { FREE_OBJECT } else { node };
                self.stack.push(Frame::Obj { node, phase: ObjPhase::Open, seen: 0, cur: 0, key: vec![], spaced: false });
                self.scan = Scan::Frame;
                true
            }
            b'[' if any || matches!(n, Node::Array(_)) => {
                if self.stack.len() >= MAX_DEPTH {
                    return false;
                }
                let item = if let Node::Array(i) = n { *i } else { ANY };
                self.stack.push(Frame::Arr { item, phase: ArrPhase::Open, spaced: false });
                self.scan = Scan::Frame;
                true
            }
            b'"' if any || matches!(n, Node::String) => {
                self.scan = Scan::Str { key: false, esc: false, cont: 0, lo: 0, hi: 0 };
                true
            }
            b'-' if any || matches!(n, Node::Number | Node::Integer) => {
                self.scan = Scan::Num { int: matches!(n, Node::Integer), phase: NumPhase::Minus };
                true
            }
            b'0'..=b'9' if any || matches!(n, Node::Number | Node::Integer) => {
                let phase = if b == b'0' { NumPhase::Zero } else { NumPhase::Int };
                self.scan = Scan::Num { int: matches!(n, Node::Integer), phase };
                true
            }
            _ => {
                let lit_node = if any {
                    Some(ANY_LITERALS)
                } else if matches!(n, Node::Literals(_)) {
                    Some(node)
                } else {
                    None
                };
                let Some(ln) = lit_node else { return false };
                self.scan = Scan::Lit { node: ln, pos: 0, alive: u64::MAX };
                self.byte(g, b)
            }
        }
    }

    fn frame_byte(&mut self, g: &Grammar, b: u8) -> bool {
        let Some(top) = self.stack.last_mut() else { return false };
        match top {
            Frame::Arr { item, phase, spaced } => match (*phase, b) {
                (ArrPhase::Open, b']') | (ArrPhase::After, b']') => {
                    self.stack.pop();
                    self.end_value();
                    true
                }
                (ArrPhase::Open, _) => {
                    *phase = ArrPhase::Value;
                    let item = *item;
                    self.start_value(g, item, b)
                }
                (ArrPhase::After, b',') => {
                    *phase = ArrPhase::Comma;
                    *spaced = false;
                    true
                }
                (ArrPhase::Comma, b' ') if !*spaced => {
                    *spaced = true;
                    true
                }
                (ArrPhase::Comma, _) => {
                    *phase = ArrPhase::Value;
                    let item = *item;
                    self.start_value(g, item, b)
                }
                _ => false,
            },
            Frame::Obj { node, phase, seen, cur, key, spaced } => {
                let props = match &g.nodes[*node] {
                    Node::Object(p) => Some(p),
                    _ => None,
                };
                match (*phase, b) {
                    (ObjPhase::Open | ObjPhase::After, b'}') => {
                        if let Some(p) = props {
                            if p.iter().enumerate().any(|(i, x)| x.2 && *seen >> i & 1 == 0) {
                                return false;
                            }
                        }
                        self.stack.pop();
                        self.end_value();
                        true
                    }
                    (ObjPhase::Comma, b' ') if !*spaced => {
                        *spaced = true;
                        true
                    }
                    (ObjPhase::Open | ObjPhase::Comma, b'"') => {
                        match props {
                            Some(p) => {
                                if candidates(p, *seen).next().is_none() {
                                    return false;
                                }
                                *phase = ObjPhase::Key;
                                key.clear();
                            }
                            None => {
                                *phase = ObjPhase::Key;
                                self.scan = Scan::Str { key: true, esc: false, cont: 0, lo: 0, hi: 0 };
                            }
                        }
                        true
                    }
                    (ObjPhase::After, b',') => {
                        if let Some(p) = props {
                            if candidates(p, *seen).next().is_none() {
                                return false;
                            }
                        }
                        *phase = ObjPhase::Comma;
                        *spaced = false;
                        true
                    }
                    (ObjPhase::Key, _) => {
                        let p = props.expect("schema objects scan keys themselves");
                        if b == b'"' {
                            match candidates(p, *seen).find(|&i| p[i].0 == *key) {
                                Some(i) => {
                                    *seen |= 1 << i;
                                    *cur = i;
                                    *phase = ObjPhase::Colon;
                                    true
                                }
                                None => false,
                            }
                        } else {
                            key.push(b);
                            candidates(p, *seen).any(|i| p[i].0.starts_with(key))
                        }
                    }
                    (ObjPhase::Colon, b':') => {
                        let value = match props {
                            Some(p) => p[*cur].1,
                            None => ANY,
                        };
                        *phase = ObjPhase::Value;
                        self.scan = Scan::Start { node: value, space: true };
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

/// The properties that may come next in a schema object: those not written yet.
fn candidates(props: &[(Vec<u8>, usize, bool)], seen: u64) -> impl Iterator<Item = usize> + '_ {
    (0..props.len()).filter(move |i| seen >> i & 1 == 0)
}
