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
//!
//! # Layout
//! `schema` compiles a `response_format` (a JSON schema, or any JSON object) into a [`Grammar`];
//! `state` is the byte-level state machine that walks it ([`JsonState`]: which bytes may come
//! next, and the fewest bytes that finish the text); `decode` applies it to the vocabulary at
//! every step ([`JsonConstraint`] masks the logits, with the [`TokenTable`] of token bytes). The
//! tests, here, run grammars and states together. `call` wraps argument grammars into the text
//! of a tool call (`<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`, [`CallConstraint`]).

mod call;
mod decode;
mod schema;
mod state;

pub use call::{CallConstraint, CallGrammar, OPEN as CALL_OPEN};
pub use decode::{JsonConstraint, TokenTable};
pub use schema::Grammar;
pub use state::JsonState;

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

    /// The trie walk masks exactly what trying every token from the start does, at every prefix
    /// of a JSON output and of a tool call, with tight and loose budgets.
    #[test]
    fn trie_mask_equals_trying_every_token() {
        let mut vocab: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b]).collect();
        for t in [
            "{\"", "\":", "\": ", "name", "\"name", "age", "true", "tr", "fal", "12", "3.5", ", \"", "\"}", "}\n", "<tool", "_call",
            ">\n{", "calc", "ulator", "\"a", "ab", "",
        ] {
            vocab.push(t.as_bytes().to_vec());
        }
        let mut special = vec![false; vocab.len()];
        special[b'q' as usize] = true;
        let table = TokenTable::new(vocab.clone(), special.clone());
        let end = vocab.len() as u32 - 1;
        let schema =
            json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "number"}}, "required": ["name", "age"]});
        let g = std::sync::Arc::new(Grammar::from_schema(&schema).unwrap());
        let brute = |ok: &dyn Fn(usize) -> bool, complete: bool| -> Vec<bool> {
            let mut w: Vec<bool> =
                (0..vocab.len()).map(|i| (!special[i] && !vocab[i].is_empty() && ok(i)) || (complete && i as u32 == end)).collect();
            // With nothing allowed, the mask lets the end token through.
            if !w.contains(&true) {
                w[end as usize] = true;
            }
            w
        };
        let text = r#"{"name": "ab", "age": 12}"#;
        for cut in 0..=text.len() {
            let mut c = JsonConstraint::new(g.clone());
            c.advance(&text.as_bytes()[..cut]);
            for left in [3, 40] {
                let mut logits = vec![0.0f32; vocab.len()];
                c.mask(&mut logits, &table, left, end);
                let want = brute(
                    &|i| {
                        let mut s = c.state.clone();
                        s.feed(&g, &vocab[i]) && s.min_remaining(&g) < left
                    },
                    c.state.complete(&g),
                );
                let got: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
                assert_eq!(got, want, "json after {cut} bytes, {left} tokens left");
                // One token's check keeps what the mask keeps (but for the mask's fallback,
                // the end token where nothing is allowed).
                let alone: Vec<bool> = (0..vocab.len() as u32).map(|t| c.allows(&table, t, left, end)).collect();
                assert!(alone == got || !alone.contains(&true), "json allows after {cut} bytes, {left} tokens left");
            }
        }
        let calls = std::sync::Arc::new(CallGrammar::new(vec![("calculator".into(), g.clone())]));
        let call = format!("{CALL_OPEN}calculator\", \"arguments\": {text}}}\n</tool_call>");
        for cut in 0..=call.len() {
            let mut c = CallConstraint::forced(calls.clone());
            assert!(c.feed(&call.as_bytes()[..cut]));
            for left in [4, 80] {
                let mut logits = vec![0.0f32; vocab.len()];
                c.mask(&mut logits, &table, left, end);
                let want = brute(
                    &|i| {
                        let mut s = c.clone();
                        !c.done() && s.feed(&vocab[i]) && s.min_remaining() < left
                    },
                    c.done(),
                );
                let got: Vec<bool> = logits.iter().map(|l| l.is_finite()).collect();
                assert_eq!(got, want, "call after {cut} bytes, {left} tokens left");
                let alone: Vec<bool> = (0..vocab.len() as u32).map(|t| c.allows(&table, t, left, end)).collect();
                assert!(alone == got || !alone.contains(&true), "call allows after {cut} bytes, {left} tokens left");
            }
        }
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

    #[test]
    fn tool_calls_follow_names_and_argument_schemas() {
        use std::sync::Arc;
        let weather =
            Grammar::from_schema(&json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})).unwrap();
        let calc = Grammar::from_schema(&json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})).unwrap();
        let g = Arc::new(CallGrammar::new(vec![("get_weather".into(), Arc::new(weather)), ("get".into(), Arc::new(calc))]));
        let run = |c: &mut CallConstraint, text: &str| c.feed(text.as_bytes()) && c.done();
        let ok = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Verona\"}}\n</tool_call>";
        assert!(run(&mut CallConstraint::forced(g.clone()), ok));
        assert!(run(&mut CallConstraint::forced(g.clone()), "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"n\": 3}}\n</tool_call>"));
        for bad in [
            "<tool_call>\n{\"name\": \"got\"",
            "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"city\": \"x\"}}",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}",
            "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"n\": 1.5}}",
            "<tool_call>{",
        ] {
            let mut c = CallConstraint::forced(g.clone());
            assert!(!c.feed(bad.as_bytes()), "{bad}");
        }
        // After the opening, as in `auto`.
        let mut c = CallConstraint::after_open(g.clone());
        assert!(run(&mut c, "get\", \"arguments\": {\"n\": 12}}\n</tool_call>"));
        // The shortest call, and every prefix of a call has a byte that shortens what is left.
        let shortest = "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"n\":0}}\n</tool_call>";
        assert_eq!(g.min_len(), shortest.len());
        let mut c = CallConstraint::forced(g.clone());
        let mut steps = 0;
        while !c.done() {
            let m = c.min_remaining();
            c = (0u8..=127)
                .find_map(|b| {
                    let mut t = c.clone();
                    (t.feed(&[b]) && t.min_remaining() == m - 1).then_some(t)
                })
                .expect("a byte shortens the call");
            steps += 1;
        }
        assert_eq!(steps, shortest.len());
    }
}
