//! Compiling a schema: the node types of a grammar, the nodes every grammar has, the compiler
//! (refusing any keyword it does not support, so output always matches what was asked), and the
//! fewest bytes of any value of a node, which the state machine uses to know what still fits.

use serde_json::Value;

/// A compiled schema node (children by index into [`Grammar::nodes`]).
#[derive(Debug, Clone)]
pub(super) enum Node {
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
    pub(super) nodes: Vec<Node>,
    pub(super) root: usize,
}

/// Nodes every grammar has: any value, an object of any values, and the literals of any value.
pub(super) const ANY: usize = 0;
pub(super) const FREE_OBJECT: usize = 1;
pub(super) const ANY_LITERALS: usize = 2;
pub(super) const MAX_DEPTH: usize = 32;

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

    /// Whether every value of the grammar is a JSON object (what tool arguments must be).
    pub fn is_object(&self) -> bool {
        matches!(self.nodes[self.root], Node::FreeObject | Node::Object(_))
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

    /// The fewest bytes of any value of `node`.
    pub(super) fn min_value(&self, node: usize) -> usize {
        match &self.nodes[node] {
            Node::Any | Node::Number | Node::Integer => 1,
            Node::FreeObject | Node::Array(_) | Node::String => 2,
            Node::Object(props) => 2 + self.min_props(props, 0, true),
            Node::Literals(l) => l.iter().map(Vec::len).min().unwrap_or(0),
        }
    }

    /// The fewest bytes of the required properties not in `seen`, each written `,"key":value`
    /// (without the comma for the first when `first`).
    pub(super) fn min_props(&self, props: &[(Vec<u8>, usize, bool)], seen: u64, first: bool) -> usize {
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
