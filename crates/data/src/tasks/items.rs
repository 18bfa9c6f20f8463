//! Question-and-answer items of the first three families (Shakespeare, spelling and counting,
//! arithmetic), and the pools of held-out material they are drawn from. The system-message and
//! multi-turn families wrap these items.

use std::collections::{HashMap, HashSet};

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::check::Check;
use super::corpus::{Corpus, MILTON, SHAKESPEARE};
use super::phrasings::{self, ADD, CHAR_COUNT, LETTER_COUNT, MUL, SPELL, SUB, WORD_COUNT, WORD_LENGTH};
use super::{identity, pick, pick_weighted, refusal, unknown, Draft, Holdout, Split, Work};
use crate::chat::{Message, ToolCall};
use crate::tools::{run_builtin, Builtin, TOOLS_OFF};

/// A question, its reference answer, and the pieces the other families reuse.
#[derive(Clone, Debug)]
pub(super) struct Item {
    pub kind: &'static str,
    pub keys: Vec<String>,
    pub question: String,
    pub answer: String,
    pub check: Check,
    /// The short answer: what `{"answer": ...}` holds.
    pub value: Value,
    pub value_check: Check,
    /// The item's own JSON schema: key, value, check of the value.
    pub fields: Vec<(&'static str, Value, Check)>,
    /// The answer in one word, where one word can say it.
    pub one_word: Option<String>,
    /// What the question is about, as a user would name it ("Comus", "\"castle\""), for
    /// "Sorry, I meant ..." corrections between items of the same kind.
    pub subject: Option<String>,
    /// A plausible wrong answer in the style of `answer`, and the term that marks it wrong.
    pub wrong: Option<(String, Option<String>)>,
    /// The built-in tool call that answers the question, where one does (arithmetic, spelling
    /// and counting): the demonstrations call it, then answer from its result.
    pub tool: Option<ToolDemo>,
}

/// A call of a built-in tool that answers an item, and the answer written from its result.
#[derive(Clone, Debug)]
pub(super) struct ToolDemo {
    pub name: &'static str,
    /// JSON text, keys in the order the model learns to write them.
    pub arguments: String,
    /// The answer given the tool's result.
    pub answer: String,
    /// Whether some demonstrations show the tools off (then the answer is `Item::answer`); not
    /// where that answer would not be right.
    pub may_be_off: bool,
}

/// Share of tool demonstrations in which the tools are off: the call is answered with
/// [`TOOLS_OFF`] and the assistant answers by itself (`Item::answer`), as it must when a
/// deployment gives it no tools.
const TOOLS_OFF_SHARE: f64 = 0.15;

impl Item {
    pub fn into_draft(self, rng: &mut ChaCha8Rng) -> Draft {
        let messages = self.exchange(rng);
        Draft { kind: self.kind.to_string(), keys: self.keys, messages, check: self.check }
    }

    /// The question and the reply to it ([`Item::reply`]).
    pub fn exchange(&self, rng: &mut ChaCha8Rng) -> Vec<Message> {
        let mut messages = vec![Message::user(&self.question)];
        messages.extend(self.reply(rng, 1));
        messages
    }

    /// The assistant's reply: the answer, or, for an item with a tool, the call (id
    /// `call_{id}`), its result and the answer from it (or, in [`TOOLS_OFF_SHARE`] of them, the
    /// tools-off error and the answer without tools).
    pub fn reply(&self, rng: &mut ChaCha8Rng, id: usize) -> Vec<Message> {
        let Some(tool) = &self.tool else { return vec![Message::assistant(&self.answer)] };
        let id = format!("call_{id}");
        let call = ToolCall::new(&id, tool.name, &tool.arguments);
        let (result, answer) = if tool.may_be_off && rng.random_bool(TOOLS_OFF_SHARE) {
            (TOOLS_OFF.to_string(), self.answer.clone())
        } else {
            (run_builtin(tool.name, &tool.arguments).expect("a demonstration's call runs"), tool.answer.clone())
        };
        vec![Message::assistant_calls("", vec![call]), Message::tool(id, result), Message::assistant(answer)]
    }

    /// The item answered by `tool` with `arguments` (given as JSON, kept in their order).
    pub fn with_tool(self, tool: Builtin, arguments: &[(&str, &str)], answer: impl Fn(&str) -> String) -> Item {
        let arguments = format!(
            "{{{}}}",
            arguments.iter().map(|(k, v)| format!("{}: {}", Value::from(*k), Value::from(*v))).collect::<Vec<_>>().join(", ")
        );
        let result = run_builtin(tool.name(), &arguments).expect("a demonstration's call runs");
        let answer = answer(&result);
        Item { tool: Some(ToolDemo { name: tool.name(), arguments, answer, may_be_off: true }), ..self }
    }
}

/// A calculator call for `expression` (id `call_{id}`), its result and the answer
/// `expression = result.`
pub(super) fn calculator_reply(expression: &str, id: usize) -> Vec<Message> {
    let id = format!("call_{id}");
    let arguments = format!("{{\"expression\": {}}}", Value::from(expression));
    let result = run_builtin(Builtin::Calculator.name(), &arguments).expect("a demonstration's call runs");
    vec![
        Message::assistant_calls("", vec![ToolCall::new(&id, Builtin::Calculator.name(), arguments)]),
        Message::tool(id, &result),
        Message::assistant(format!("{expression} = {result}.")),
    ]
}

/// Whether a reply shows the tools off.
pub(super) fn tools_were_off(reply: &[Message]) -> bool {
    reply.iter().any(|m| m.role == crate::chat::Role::Tool && m.content == TOOLS_OFF)
}

/// The phrasings of this split: question templates are held out like the other small pools
/// (60/20/20 by the suite's seed, keyed `phrasing:<template>`), so the test split asks in
/// words that training never used.
fn phrasings<'t>(pools: &Pools, templates: &'t [&'static str]) -> Vec<&'t &'static str> {
    let cut = pools.holdout.cut(templates, |t| format!("phrasing:{t}"));
    let mut out = cut.get(&pools.split).cloned().unwrap_or_default();
    out.sort_unstable();
    out
}

/// A frame of this split with its fillers, then `{a}`, `{b}`, ... replaced, maybe wrapped
/// (`phrasings::wrap`), and the frame's held-out key.
fn phrase_in_split(pools: &Pools, rng: &mut ChaCha8Rng, frames: &[&'static str], args: &[(&str, &str)]) -> (String, String) {
    let t = **pick(rng, &phrasings(pools, frames)).expect("every split has phrasings");
    let mut q = phrasings::fill(t, rng);
    for (k, v) in args {
        q = q.replace(&format!("{{{k}}}"), v);
    }
    (phrasings::wrap(q, rng), format!("phrasing:{t}"))
}

/// A unique line of a play with a named speaker.
#[derive(Clone, Debug)]
pub(super) struct Quote {
    pub line: String,
    pub speaker: String,
    pub play: usize,
    pub act: u8,
    pub key: String,
    /// The next line of the same speech, if it is a good quotation too.
    pub next: Option<String>,
}

/// A character who speaks in exactly one play.
#[derive(Clone, Debug)]
pub(super) struct Character {
    pub name: String,
    pub play: usize,
    pub key: String,
}

/// The material of one split.
pub(super) struct Pools<'a> {
    pub split: Split,
    pub corpus: &'a Corpus,
    holdout: &'a Holdout,
    pub quotes: Vec<Quote>,
    pub characters: Vec<Character>,
    pub works: Vec<&'a Work>,
    pub words: Vec<String>,
    pub phrases: Vec<String>,
    pub harmful: Vec<refusal::Harmful>,
    pub benign: Vec<&'static refusal::Benign>,
    pub identity: Vec<&'static identity::Question>,
    /// Named characters of each play with at least 3 speeches.
    pub cast: Vec<Vec<String>>,
    /// Prompt-injection templates a system message may meet (none in the SFT pool).
    pub injections: Vec<&'static str>,
    /// Whether this is the SFT pool, the only one with client-declared function calls.
    pub sft: bool,
    /// Whether a refusal-family prompt takes any of the openings ("Hi! ", "Quick question: ",
    /// ...) rather than its one fixed by hash: the RL pool's, whose refusal items the SFT and
    /// preference pools would otherwise use up (see `refusal::generate`).
    pub vary_openings: bool,
}

/// English words beyond the plays, so the counting tasks cover today's words too.
const MODERN_WORDS: &[&str] = &[
    "strawberry",
    "banana",
    "computer",
    "keyboard",
    "elephant",
    "mississippi",
    "bookkeeper",
    "balloon",
    "coffee",
    "pepper",
    "bottle",
    "committee",
    "assessment",
    "necessary",
    "parallel",
    "raccoon",
    "accommodate",
    "giraffe",
    "butterfly",
    "chocolate",
    "umbrella",
    "library",
    "calendar",
    "tomorrow",
    "dinosaur",
    "pizza",
    "rhythm",
    "broccoli",
    "spaghetti",
    "hippopotamus",
    "penguin",
    "window",
    "kitten",
    "puppy",
    "address",
    "success",
    "possess",
    "tennessee",
    "bubble",
    "grammar",
    "language",
    "apple",
    "orange",
    "lemon",
    "cherry",
    "rocket",
    "planet",
    "yellow",
    "purple",
    "marmalade",
    "cookie",
    "blueberry",
    "raspberry",
    "pineapple",
    "avocado",
    "tomato",
    "potato",
    "internet",
    "bicycle",
    "mirror",
    "jazz",
    "puzzle",
    "zebra",
    "kangaroo",
    "volcano",
];

impl<'a> Pools<'a> {
    pub fn new(corpus: &'a Corpus, holdout: &'a Holdout, split: Split) -> Pools<'a> {
        let quotes = quotes(corpus, holdout, split);
        let in_split = |key: &str| holdout.split_of(key) == split;

        let characters = characters(corpus).into_iter().filter(|c| in_split(&c.key)).collect();
        let cut = holdout.cut(&corpus.works, |w| format!("work:{}", w.title));
        let works = cut.get(&split).cloned().unwrap_or_default();

        let mut words: Vec<String> = corpus.words.to_vec();
        words.extend(MODERN_WORDS.iter().map(|w| w.to_string()));
        words.sort();
        words.dedup();
        words.retain(|w| in_split(&format!("word:{w}")));

        let phrases = phrases(corpus).into_iter().filter(|p| in_split(&format!("text:{p}"))).collect();
        let cast = corpus
            .plays
            .iter()
            .map(|p| {
                let mut count: HashMap<&str, usize> = HashMap::new();
                for s in p.speeches.iter().filter(|s| s.named) {
                    *count.entry(&s.speaker).or_default() += 1;
                }
                let mut names: Vec<String> = count.into_iter().filter(|(_, n)| *n >= 3).map(|(s, _)| s.to_string()).collect();
                names.sort();
                names
            })
            .collect();
        Pools {
            split,
            corpus,
            holdout,
            quotes,
            characters,
            works,
            words,
            phrases,
            harmful: refusal::harmful_pool(holdout, split),
            benign: refusal::benign_pool(holdout, split),
            identity: identity::pool(holdout, split),
            cast,
            injections: vec![],
            sft: false,
            vary_openings: false,
        }
    }

    /// Whether a key of a large pool belongs to this split.
    pub fn holds(&self, key: &str) -> bool {
        self.holdout.split_of(key) == self.split
    }
}

/// A line as a quotation key: lower-case letters and single spaces.
fn normalize(line: &str) -> String {
    let s: String = line.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A line as shown in a question: without trailing punctuation (`question:--` → `question`).
pub(super) fn display_line(line: &str) -> String {
    line.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '?' && c != '!' && c != '\'').to_string()
}

/// Whether a verse line makes a good quotation: 5 to 12 words, 25 to 70 characters, starting
/// with a capital, no digits or brackets.
fn quotable(line: &str) -> bool {
    let words = line.split_whitespace().count();
    (5..=12).contains(&words)
        && (25..=70).contains(&line.len())
        && line.starts_with(|c: char| c.is_ascii_uppercase())
        && !line.contains(|c: char| c.is_ascii_digit() || c == '[' || c == ']' || c == '"' || c == '_')
}

/// Lines spoken by named characters that occur once in the whole corpus, in this split.
fn quotes(corpus: &Corpus, holdout: &Holdout, split: Split) -> Vec<Quote> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for play in &corpus.plays {
        for s in &play.speeches {
            for l in &s.lines {
                *counts.entry(normalize(l)).or_default() += 1;
            }
        }
    }
    let unique = |l: &str| quotable(l) && counts.get(&normalize(l)) == Some(&1);
    let mut quotes = Vec::new();
    for (p, play) in corpus.plays.iter().enumerate() {
        for s in play.speeches.iter().filter(|s| s.named) {
            for (i, l) in s.lines.iter().enumerate() {
                let key = format!("line:{}", normalize(l));
                if !unique(l) || holdout.split_of(&key) != split {
                    continue;
                }
                // The next line goes with this one only if it is held out in the same split.
                let next = s
                    .lines
                    .get(i + 1)
                    .filter(|n| unique(n) && holdout.split_of(&format!("line:{}", normalize(n))) == split)
                    .map(|n| display_line(n));
                quotes.push(Quote { line: display_line(l), speaker: s.speaker.clone(), play: p, act: s.act, key, next });
            }
        }
    }
    quotes
}

/// Named characters with at least 5 speeches who speak in exactly one play.
fn characters(corpus: &Corpus) -> Vec<Character> {
    let mut speeches: HashMap<(&str, usize), usize> = HashMap::new();
    let mut plays: HashMap<&str, HashSet<usize>> = HashMap::new();
    for (p, play) in corpus.plays.iter().enumerate() {
        for s in &play.speeches {
            plays.entry(&s.speaker).or_default().insert(p);
            if s.named {
                *speeches.entry((&s.speaker, p)).or_default() += 1;
            }
        }
    }
    let mut out: Vec<Character> = speeches
        .into_iter()
        .filter(|((name, _), n)| *n >= 5 && plays[name].len() == 1)
        .map(|((name, p), _)| Character { name: name.to_string(), play: p, key: format!("character:{}", name.to_lowercase()) })
        .collect();
    out.sort_by(|a, b| (a.play, &a.name).cmp(&(b.play, &b.name)));
    out
}

/// Short phrases for counting: the first 2 to 7 words of quotable lines, at most 40 characters.
fn phrases(corpus: &Corpus) -> Vec<String> {
    let mut out = Vec::new();
    for play in &corpus.plays {
        for s in &play.speeches {
            for l in s.lines.iter().filter(|l| quotable(l)) {
                let words: Vec<&str> = l.split_whitespace().collect();
                // A length that depends only on the line, so the pool is the same for every seed.
                let n = 2 + (l.len() % 6);
                let phrase = display_line(&words[..n.min(words.len())].join(" "));
                if phrase.len() <= 40 && phrase.split_whitespace().count() >= 2 {
                    out.push(phrase);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// Family 1: Shakespeare

pub(super) fn shakespeare(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    match pick_weighted(rng, &[("who_speaks", 0.35), ("which_play", 0.25), ("continue", 0.25), ("who_wrote", 0.15), ("unknown", 0.08)]) {
        "who_speaks" => {
            let x = pick(rng, &pools.quotes)?;
            who_speaks(pools, rng, x)
        }
        "which_play" => {
            let x = pick(rng, &pools.characters)?;
            which_play(pools, rng, x)
        }
        "continue" => continue_line(pools, rng),
        "unknown" => unknown::item(pools, rng),
        _ => {
            let x = pick(rng, &pools.works)?;
            who_wrote(rng, x)
        }
    }
}

/// One of `templates`, with `{}` replaced by `arg`.
fn phrase(rng: &mut ChaCha8Rng, templates: &[&str], arg: &str) -> String {
    pick(rng, templates).expect("templates are not empty").replace("{}", arg)
}

pub(super) fn who_speaks(pools: &Pools, rng: &mut ChaCha8Rng, q: &Quote) -> Option<Item> {
    let play = &pools.corpus.plays[q.play];
    // Sometimes only the opening words, as people quote: "To be, or not to be".
    let words: Vec<&str> = q.line.split_whitespace().collect();
    let quoted = if words.len() >= 7 && rng.random_bool(0.3) {
        display_line(&words[..rng.random_range(5..words.len())].join(" "))
    } else {
        q.line.clone()
    };
    let question = phrase(
        rng,
        &[
            "Who speaks the line \"{}\"?",
            "Who says \"{}\"?",
            "Which character says \"{}\"?",
            "In Shakespeare, who speaks this line: \"{}\"",
            "Who speaks \"{}\"?",
        ],
        &quoted,
    );
    // The speaker must be named as the speaker: the play's title may hold a name (Hamlet, King
    // Lear, Romeo and Juliet), so "Horatio, in Hamlet." is no answer for Hamlet, and "Mercutio,
    // in Romeo and Juliet." does not name Romeo.
    let ignore = play.aliases.iter().flat_map(|a| [format!("in {a}"), format!("from {a}"), format!("of {a}")]).collect();
    let speaker_check = Check::Mentions { all: vec![vec![q.speaker.clone()]], none: vec![], ignore };
    let play_check = Check::mentions(&play.aliases);
    let others: Vec<&String> = pools.cast[q.play].iter().filter(|c| **c != q.speaker).collect();
    let wrong = pick(rng, &others).map(|o| (format!("{o}, in {}.", play.title), Some(o.to_string())));
    Some(Item {
        kind: "who_speaks",
        keys: vec![q.key.clone()],
        question,
        answer: format!("{}, in {}.", q.speaker, play.title),
        check: speaker_check.clone(),
        value: Value::from(q.speaker.clone()),
        value_check: speaker_check.clone(),
        fields: vec![("speaker", Value::from(q.speaker.clone()), speaker_check), ("play", Value::from(play.title.clone()), play_check)],
        one_word: one_word(&q.speaker),
        subject: None,
        wrong,
        tool: None,
    })
}

pub(super) fn which_play(pools: &Pools, rng: &mut ChaCha8Rng, c: &Character) -> Option<Item> {
    let play = &pools.corpus.plays[c.play];
    let question = phrase(
        rng,
        &[
            "In which play does {} appear?",
            "Which Shakespeare play has a character called {}?",
            "{} is a character in which play?",
            "What play is {} from?",
        ],
        &c.name,
    );
    let check = Check::mentions(&play.aliases);
    let other = pick(rng, &pools.corpus.plays).filter(|p| p.title != play.title);
    Some(Item {
        kind: "which_play",
        keys: vec![c.key.clone()],
        question,
        answer: format!("{} appears in {}.", c.name, play.title),
        check: check.clone(),
        value: Value::from(play.title.clone()),
        value_check: check.clone(),
        fields: vec![
            ("character", Value::from(c.name.clone()), Check::mentions(&[&c.name])),
            ("play", Value::from(play.title.clone()), check),
        ],
        one_word: one_word(&play.title),
        subject: Some(c.name.clone()),
        wrong: other.map(|o| (format!("{} appears in {}.", c.name, o.title), Some(o.title.clone()))),
        tool: None,
    })
}

fn continue_line(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    let q = pick(rng, &pools.quotes)?;
    let play = &pools.corpus.plays[q.play].title;
    let words: Vec<&str> = q.line.split_whitespace().collect();
    let (question, expected) = match &q.next {
        Some(next) if rng.random_bool(0.5) => {
            let question = phrase(
                rng,
                &[
                    &format!("Continue this line from {play}: \"{{}}\""),
                    "What line comes after \"{}\"?",
                    &format!("In {play}, what follows \"{{}}\"?"),
                ],
                &q.line,
            );
            (question, next.clone())
        }
        _ if words.len() >= 6 => {
            // The first half of the line; the answer is the rest.
            let cut = (words.len() / 2).max(3);
            let part = words[..cut].join(" ");
            let question = phrase(rng, &[&format!("Finish this line from {play}: \"{{}} ...\""), "Complete the line: \"{} ...\""], &part);
            (question, display_line(&words[cut..].join(" ")))
        }
        _ => return None,
    };
    let check = Check::Continuation { expected: expected.clone() };
    Some(Item {
        kind: "continue",
        keys: vec![q.key.clone()],
        question,
        answer: expected.clone(),
        check: check.clone(),
        value: Value::from(expected.clone()),
        value_check: check.clone(),
        fields: vec![("continuation", Value::from(expected), check)],
        one_word: None,
        subject: None,
        wrong: None,
        tool: None,
    })
}

pub(super) fn who_wrote(rng: &mut ChaCha8Rng, work: &Work) -> Option<Item> {
    let surname = work.author.split_whitespace().last().unwrap_or(&work.author).to_string();
    let other = if work.author == SHAKESPEARE { MILTON } else { SHAKESPEARE };
    let question =
        phrase(rng, &["Who wrote {}?", "Who is the author of {}?", "{} was written by whom?", "Who wrote the work {}?"], &work.title);
    let check = Check::Mentions {
        all: vec![vec![surname.clone()]],
        none: vec![other.split_whitespace().last().unwrap().to_string()],
        ignore: vec![],
    };
    Some(Item {
        kind: "who_wrote",
        keys: vec![format!("work:{}", work.title)],
        question,
        answer: format!("{} wrote {}.", work.author, work.title),
        check: check.clone(),
        value: Value::from(work.author.clone()),
        value_check: check.clone(),
        fields: vec![
            ("work", Value::from(work.title.clone()), Check::mentions(&work.aliases)),
            ("author", Value::from(work.author.clone()), check),
        ],
        one_word: Some(surname),
        subject: Some(work.title.clone()),
        wrong: Some((format!("{other} wrote {}.", work.title), Some(other.split_whitespace().last().unwrap().to_string()))),
        tool: None,
    })
}

/// `name` if it is one word.
fn one_word(name: &str) -> Option<String> {
    (name.split_whitespace().count() == 1).then(|| name.to_string())
}

// ---------------------------------------------------------------------------------------------
// Family 2: spelling and counting

pub(super) fn spelling(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    let kind =
        pick_weighted(rng, &[("letter_count", 0.3), ("word_length", 0.2), ("char_count", 0.15), ("word_count", 0.15), ("spell", 0.2)]);
    // In the SFT pool, a share of the words and phrases are made up (see [`COPY_SHARE`]).
    let made_up = pools.sft && rng.random_bool(COPY_SHARE);
    let word = |rng: &mut ChaCha8Rng| if made_up { Some(made_up_word(rng)) } else { pick(rng, &pools.words).cloned() };
    let phrase = |rng: &mut ChaCha8Rng| {
        if made_up {
            let n = rng.random_range(2..=6);
            Some((0..n).map(|_| made_up_word(rng)).collect::<Vec<_>>().join(" "))
        } else {
            pick(rng, &pools.phrases).cloned()
        }
    };
    let x = if matches!(kind, "char_count" | "word_count") { phrase(rng)? } else { word(rng)? };
    let mut item = match kind {
        "letter_count" => letter_count(pools, rng, &x),
        "word_length" => word_length(pools, rng, &x),
        "char_count" => char_count(pools, rng, &x),
        "word_count" => word_count(pools, rng, &x),
        _ => spell(pools, rng, &x),
    }?;
    if made_up {
        // Made-up material belongs to no split: keyed apart from the real words and phrases.
        for k in item.keys.iter_mut().filter(|k| k.starts_with("word:") || k.starts_with("text:")) {
            *k = format!("made_up:{k}");
        }
    }
    Some(item)
}

/// Share of the SFT pool's spelling/counting and arithmetic questions about made-up words and
/// phrases, or numbers beyond the held-out range (to 999). Chosen on val (arithmetic and
/// spelling with tools, 40 each, speedrun base): 0 gave 47.5 % and 12.5 %, 0.5 gave 50 % and
/// 22.5 %, 0.8 gave 70 % and 20 %. One seed each: SFT seed 2 at 0.8 gave 15 % and 10 %, so the
/// figures swing by tens of points between seeds; the drills are kept because copying is what
/// they teach, not for the 70 %. Their answers cannot be learned by
/// heart, only copied from the question, and copying the question's words and numbers into the
/// call is what a tool call needs: without them the model wrote calls about words it had learned
/// ("whee", "shears") whatever the question asked. The base model does not copy at all (it
/// cannot continue "the word prouder, the word prouder, the word prou").
pub(super) const COPY_SHARE: f64 = 0.8;

/// A made-up lowercase word of 3 to 9 letters, roughly pronounceable (consonants and vowels
/// alternating, with some doubles), so it tokenizes like a rare real word.
fn made_up_word(rng: &mut ChaCha8Rng) -> String {
    const VOWELS: &[u8] = b"aeiouy";
    const CONSONANTS: &[u8] = b"bcdfghjklmnpqrstvwxz";
    let n = rng.random_range(3..=9);
    let mut vowel = rng.random_bool(0.3);
    let mut w = String::new();
    while w.len() < n {
        let set = if vowel { VOWELS } else { CONSONANTS };
        w.push(set[rng.random_range(0..set.len())] as char);
        if rng.random_bool(0.8) {
            vowel = !vowel;
        }
    }
    w
}

/// `castle` → "c-a-s-t-l-e".
pub(super) fn spell_out(word: &str) -> String {
    word.chars().map(String::from).collect::<Vec<_>>().join("-")
}

/// An item whose answer is a count.
fn count_item(
    kind: &'static str,
    key: String,
    question: String,
    answer: impl Fn(i64) -> String,
    n: i64,
    fields: Vec<(&'static str, Value, Check)>,
    rng: &mut ChaCha8Rng,
) -> Item {
    let check = Check::Number { value: n };
    let wrong = if n == 0 || rng.random_bool(0.5) { n + 1 } else { n - 1 };
    Item {
        kind,
        keys: vec![key],
        question,
        answer: answer(n),
        check: check.clone(),
        value: Value::from(n),
        value_check: check,
        fields,
        one_word: Some(n.to_string()),
        subject: None,
        wrong: Some((answer(wrong), None)),
        tool: None,
    }
}

fn letter_count(pools: &Pools, rng: &mut ChaCha8Rng, word: &str) -> Option<Item> {
    let letters: Vec<char> = word.chars().collect();
    let letter = if rng.random_bool(0.8) {
        *pick(rng, &letters)?
    } else {
        let absent: Vec<char> = ('a'..='z').filter(|c| !letters.contains(c)).collect();
        *pick(rng, &absent)?
    };
    let n = letters.iter().filter(|&&c| c == letter).count() as i64;
    let l = letter.to_string();
    let (question, phrasing) = phrase_in_split(pools, rng, LETTER_COUNT, &[("l", &l), ("w", word)]);
    let spelled = spell_out(word);
    let answer = move |n: i64| {
        let times = if n == 1 { "time" } else { "times" };
        format!("\"{word}\" is {spelled}, so \"{letter}\" appears {n} {times}.")
    };
    let fields = vec![
        ("word", Value::from(word), Check::mentions(&[word])),
        ("letter", Value::from(l.clone()), Check::mentions(std::slice::from_ref(&l))),
        ("count", Value::from(n), Check::Number { value: n }),
    ];
    let mut item = count_item("letter_count", format!("word:{word}"), question, answer, n, fields, rng);
    item.keys.push(phrasing);
    Some(item.with_tool(Builtin::CountLetter, &[("word", word), ("letter", &l)], |r| {
        let times = if r == "1" { "time" } else { "times" };
        format!("\"{l}\" appears {r} {times} in \"{word}\".")
    }))
}

fn word_length(pools: &Pools, rng: &mut ChaCha8Rng, word: &str) -> Option<Item> {
    let n = word.chars().count() as i64;
    let (question, phrasing) = phrase_in_split(pools, rng, WORD_LENGTH, &[("w", word)]);
    let spelled = spell_out(word);
    let answer = move |n: i64| format!("\"{word}\" is {spelled}: {n} letters.");
    let fields = vec![("word", Value::from(word), Check::mentions(&[word])), ("letters", Value::from(n), Check::Number { value: n })];
    let mut item = Item {
        subject: Some(format!("\"{word}\"")),
        ..count_item("word_length", format!("word:{word}"), question, answer, n, fields, rng)
    };
    item.keys.push(phrasing);
    Some(item.with_tool(Builtin::Length, &[("text", word)], |r| format!("\"{word}\" has {r} letters.")))
}

fn char_count(pools: &Pools, rng: &mut ChaCha8Rng, text: &str) -> Option<Item> {
    let n = text.chars().count() as i64;
    let (question, phrasing) = phrase_in_split(pools, rng, CHAR_COUNT, &[("t", text)]);
    let answer = |n: i64| format!("{n} characters, counting spaces.");
    let fields = vec![("text", Value::from(text), Check::mentions(&[text])), ("characters", Value::from(n), Check::Number { value: n })];
    let mut item = count_item("char_count", format!("text:{text}"), question, answer, n, fields, rng);
    item.keys.push(phrasing);
    Some(item.with_tool(Builtin::Length, &[("text", text), ("unit", "characters")], |r| format!("{r} characters, counting spaces.")))
}

fn word_count(pools: &Pools, rng: &mut ChaCha8Rng, text: &str) -> Option<Item> {
    let n = text.split_whitespace().count() as i64;
    let (question, phrasing) = phrase_in_split(pools, rng, WORD_COUNT, &[("t", text)]);
    let answer = |n: i64| format!("{n} words.");
    let fields = vec![("text", Value::from(text), Check::mentions(&[text])), ("words", Value::from(n), Check::Number { value: n })];
    let mut item = count_item("word_count", format!("text:{text}"), question, answer, n, fields, rng);
    item.keys.push(phrasing);
    Some(item.with_tool(Builtin::Length, &[("text", text), ("unit", "words")], |r| format!("{r} words.")))
}

fn spell(pools: &Pools, rng: &mut ChaCha8Rng, word: &str) -> Option<Item> {
    let (question, phrasing) = phrase_in_split(pools, rng, SPELL, &[("w", word)]);
    let spelled = spell_out(word);
    let check = Check::Spelling { word: word.to_string() };
    let item = Item {
        kind: "spell",
        keys: vec![format!("word:{word}"), phrasing],
        question,
        answer: spelled.clone(),
        check: check.clone(),
        value: Value::from(spelled.clone()),
        value_check: check.clone(),
        fields: vec![("word", Value::from(word), Check::mentions(&[word])), ("spelling", Value::from(spelled), check)],
        one_word: None,
        subject: Some(format!("\"{word}\"")),
        wrong: None,
        tool: None,
    };
    // The reply quotes the tool's spelling (a quote in a reply is grounded: `tools/ground.rs`).
    Some(item.with_tool(Builtin::Spell, &[("word", word)], |r| format!("\"{word}\" is spelled \"{r}\".")))
}

// ---------------------------------------------------------------------------------------------
// Family 3: arithmetic

pub(super) fn arithmetic(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    let op = pick_weighted(rng, &[("add", 0.35), ("sub", 0.35), ("mul", 0.3)]);
    // Draw problems until one is held out in this split (each split has about its share).
    // In the SFT pool, a share of the numbers go to 999 (see [`COPY_SHARE`]).
    let (top, top_mul) = if pools.sft && rng.random_bool(COPY_SHARE) { (1000, 100) } else { (100, 13) };
    for _ in 0..100 {
        let (a, b) = match op {
            "add" => (rng.random_range(0..top), rng.random_range(0..top)),
            "sub" => {
                let a = rng.random_range(0..top);
                (a, rng.random_range(0..=a))
            }
            _ => (rng.random_range(0..top_mul), rng.random_range(0..13)),
        };
        if pools.holds(&arith_key(op, a, b)) {
            return Some(arith_item(pools, rng, op, a, b));
        }
    }
    None
}

/// The held-out key of a problem; `7 * 8` and `8 * 7` are one problem.
fn arith_key(op: &str, a: i64, b: i64) -> String {
    let (x, y) = if op == "sub" { (a, b) } else { (a.min(b), a.max(b)) };
    format!("{op}:{x}:{y}")
}

/// The symbol and the result of an operation.
pub(super) fn apply(op: &str, a: i64, b: i64) -> (&'static str, i64) {
    match op {
        "add" => ("+", a + b),
        "sub" => ("-", a - b),
        _ => ("*", a * b),
    }
}

pub(super) fn arith_item(pools: &Pools, rng: &mut ChaCha8Rng, op: &'static str, a: i64, b: i64) -> Item {
    let (sym, r) = apply(op, a, b);
    let templates: &[&'static str] = match op {
        "add" => ADD,
        "sub" => SUB,
        _ => MUL,
    };
    let (question, phrasing) = phrase_in_split(pools, rng, templates, &[("a", &a.to_string()), ("b", &b.to_string())]);
    let check = Check::Number { value: r };
    let expression = format!("{a} {sym} {b}");
    let off = *pick(rng, &[-10, -2, -1, 1, 2, 10]).expect("not empty");
    let item = Item {
        kind: op,
        keys: vec![arith_key(op, a, b), phrasing],
        question,
        answer: format!("{expression} = {r}."),
        check: check.clone(),
        value: Value::from(r),
        value_check: check.clone(),
        fields: vec![
            ("expression", Value::from(expression.clone()), Check::mentions(&[expression.clone(), format!("{a}{sym}{b}")])),
            ("result", Value::from(r), check),
        ],
        one_word: Some(r.to_string()),
        subject: Some(expression.clone()),
        wrong: Some((format!("{expression} = {}.", r + off), None)),
        tool: None,
    };
    item.with_tool(Builtin::Calculator, &[("expression", &expression)], |res| format!("{expression} = {res}."))
}
