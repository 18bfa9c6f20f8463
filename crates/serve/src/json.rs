//! Constrained decoding for `response_format`: a byte-level JSON state machine, optionally shaped
//! by a JSON schema, that says which tokens may come next.
//!
//! At each step every token of the vocabulary is tried against a copy of the state: its bytes must
//! keep the output a prefix of a JSON text the schema allows, and the shortest way to finish the
//! text from there must still fit in the tokens left (`max_tokens`). The logits of all other tokens
//! are set to −∞ before sampling. Since a byte-level BPE has a token for every byte, the shortest
//! completion can always be spelt byte by byte, so the output always parses and matches the schema
//! when generation ends, whatever the model wants to say. Once the text is complete, only
//! `<|im_end|>` is allowed.
//!
//! The output is compact JSON (one optional space after `:` and `,`). Supported schema keywords:
//! `type` (`object`, `array`, `string`, `number`, `integer`, `boolean`, `null`), `properties`,
//! `required`, `items`, `enum` (of any JSON values); `title`, `description`, `additionalProperties`
//! (treated as false: only the listed properties are produced, each at most once, in any order), `$schema` and
//! `strict` are accepted and ignored. Anything else (`anyOf`, `$ref`, `pattern`, ...) is rejected so
//! that a request never gets output that does not match the schema it sent. Strings use the
//! escapes `\" \\ \/ \b \f \n \r \t` (no `\u`: the model writes UTF-8 directly).

use serde_json::Value;

/// A compiled schema node (children by index into [`Grammar::nodes`]).
#[derive(Debug, Clone)]
enum Node {
    /// Any JSON value.
    Any,
    /// An object with any keys and `Any` values.
    FreeObject,
    /// An object with these properties, in this order: (escaped key bytes, value node, required).
    Object(Vec<(Vec<u8>, usize, bool)>),
    Array(usize),
    String,
    Number,
    Integer,
    /// One of these exact JSON texts (`true`, `"red"`, `null`, `3`).
    Literals(Vec<Vec<u8>>),
}

/// What `response_format` asks for, compiled.
#[derive(Debug, Clone)]
pub struct Grammar {
    nodes: Vec<Node>,
    root: usize,
}

/// Nodes every grammar has: any value, an object of any values, and the literals of any value.
const ANY: usize = 0;
const FREE_OBJECT: usize = 1;
const ANY_LITERALS: usize = 2;
const MAX_DEPTH: usize = 32;

impl Grammar {
    fn base() -> Grammar {
        let lits = Node::Literals(vec![b"true".to_vec(), b"false".to_vec(), b"null".to_vec()]);
        Grammar { nodes: vec![Node::Any, Node::FreeObject, lits], root: ANY }
    }

    /// `{"type": "json_object"}`: any JSON object.
    pub fn json_object() -> Grammar {
        Grammar { root: FREE_OBJECT, ..Grammar::base() }
    }

    /// `{"type": "json_schema", "json_schema": {"schema": ...}}`. The error names what is wrong.
    pub fn from_schema(schema: &Value) -> Result<Grammar, String> {
        let mut g = Grammar::base();
        g.root = g.compile(schema, "schema", 0)?;
        Ok(g)
    }

    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn compile(&mut self, s: &Value, at: &str, depth: usize) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{at}: the schema nests deeper than {MAX_DEPTH}"));
        }
        let obj = match s {
            Value::Bool(true) => return Ok(ANY),
            Value::Object(o) => o,
            _ => return Err(format!("{at}: a schema must be an object")),
        };
        const IGNORED: &[&str] = &["title", "description", "additionalProperties", "$schema", "strict", "default", "examples"];
        const KNOWN: &[&str] = &["type", "properties", "required", "items", "enum"];
        if let Some(k) = obj.keys().find(|k| !IGNORED.contains(&k.as_str()) && !KNOWN.contains(&k.as_str())) {
            return Err(format!("{at}: the schema keyword \"{k}\" is not supported (supported: type, properties, required, items, enum)"));
        }
        if let Some(e) = obj.get("enum") {
            let vals = e.as_array().filter(|a| !a.is_empty()).ok_or_else(|| format!("{at}.enum: must be a non-empty array"))?;
            if vals.len() > 64 {
                return Err(format!("{at}.enum: at most 64 values are supported"));
            }
            let lits = vals.iter().map(|v| serde_json::to_vec(v).expect("a Value serializes")).collect();
            return Ok(self.push(Node::Literals(lits)));
        }
        let ty = match obj.get("type") {
            None => return Ok(if obj.contains_key("properties") { self.compile_object(obj, at, depth)? } else { ANY }),
            Some(Value::String(t)) => t.as_str(),
            Some(_) => return Err(format!("{at}.type: must be one type name (type lists are not supported)")),
        };
        Ok(match ty {
            "object" => self.compile_object(obj, at, depth)?,
            "array" => {
                let item = match obj.get("items") {
                    Some(i) => self.compile(i, &format!("{at}.items"), depth + 1)?,
                    None => ANY,
                };
                self.push(Node::Array(item))
            }
            "string" => self.push(Node::String),
            "number" => self.push(Node::Number),
            "integer" => self.push(Node::Integer),
            "boolean" => self.push(Node::Literals(vec![b"true".to_vec(), b"false".to_vec()])),
            "null" => self.push(Node::Literals(vec![b"null".to_vec()])),
            other => return Err(format!("{at}.type: unknown type \"{other}\"")),
        })
    }

    fn compile_object(&mut self, obj: &serde_json::Map<String, Value>, at: &str, depth: usize) -> Result<usize, String> {
        let Some(props) = obj.get("properties") else { return Ok(self.push(Node::FreeObject)) };
        let props = props.as_object().ok_or_else(|| format!("{at}.properties: must be an object"))?;
        let required: Vec<&str> = match obj.get("required") {
            None => vec![],
            Some(Value::Array(r)) => {
                r.iter().map(|k| k.as_str().ok_or_else(|| format!("{at}.required: must list strings"))).collect::<Result<_, _>>()?
            }
            Some(_) => return Err(format!("{at}.required: must be an array")),
        };
        if let Some(k) = required.iter().find(|k| !props.contains_key(**k)) {
            return Err(format!("{at}.required: \"{k}\" is not among the properties"));
        }
        if props.len() > 64 {
            return Err(format!("{at}.properties: at most 64 properties are supported"));
        }
        let mut out = Vec::new();
        for (k, v) in props {
            let node = self.compile(v, &format!("{at}.properties.{k}"), depth + 1)?;
            let esc = serde_json::to_vec(&Value::String(k.clone())).expect("a string serializes");
            out.push((esc[1..esc.len() - 1].to_vec(), node, required.contains(&k.as_str())));
        }
        Ok(self.push(Node::Object(out)))
    }

    pub fn start(&self) -> JsonState {
        JsonState { stack: vec![], scan: Scan::Start { node: self.root, space: false }, done: false }
    }

    /// The fewest bytes of any value of `node`.
    fn min_value(&self, node: usize) -> usize {
        match &self.nodes[node] {
            Node::Any | Node::Number | Node::Integer => 1,
            Node::FreeObject | Node::Array(_) | Node::String => 2,
            Node::Object(props) => 2 + self.min_props(props, 0, true),
            Node::Literals(l) => l.iter().map(Vec::len).min().unwrap_or(0),
        }
    }

    /// The fewest bytes of the required properties not in `seen`, each written `,"key":value`
    /// (without the comma for the first when `first`).
    fn min_props(&self, props: &[(Vec<u8>, usize, bool)], seen: u64, first: bool) -> usize {
        let mut n = 0;
        let mut first = first;
        for (i, (k, v, req)) in props.iter().enumerate() {
            if *req && seen >> i & 1 == 0 {
                n += usize::from(!first) + k.len() + 3 + self.min_value(*v);
                first = false;
            }
        }
        n
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

/// The vocabulary as byte strings, for trying tokens against a [`JsonState`].
pub struct TokenTable {
    pub bytes: Vec<Vec<u8>>,
    pub special: Vec<bool>,
}

/// The grammar of a request with its state, and the tokens the model may emit next.
#[derive(Clone)]
pub struct Constraint {
    pub grammar: std::sync::Arc<Grammar>,
    pub state: JsonState,
}

impl Constraint {
    pub fn new(grammar: std::sync::Arc<Grammar>) -> Constraint {
        let state = grammar.start();
        Constraint { grammar, state }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn accepts(g: &Grammar, text: &str) -> bool {
        let mut s = g.start();
        s.feed(g, text.as_bytes()) && s.complete(g)
    }

    #[test]
    fn json_object_accepts_objects_only() {
        let g = Grammar::json_object();
        for ok in [r#"{}"#, r#"{"a": 1, "b": [true, null, -0.5e3, "x\n"], "c": {"d": {}}}"#, r#"{"é": "ü"}"#] {
            assert!(accepts(&g, ok), "{ok}");
        }
        for bad in [r#"[]"#, r#"{"a" 1}"#, r#"{"a":01}"#, r#"{"a":tru}"#, r#"{"a":"\u0041"}"#, r#"{,}"#, r#" {}"#, r#"{"a":1,}"#] {
            assert!(!accepts(&g, bad), "{bad}");
        }
    }

    #[test]
    fn schema_fixes_keys_types_and_required() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
            "ok": {"type": "boolean"}}, "required": ["name", "age"]});
        let g = Grammar::from_schema(&schema).unwrap();
        assert!(accepts(&g, r#"{"name":"Ann","age":3}"#));
        assert!(accepts(&g, r#"{"name": "Ann", "age": 3, "tags": ["a", "b"], "ok": false}"#));
        assert!(accepts(&g, r#"{"name":"Ann","age":3,"ok":true}"#));
        assert!(!accepts(&g, r#"{"name":"Ann"}"#), "missing required key");
        assert!(accepts(&g, r#"{"age":3,"name":"Ann"}"#), "any order");
        assert!(!accepts(&g, r#"{"age":3,"name":"Ann","age":4}"#), "a key twice");
        assert!(!accepts(&g, r#"{"name":"Ann","age":3.5}"#), "integer");
        assert!(!accepts(&g, r#"{"name":"Ann","age":3,"tags":["c"]}"#), "enum");
        assert!(!accepts(&g, r#"{"name":"Ann","age":3,"x":1}"#), "unknown key");
        assert_eq!(g.start().min_remaining(&g), r#"{"name":"","age":0}"#.len());
        assert!(Grammar::from_schema(&json!({"anyOf": []})).is_err());
        assert!(Grammar::from_schema(&json!({"enum": (0..65).collect::<Vec<_>>()})).is_err());
        assert!(Grammar::from_schema(&json!({"type": "object", "required": ["x"], "properties": {}})).is_err());
    }

    #[test]
    fn top_level_scalars() {
        let g = Grammar::from_schema(&json!({"enum": [1, 10, "x"]})).unwrap();
        assert!(accepts(&g, "1") && accepts(&g, "10") && accepts(&g, "\"x\""));
        assert!(!accepts(&g, "11") && !accepts(&g, "\"y\""));
        let g = Grammar::from_schema(&json!({"type": "number"})).unwrap();
        assert!(accepts(&g, "-12.5e3") && !accepts(&g, "-") && !accepts(&g, "1."));
    }

    #[test]
    fn min_remaining_is_a_shortest_completion() {
        // From any prefix, some single byte lowers the count by one, down to a complete value.
        let g = Grammar::from_schema(&json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"}},
            "b": {"type": "object", "properties": {"c": {"type": "null"}}, "required": ["c"]}}, "required": ["a", "b"]}))
        .unwrap();
        let opt = Grammar::from_schema(&json!({"type": "object", "properties": {"n": {"type": "string"}, "pet": {"type": "object",
            "properties": {"alive": {"type": "boolean"}}, "required": ["alive"]}}, "required": ["n"]}))
        .unwrap();
        let mut s = opt.start();
        assert!(s.feed(&opt, br#"{"n":"x","#));
        assert_eq!(s.min_remaining(&opt), r#""pet":{"alive":true}}"#.len(), "after a comma an optional property must follow");
        for prefix in ["", "{", r#"{"a"#, r#"{"a":[1"#, r#"{"a":[1,"#, r#"{"a":[-"#, r#"{"a":[],"b":{"c":n"#, r#"{"a":[],"#] {
            let mut s = g.start();
            assert!(s.feed(&g, prefix.as_bytes()), "{prefix}");
            let mut steps = 0;
            while !s.complete(&g) {
                let m = s.min_remaining(&g);
                let next = (0u8..=127)
                    .map(|b| (b, s.clone()))
                    .find_map(|(b, mut t)| (t.feed(&g, &[b]) && t.min_remaining(&g) == m - 1).then_some(t));
                s = next.unwrap_or_else(|| panic!("no byte shortens {prefix} (min {m})"));
                steps += 1;
                assert!(steps < 100);
            }
        }
    }
}
