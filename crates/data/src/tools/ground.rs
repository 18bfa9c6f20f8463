//! Grounded arguments: a built-in tool reads what the conversation says, so the values of its
//! arguments are masked at decoding time to spans of the conversation.
//!
//! Why: a 5M-parameter model trained for minutes cannot copy (`tools/copy_probe.py`: it predicts
//! the second copy of a repeated span no better than the first). It picks the right tool and
//! the right operator most of the time, then writes `313 - 19` for "31 - 19", or spells "brawn"
//! when asked to spell "liberty". The field's answer to "the output must have this shape" is
//! constrained decoding (`response_format` here, llama.cpp's grammars); this is the same for one
//! fact about tool calls: an argument is copied, not invented. The model still chooses whether
//! to call, which tool, which of the conversation's numbers and words, in what order, with what
//! operator, and what to answer. It only cannot write a number or a word the conversation does
//! not hold.
//!
//! In order:
//! 1. [`Ground`]: what a conversation grounds: the numbers in its user and tool messages, and
//!    their texts (words and runs of words, as written or in lower case).
//! 2. [`slot`]: where decoding is in the current turn: inside the string value of an argument of
//!    a built-in tool (a calculator `expression`; a `word`, `text` or `letter`, the last one
//!    character long), and the value so far. The `unit` of `length` and client functions' arguments are not grounded.
//! 3. [`Ground::allows`]: whether a token's bytes may come next there. An expression's digit runs
//!    must each be one of the numbers (a run still open must begin one), each copied at most as
//!    often as the conversation writes it: the model wrote `13 - 13` for "Compute 13 - 4" (11 of
//!    the 17 arithmetic misses on val, speedrun SFT model); the rest of it (spaces, operators,
//!    parentheses) is the calculator's alphabet, which its description states (it wrote
//!    `67 * qec`), and its closing quote comes where the expression is whole (`70 * `). A word or text must begin where a word of the conversation
//!    begins and continue it, and may end (its closing quote) only where a word ends. Whatever
//!    follows the closing quote in the same token is not checked. A backslash (an escape) is
//!    never allowed inside a grounded value.
//! 4. The reply after a tool's result ([`Slot::Reply`], chosen by the session: a turn that
//!    follows tool turns and opens no call) grounds its numbers the same way, results included:
//!    the model reported `20006202` for the calculator's `200026302`. What it quotes (between
//!    double quotes) is a span of the conversation, as a word is: it wrote `"stawberry"` for
//!    the word it had just counted, and the spelling the tool gave it back miscopied. Its other
//!    words stay free, and it may end outside a quote once its last number is whole.

use super::Builtin;

/// The longest run of a text's words a grounded value may be, in bytes (a tool's cap).
const MAX_SPAN: usize = super::MAX_TEXT;

/// The numbers and texts a conversation grounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ground {
    /// Distinct numbers as written (`12`, `3.5`), sorted, each with how often it is written.
    numbers: Vec<(String, usize)>,
    /// The texts, one per message, in which spans are found: as written, and lowercased.
    texts: Vec<String>,
    lower: Vec<String>,
}

/// Where a value occurs at word starts: (text, byte) in the texts as written, and in the
/// lowercased texts.
type Starts = (Vec<(usize, usize)>, Vec<(usize, usize)>);

/// Which kind of grounded value decoding is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The calculator's expression: its numbers are the conversation's.
    Expression,
    /// A word or text: a span of the conversation's words.
    Span,
    /// `count_letter`'s letter: a one-character word of the conversation ("r" of "how many
    /// r's"), as its description ("one letter") says; the tool refuses anything longer.
    Letter,
    /// The reply after a tool's result (no call in it): its numbers are the conversation's,
    /// results included, so it reports the result instead of miswriting it, and what it quotes
    /// is a span of the conversation.
    Reply,
}

/// A byte of a word: letters, digits and any non-ASCII byte (an apostrophe ends one, so the
/// letter of "how many r's" is a word of its own).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

impl Ground {
    /// What `texts` (the contents of the user and tool messages) ground.
    pub fn new<S: AsRef<str>>(texts: &[S]) -> Ground {
        let mut g = Ground::default();
        for t in texts {
            g.add(t.as_ref());
        }
        g
    }

    /// Adds a message's text (say, a tool's result later in the answer).
    pub fn add(&mut self, text: &str) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !is_digit(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_digit(b[i]) {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && is_digit(b[i + 1]) {
                i += 1;
                while i < b.len() && is_digit(b[i]) {
                    i += 1;
                }
            }
            let n = &text[start..i];
            match self.numbers.binary_search_by(|(x, _)| x.as_str().cmp(n)) {
                Ok(at) => self.numbers[at].1 += 1,
                Err(at) => self.numbers.insert(at, (n.to_string(), 1)),
            }
        }
        self.texts.push(text.to_string());
        self.lower.push(text.to_lowercase());
    }

    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.texts.iter().all(|t| t.is_empty())
    }

    /// Whether `run` (digits and dots) is one of the numbers, or (`open`) begins one.
    fn number(&self, run: &[u8], open: bool) -> bool {
        self.number_left(run, open, None)
    }

    /// [`Ground::number`] for a number not yet `used` up: with `used` (the numbers an expression
    /// already copied), a number may be copied as often as the conversation writes it.
    fn number_left(&self, run: &[u8], open: bool, used: Option<&[Vec<u8>]>) -> bool {
        let at = self.numbers.partition_point(|(x, _)| x.as_bytes() < run);
        self.numbers[at..].iter().take_while(|(x, _)| x.as_bytes().starts_with(run)).any(|(x, n)| {
            (open || x.as_bytes() == run) && used.is_none_or(|u| u.iter().filter(|y| y.as_slice() == x.as_bytes()).count() < *n)
        })
    }

    /// Where `v` occurs at the start of a word: (text, position) in the texts as written and,
    /// when `v` has no capital, in the lowercased texts ("liberty" for "Liberty", not "spelL"
    /// for "Spell").
    fn starts(&self, v: &[u8]) -> Starts {
        let find = |texts: &[String]| -> Vec<(usize, usize)> {
            let mut at = vec![];
            for (i, t) in texts.iter().enumerate() {
                let t = t.as_bytes();
                for p in 0..t.len() {
                    if is_word(t[p]) && (p == 0 || !is_word(t[p - 1])) && t[p..].starts_with(v) {
                        at.push((i, p));
                    }
                }
            }
            at
        };
        let lower = if v.iter().any(u8::is_ascii_uppercase) { vec![] } else { find(&self.lower) };
        (find(&self.texts), lower)
    }

    /// Whether `v` + `piece` still is a span of at most `most` bytes (ends one, when `piece`
    /// closes the value), given where `v` starts (`starts(v)`).
    fn span_after(&self, v: &[u8], at: &Starts, piece: &[u8], most: usize) -> bool {
        let (part, closed) = match piece.iter().position(|&b| b == b'"') {
            Some(q) => (&piece[..q], true),
            None => (piece, false),
        };
        if part.contains(&b'\\') || v.len() + part.len() > most {
            return false;
        }
        let last = part.last().or(v.last());
        if closed && !last.is_some_and(|&b| is_word(b)) {
            return false;
        }
        let upper = part.iter().any(u8::is_ascii_uppercase);
        let fits = |texts: &[String], at: &[(usize, usize)]| {
            at.iter().any(|&(i, p)| {
                let t = texts[i].as_bytes();
                let end = p + v.len() + part.len();
                t.get(p + v.len()..end).is_some_and(|s| s == part) && (!closed || t.get(end).is_none_or(|&c| !is_word(c)))
            })
        };
        fits(&self.texts, &at.0) || (!upper && fits(&self.lower, &at.1))
    }

    /// Whether `piece` (a token's bytes) may follow `value` (the value so far) in a slot.
    pub fn allows(&self, slot: Slot, value: &str, piece: &[u8]) -> bool {
        self.allowed(slot, value, [piece])[0]
    }

    /// [`Ground::allows`] for many pieces (a vocabulary) after one value: what depends on the
    /// value alone (its open number, where it occurs) is found once.
    pub fn allowed<'p>(&self, slot: Slot, value: &str, pieces: impl IntoIterator<Item = &'p [u8]>) -> Vec<bool> {
        let v = value.as_bytes();
        match slot {
            Slot::Expression => {
                let run = open_run(v);
                let used = closed_runs(v);
                pieces.into_iter().map(|p| self.numbers_after(&run, p, Some(&used)) && closes_whole(v, p)).collect()
            }
            Slot::Reply => match open_quote(v) {
                Some(inner) => {
                    let at = self.starts(inner);
                    pieces.into_iter().map(|p| self.span_after(inner, &at, p, MAX_SPAN)).collect()
                }
                None => {
                    let run = open_run(v);
                    let mut fresh = None;
                    pieces.into_iter().map(|p| self.reply_after(&run, p, &mut fresh)).collect()
                }
            },
            Slot::Span | Slot::Letter => {
                let at = self.starts(v);
                let most = if slot == Slot::Letter { 1 } else { MAX_SPAN };
                pieces.into_iter().map(|p| self.span_after(v, &at, p, most)).collect()
            }
        }
    }

    /// Whether a special token (the end of the turn) may come next in a slot: in a reply, once
    /// its last number is whole.
    pub fn may_end(&self, slot: Slot, value: &str) -> bool {
        let run = open_run(value.as_bytes());
        slot == Slot::Reply && open_quote(value.as_bytes()).is_none() && (run.is_empty() || self.number(&run, false))
    }

    /// Whether `piece` may follow a reply outside quotes whose open digit run is `open`: its
    /// numbers grounded and, where it opens a quote, the quote's start a span's (`fresh` caches
    /// where spans may start).
    fn reply_after(&self, open: &[u8], piece: &[u8], fresh: &mut Option<Starts>) -> bool {
        let Some(q) = piece.iter().position(|&b| b == b'"') else {
            return self.numbers_after(open, piece, None);
        };
        if !self.numbers_after(open, &piece[..=q], None) {
            return false;
        }
        let at = fresh.get_or_insert_with(|| self.starts(b""));
        self.span_after(b"", at, &piece[q + 1..], MAX_SPAN)
    }

    /// Whether `piece` may follow a value whose open digit run is `open`: digit runs grounded.
    /// In an expression (`used`: the numbers it copied before `open`) each number is copied at
    /// most as often as the conversation writes it, the other bytes are the calculator's (spaces,
    /// `.`, `+ - * / ^` and parentheses) and a quote closes the value; in a reply numbers may
    /// repeat, and the rest is free.
    fn numbers_after(&self, open: &[u8], piece: &[u8], used: Option<&[Vec<u8>]>) -> bool {
        let quoted = used.is_some();
        if quoted {
            // The calculator's alphabet, up to the closing quote.
            let body = piece.split(|&b| b == b'"').next().unwrap_or_default();
            if !body.iter().all(|&b| is_digit(b) || b" .+-*/^()".contains(&b)) {
                return false;
            }
        }
        // Most tokens hold no digit: nothing to check after a whole number.
        if open.is_empty() && !piece.iter().any(|&b| is_digit(b) || (quoted && b == b'"')) {
            return true;
        }
        let mut used = used.map(<[Vec<u8>]>::to_vec);
        let mut run = open.to_vec();
        for &b in piece {
            if is_digit(b) || (b == b'.' && !run.is_empty() && self.number_left(&[&run[..], b"."].concat(), true, used.as_deref())) {
                run.push(b);
                if !self.number_left(&run, true, used.as_deref()) {
                    return false;
                }
                continue;
            }
            if quoted && b == b'\\' {
                return false;
            }
            if !run.is_empty() {
                if !self.number_left(&run, false, used.as_deref()) {
                    return false;
                }
                if let Some(u) = used.as_mut() {
                    u.push(std::mem::take(&mut run));
                }
            }
            run.clear();
            if quoted && b == b'"' {
                return true;
            }
        }
        true
    }
}

/// The text of the quote `reply` ends inside (after its last `"`, when it has an odd number).
fn open_quote(reply: &[u8]) -> Option<&[u8]> {
    let quotes = reply.iter().filter(|&&b| b == b'"').count();
    (quotes % 2 == 1).then(|| &reply[reply.iter().rposition(|&b| b == b'"').map_or(0, |q| q + 1)..])
}

/// Whether `piece` after the expression `value` closes it (its quote) only where the expression
/// is whole: it ends with a number or `)`, and its parentheses balance.
fn closes_whole(value: &[u8], piece: &[u8]) -> bool {
    let Some(q) = piece.iter().position(|&b| b == b'"') else { return true };
    let e: Vec<u8> = value.iter().chain(&piece[..q]).copied().filter(|&b| b != b' ').collect();
    let mut depth = 0i32;
    for &b in &e {
        depth += i32::from(b == b'(') - i32::from(b == b')');
        if depth < 0 {
            return false;
        }
    }
    depth == 0 && e.last().is_some_and(|&b| is_digit(b) || b == b')')
}

/// The whole numbers `value` holds, without the digit run it ends with (`open_run`).
fn closed_runs(value: &[u8]) -> Vec<Vec<u8>> {
    let open = open_run(value).len();
    let body = &value[..value.len() - open];
    body.split(|&b| !(is_digit(b) || b == b'.'))
        .map(|r| &r[r.iter().position(|&b| is_digit(b)).unwrap_or(r.len())..])
        .filter(|r| !r.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The digit run `value` ends with (dots inside a number count as part of it).
fn open_run(value: &[u8]) -> Vec<u8> {
    let start = value.iter().rposition(|&b| !(is_digit(b) || b == b'.')).map_or(0, |p| p + 1);
    let tail = &value[start..];
    let lead = tail.iter().position(|&b| is_digit(b)).unwrap_or(tail.len());
    tail[lead..].to_vec()
}

/// The grounded slot decoding is in at the end of `turn` (the current turn's text), with the
/// value written so far; `None` outside one. The turn's last `<tool_call>` must be open, its
/// `"name"` a built-in tool, and the text after it must end inside the string value of one of
/// that tool's grounded arguments.
pub fn slot(turn: &str) -> Option<(Slot, String)> {
    let open = turn.rfind(super::CALL_OPEN)?;
    let body = &turn[open + super::CALL_OPEN.len()..];
    if body.contains(super::CALL_CLOSE) {
        return None;
    }
    // A small JSON scanner: object depth, the key each level is at, the string being read.
    let (mut depth, mut in_str, mut esc, mut is_key, mut expect_key) = (0usize, false, false, false, false);
    let mut keys: Vec<String> = vec![String::new(); 4];
    let (mut buf, mut name) = (String::new(), None::<String>);
    for c in body.chars() {
        if in_str {
            match (esc, c) {
                (true, _) => {
                    buf.push(c);
                    esc = false;
                }
                (false, '\\') => esc = true,
                (false, '"') => {
                    in_str = false;
                    if is_key {
                        if depth < keys.len() {
                            keys[depth] = std::mem::take(&mut buf);
                        }
                    } else if depth == 1 && keys[1] == "name" {
                        name = Some(std::mem::take(&mut buf));
                    }
                }
                (false, _) => buf.push(c),
            }
            continue;
        }
        match c {
            '{' => {
                depth += 1;
                expect_key = true;
                if depth < keys.len() {
                    keys[depth].clear();
                }
            }
            '}' => {
                depth = depth.saturating_sub(1);
                expect_key = false;
            }
            '[' | ']' => expect_key = false,
            ':' => expect_key = false,
            ',' => expect_key = true,
            '"' => {
                in_str = true;
                buf.clear();
                is_key = expect_key;
            }
            _ => {}
        }
    }
    if !in_str || is_key || esc || depth != 2 || keys[1] != "arguments" {
        return None;
    }
    let tool = Builtin::from_name(name.as_deref()?)?;
    let slot = match (tool, keys[2].as_str()) {
        (Builtin::Calculator, "expression") => Slot::Expression,
        (Builtin::CountLetter, "letter") => Slot::Letter,
        (Builtin::CountLetter, "word") | (Builtin::Spell, "word") | (Builtin::Length, "text") => Slot::Span,
        _ => return None,
    };
    Some((slot, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALC: &str = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"";

    #[test]
    fn finds_the_slot_and_the_value_so_far() {
        assert_eq!(slot(&format!("{CALC}31 - 1")), Some((Slot::Expression, "31 - 1".into())));
        assert_eq!(slot(CALC), Some((Slot::Expression, String::new())));
        let spell = "Sure.\n<tool_call>\n{\"name\": \"spell\", \"arguments\": {\"word\": \"lib";
        assert_eq!(slot(spell), Some((Slot::Span, "lib".into())));
        let count = "<tool_call>\n{\"name\": \"count_letter\", \"arguments\": {\"word\": \"purg\", \"letter\": \"";
        assert_eq!(slot(count), Some((Slot::Letter, String::new())));
        // Not in a grounded value: a key, the unit, a client function, a closed call, no call.
        assert_eq!(slot("<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expre"), None);
        assert_eq!(slot("<tool_call>\n{\"name\": \"length\", \"arguments\": {\"text\": \"a b\", \"unit\": \"wo"), None);
        assert_eq!(slot("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Ver"), None);
        assert_eq!(slot(&format!("{CALC}1 + 2\"}}}}\n</tool_call>")), None);
        assert_eq!(slot(&format!("{CALC}1 + 2\"}}")), None);
        assert_eq!(slot("12 + 7 = \"19"), None);
        // An escape inside the value.
        assert_eq!(slot(&format!("{CALC}1 \\")), None);
    }

    #[test]
    fn expressions_use_the_conversations_numbers() {
        let g = Ground::new(&["Ben has 52 books and gives away 47. What is 3.5 times 2?"]);
        let ok = |v: &str, p: &str| g.allows(Slot::Expression, v, p.as_bytes());
        assert!(ok("", "5") && ok("5", "2") && ok("52", " -") && ok("52 - ", "47") && ok("52 - 47", "\"}"));
        assert!(!ok("52", "7"), "527 is not in the conversation");
        assert!(!ok("5", " +"), "5 alone is not one of its numbers");
        assert!(!ok("52 - 4", "\""), "the value cannot end inside 47");
        assert!(ok("3", ".") && ok("3.", "5") && ok("3.5 * ", "2") && !ok("3.5 * ", "9"));
        assert!(ok("(52 - 47) ", "* 2") && ok("", "(") && !ok("", "\\"));
        assert!(!ok("52 * ", "q") && !ok("52", "x") && !ok("52 ", "=") && ok("52 - 47 ", "^ ("), "the calculator's alphabet");
        assert!(!ok("52 * ", "\"") && !ok("(52 - 47", "\"}") && !ok("", "\"") && ok("(52 - 47)", "\"}"), "closed where whole");
        // After the closing quote nothing is checked.
        assert!(ok("52", "\"}}\n7"));
    }

    #[test]
    fn words_and_texts_are_spans_of_the_conversation() {
        let g = Ground::new(&["Please help. How many words are in \"If not, our swords shall plead it\"?", "Spell Liberty."]);
        let ok = |v: &str, p: &str| g.allows(Slot::Span, v, p.as_bytes());
        assert!(ok("", "lib") && ok("lib", "erty") && ok("liberty", "\"}") && ok("", "Lib"), "as written or in lower case");
        assert!(!ok("", "LIB") && !ok("spel", "L") && ok("", "Spell") && ok("", "spell"));
        assert!(!ok("lib", "\""), "ends inside a word");
        assert!(!ok("", "erty"), "begins inside a word");
        assert!(!ok("", "brawn") && !ok("b", "r"));
        assert!(ok("if not, our swords shall plead", " it") && ok("if not, our swords shall plead it", "\""));
        assert!(!ok("if not", "\\"));
        assert!(ok("", "s") && !ok("s", "\""), "'swords' begins with s, but s is no word of its own here");
        let letters = Ground::new(&["How many r's are in \"strawberry\"?", "Count the letter \"p\" in purg."]);
        assert!(letters.allows(Slot::Letter, "r", b"\"") && letters.allows(Slot::Letter, "", b"p\""));
        assert!(
            !letters.allows(Slot::Letter, "", b"q\"")
                && !letters.allows(Slot::Letter, "", b"st")
                && !letters.allows(Slot::Letter, "s", b"t")
        );
        assert!(letters.allows(Slot::Span, "", b"st"), "a word may be longer");
    }

    #[test]
    fn a_reply_after_a_result_quotes_its_numbers() {
        let mut g = Ground::new(&["Multiply 69526 by 2877."]);
        g.add("200026302");
        let ok = |v: &str, p: &str| g.allows(Slot::Reply, v, p.as_bytes());
        assert!(ok("69526 * 2877 = ", "200") && ok("69526 * 2877 = 200026302", ".") && ok("\"quoted\" ", "2877"));
        assert!(!ok("69526 * 2877 = 200", "06") && !ok("69526 * 2877 = 2000", " apples"));
        assert!(g.may_end(Slot::Reply, "So 200026302") && g.may_end(Slot::Reply, "Done.") && !g.may_end(Slot::Reply, "So 2000"));
        assert!(!g.may_end(Slot::Expression, ""));
    }

    #[test]
    fn a_reply_after_a_result_quotes_the_conversation() {
        let mut g = Ground::new(&["Spell \"castle\", please."]);
        g.add("c-a-s-t-l-e");
        let ok = |v: &str, p: &str| g.allows(Slot::Reply, v, p.as_bytes());
        assert!(ok("", "\"") && ok("\"", "c") && ok("\"c", "-a") && ok("\"c-a", "-s") && ok("\"c", "astle\""));
        assert!(ok("It is \"c-a-s-t-l-e", "\".") && ok("\"castle\" is ", "\"c"));
        assert!(!ok("\"c-a", "-t") && !ok("\"c", "-s") && !ok("", "\"cast\"") && !ok("\"", "q"), "a miscopy");
        assert!(!ok("\"cas", "\"") && !ok("", "\"\""), "a quote ends where a word ends, and holds one");
        assert!(ok("", "\"Spell") && !ok("", "\"spelL"));
        assert!(!g.may_end(Slot::Reply, "It is \"c-a-s") && g.may_end(Slot::Reply, "It is \"c-a-s\""));
    }

    #[test]
    fn an_expression_copies_each_number_as_often_as_it_is_written() {
        let g = Ground::new(&["Compute 13 - 4, then add 13 and 130."]);
        let ok = |v: &str, p: &str| g.allows(Slot::Expression, v, p.as_bytes());
        assert!(ok("13 - ", "4") && ok("13 - 4 + ", "13") && ok("13 + 13 + ", "130\""));
        assert!(!ok("13 + 13 + ", "13\"") && !ok("13 + 13 + 130 + ", "13"), "13 is written twice, and 130 is not 13");
        assert!(!ok("4 * ", "4") && !ok("4 * ", "4\"}") && ok("(4) + ", "1"), "4 is written once");
        let mut h = Ground::new(&["What is 7 times 7?"]);
        assert!(h.allows(Slot::Expression, "7 * ", b"7"));
        h.add("49");
        assert!(h.allows(Slot::Expression, "", b"49") && !h.allows(Slot::Expression, "49 - 49 + ", b"49"));
        // A reply may restate the numbers.
        assert!(g.allows(Slot::Reply, "4 * 4 = 16, and ", b"4"));
    }

    #[test]
    fn tool_results_add_numbers() {
        let mut g = Ground::new(&["What is 12 plus 7, times 3?"]);
        assert!(!g.allows(Slot::Expression, "", b"19"));
        g.add("19");
        assert!(g.allows(Slot::Expression, "", b"19") && g.allows(Slot::Expression, "19 * ", b"3\""));
    }
}
