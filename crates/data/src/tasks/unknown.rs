//! Questions about things the corpus does not hold: a made-up work, a made-up character, a
//! line no one speaks or that continues nowhere (a real line's words shuffled), a product too
//! large to work out. The one right answer is to say so
//! ([`Check::Abstain`]); any name in reply is a hallucination. A few of these in SFT show the
//! model *how* to say it does not know; only feedback can teach it *when* (Schulman: behaviour
//! cloning teaches a model to bluff, RL can teach it to abstain). Each made-up subject is a
//! held-out key (`unknown:...`), split like words and lines.

use rand::seq::SliceRandom;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::check::Check;
use super::items::{display_line, Item, Pools, ToolDemo};
use super::pick;
use crate::tools::Builtin;

const ADJECTIVES: &[&str] =
    &["Glass", "Silver", "Hollow", "Winter", "Crimson", "Silent", "Broken", "Golden", "Distant", "Burning", "Quiet", "Iron"];
const NOUNS: &[&str] =
    &["Orchard", "Lantern", "Harbour", "Tower", "Meadow", "Crown", "Mirror", "River", "Garden", "Bell", "Feather", "Gate"];
const SYLLABLES: &[&str] =
    &["bel", "dor", "mar", "vyn", "thal", "cor", "is", "an", "ric", "wen", "gor", "ell", "ash", "um", "ber", "lio", "zan", "quil"];

/// A question about something that does not exist, and its one right answer (a few draws, until
/// the made-up subject is of this split).
pub(super) fn item(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    (0..30).find_map(|_| draw(pools, rng))
}

/// A product too large to work out in one's head (5 digits by 4). With the calculator the
/// answer is the product; the demonstrations always call it (an answer without tools would be
/// "I'm not sure", which the number check does not grade correct).
pub(super) fn big_product(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    (0..30).find_map(|_| {
        let (a, b) = (rng.random_range(10_000..100_000i64), rng.random_range(1_000..10_000i64));
        let key = format!("unknown:{a}*{b}");
        if !pools.holds(&key) {
            return None;
        }
        let q = pick(rng, &["What is {a} times {b}?", "What is {a} * {b}?", "Multiply {a} by {b}."])?;
        let question = q.replace("{a}", &a.to_string()).replace("{b}", &b.to_string());
        let (expression, p) = (format!("{a} * {b}"), a * b);
        let check = Check::Number { value: p };
        let item = Item {
            kind: "big_product",
            keys: vec![key],
            question,
            answer: "I'm not sure. Numbers that large are more than I can work out reliably.".to_string(),
            check: check.clone(),
            value: Value::from(p),
            value_check: check,
            fields: vec![("result", Value::from(p), Check::Number { value: p })],
            one_word: None,
            subject: None,
            wrong: None,
            tool: None,
        };
        let item = item.with_tool(Builtin::Calculator, &[("expression", &expression)], |r| format!("{expression} = {r}."));
        let tool = item.tool.clone().map(|t| ToolDemo { may_be_off: false, ..t });
        Some(Item { tool, ..item })
    })
}

fn draw(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    let (kind, subject, question, answer) = match rng.random_range(0..3) {
        0 => {
            let title = format!("The {} {}", pick(rng, ADJECTIVES)?, pick(rng, NOUNS)?);
            if pools.corpus.works.iter().any(|w| w.title == title) {
                return None;
            }
            let q = pick(rng, &["Who wrote {}?", "Who is the author of {}?", "{} was written by whom?"])?.replace("{}", &title);
            ("unknown_work", title.clone(), q, format!("I'm not sure. I don't know a work called {title}."))
        }
        1 => {
            let n = rng.random_range(2..4);
            let mut name: String = (0..n).map(|_| *pick(rng, SYLLABLES).unwrap()).collect();
            name[..1].make_ascii_uppercase();
            if pools.cast.iter().flatten().any(|c| c.eq_ignore_ascii_case(&name)) || pools.characters.iter().any(|c| c.name == name) {
                return None;
            }
            let q = pick(
                rng,
                &["In which play does {} appear?", "Which Shakespeare play has a character called {}?", "What play is {} from?"],
            )?
            .replace("{}", &name);
            ("unknown_character", name.clone(), q, format!("I'm not sure. I don't know a character called {name}."))
        }
        _ => {
            let quote = pick(rng, &pools.quotes)?;
            let mut words: Vec<&str> = quote.line.split_whitespace().collect();
            if words.len() < 5 {
                return None;
            }
            let original = words.clone();
            words.shuffle(rng);
            if words == original {
                return None;
            }
            let line = display_line(&words.join(" ").to_lowercase());
            let (kind, q) = if rng.random_bool(0.5) {
                ("unknown_line", pick(rng, &["Who speaks the line \"{}\"?", "Which character says \"{}\"?"])?.replace("{}", &line))
            } else {
                let half: Vec<&str> = line.split_whitespace().take(words.len() / 2 + 1).collect();
                (
                    "unknown_continue",
                    pick(rng, &["Complete the line: \"{} ...\"", "What line comes after \"{}\"?"])?.replace("{}", &half.join(" ")),
                )
            };
            (kind, line, q, "I'm not sure. I don't recognise that line.".to_string())
        }
    };
    abstain_item(pools, kind, subject, question, answer)
}

/// The item of a question whose right answer is `answer`, an abstention, if its subject is of
/// this split.
fn abstain_item(pools: &Pools, kind: &'static str, subject: String, question: String, answer: String) -> Option<Item> {
    let key = format!("unknown:{subject}");
    if !pools.holds(&key) {
        return None;
    }
    Some(Item {
        kind,
        keys: vec![key],
        question,
        answer,
        check: Check::Abstain,
        value: Value::from("I'm not sure"),
        value_check: Check::Abstain,
        fields: vec![("answer", Value::from("I'm not sure"), Check::Abstain)],
        one_word: None,
        subject: None,
        wrong: None,
        tool: None,
    })
}
