//! The families built on the question items: system-message authority (family 4) and
//! multi-turn follow-ups and corrections (family 6).

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::check::{Check, JsonField};
use super::items::{self, apply, arith_item, Item, Pools};
use super::{exchange, injection, pick, pick_weighted, Draft};
use crate::chat::Message;

/// A question of families 1 to 3.
/// Not the questions about things that do not exist: they have no value for a format to hold.
fn base_item(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Item> {
    match pick_weighted(rng, &[("shakespeare", 0.4), ("spelling", 0.3), ("arithmetic", 0.3)]) {
        "shakespeare" => items::shakespeare(pools, rng).filter(|i| i.check != Check::Abstain),
        "spelling" => items::spelling(pools, rng),
        _ => items::arithmetic(pools, rng),
    }
}

// ---------------------------------------------------------------------------------------------
// Family 4: system-message authority

pub(super) fn system(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    // In the SFT pool, some system messages declare functions for the assistant to call.
    if pools.sft && rng.random_bool(0.08) {
        return super::declared::generate(rng);
    }
    let item = base_item(pools, rng)?;
    let kind = pick_weighted(rng, &[("json", 0.45), ("one_word", 0.15), ("upper_case", 0.15), ("persona", 0.1), ("default", 0.15)]);
    let (system, answer, check) = match kind {
        "json" => json(&item, rng),
        "one_word" => {
            let word = item.one_word.clone()?;
            let system = pick(rng, &["Answer in one word.", "Reply with a single word.", "Use exactly one word in your answer."])?;
            (Some(system.to_string()), word, Check::OneWord { inner: Box::new(item.value_check.clone()) })
        }
        "upper_case" => {
            // An answer without letters ("3 + 4 = 7.") shows nothing about case.
            if !item.answer.chars().any(char::is_alphabetic) {
                return None;
            }
            let system =
                pick(rng, &["Answer in upper case.", "Write your answer in capital letters only.", "RESPOND ONLY IN UPPER CASE."])?;
            (Some(system.to_string()), item.answer.to_uppercase(), Check::UpperCase { inner: Box::new(item.check.clone()) })
        }
        "persona" => {
            let system = pick(
                rng,
                &[
                    "Answer as a Shakespearean character would.",
                    "You are a character in a Shakespeare play. Speak like one.",
                    "Reply in the voice of a Shakespearean character.",
                ],
            )?;
            let wrapper = pick(
                rng,
                &[
                    "Marry, good sir: {}",
                    "Hark! {} Thus I swear upon mine honour.",
                    "Methinks thou wouldst know this: {}",
                    "Prithee, attend: {}",
                    "'Tis thus, my lord: {}",
                ],
            )?;
            (Some(system.to_string()), wrapper.replace("{}", &item.answer), Check::Persona { inner: Box::new(item.check.clone()) })
        }
        // No system message: the plain question, with its tool call where it has one.
        _ => {
            return Some(Draft { kind: kind.to_string(), keys: item.keys.clone(), messages: item.exchange(rng), check: item.check.clone() })
        }
    };
    let mut keys = item.keys.clone();
    let mut question = item.question.clone();
    // Outside the SFT pool, 40 % of system messages meet a user who tries to override them.
    if system.is_some() && !pools.injections.is_empty() && rng.random_bool(0.4) {
        let template = pick(rng, &pools.injections)?;
        question = template.replace("{q}", &question);
        keys.push(injection::key(template));
    }
    Some(Draft { kind: kind.to_string(), keys, messages: exchange(system.as_deref(), &question, &answer), check })
}

/// A JSON-only system message, the JSON answer and its check: the item's own keys (60 %) or
/// a single `"answer"` key.
fn json(item: &Item, rng: &mut ChaCha8Rng) -> (Option<String>, String, Check) {
    let fields: Vec<(&str, &Value, &Check)> = if rng.random_bool(0.6) {
        item.fields.iter().map(|(k, v, c)| (*k, v, c)).collect()
    } else {
        vec![("answer", &item.value, &item.value_check)]
    };
    let quoted = |k: &str| format!("\"{k}\"");
    let form = fields
        .iter()
        .map(|(k, v, _)| format!("{}: {}", quoted(k), if v.is_number() { "0" } else { "\"...\"" }))
        .collect::<Vec<_>>()
        .join(", ");
    let names: Vec<String> = fields.iter().map(|(k, _, _)| quoted(k)).collect();
    let keys = match names.as_slice() {
        [one] => format!("the key {one}"),
        [init @ .., last] => format!("the keys {} and {last}", init.join(", ")),
        [] => unreachable!("an item has at least one field"),
    };
    let system = match rng.random_range(0..4) {
        0 => format!("Respond only with JSON of the form {{{form}}}."),
        1 => format!("Reply with a JSON object with {keys} and nothing else."),
        2 => format!("Output JSON only: an object with {keys}."),
        _ => format!("You are an API. Answer with JSON only, like {{{form}}}."),
    };
    let answer = fields.iter().map(|(k, v, _)| format!("{}: {v}", quoted(k))).collect::<Vec<_>>().join(", ");
    let check = Check::Json { fields: fields.iter().map(|(k, _, c)| JsonField { key: k.to_string(), check: (*c).clone() }).collect() };
    (Some(system), format!("{{{answer}}}"), check)
}

// ---------------------------------------------------------------------------------------------
// Family 6: multi-turn

pub(super) fn multi_turn(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let kind = pick_weighted(
        rng,
        &[
            ("followup_act", 0.2),
            ("followup_character", 0.15),
            ("followup_arith", 0.2),
            ("user_correction", 0.2),
            ("assistant_correction", 0.15),
            ("challenge_holds", 0.1),
        ],
    );
    match kind {
        "followup_act" => followup_act(pools, rng),
        "followup_character" => followup_character(pools, rng),
        "followup_arith" => followup_arith(pools, rng),
        "user_correction" => user_correction(pools, rng),
        "assistant_correction" => assistant_correction(pools, rng),
        _ => challenge_holds(pools, rng),
    }
}

/// Builds a draft from alternating user / assistant texts.
fn turns(kind: &str, keys: Vec<String>, texts: &[&str], check: Check) -> Draft {
    let messages = texts.iter().enumerate().map(|(i, t)| if i % 2 == 0 { Message::user(*t) } else { Message::assistant(*t) }).collect();
    Draft { kind: kind.to_string(), keys, messages, check }
}

const ROMAN: [&str; 6] = ["", "I", "II", "III", "IV", "V"];
const ORDINAL: [&str; 6] = ["", "first", "second", "third", "fourth", "fifth"];

/// "Who speaks ...?" then "And in which act?"
fn followup_act(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let quote = pick(rng, &pools.quotes)?;
    let act = quote.act as usize;
    if act == 0 || !pools.corpus.plays[quote.play].has_acts {
        return None;
    }
    let item = items::who_speaks(pools, rng, quote)?;
    let follow = pick(rng, &["And in which act?", "Which act is that in?", "In which act does it come?"])?;
    let answer = format!("Act {}.", ROMAN[act]);
    let check = Check::mentions(&[format!("Act {}", ROMAN[act]), format!("Act {act}"), format!("{} act", ORDINAL[act])]);
    Some(turns("followup_act", item.keys, &[&item.question, &item.answer, follow, &answer], check))
}

/// "In which play does X appear?" then "Name another character in that play."
fn followup_character(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let character = pick(rng, &pools.characters)?;
    let item = items::which_play(pools, rng, character)?;
    let others: Vec<&String> = pools.cast[character.play].iter().filter(|c| **c != character.name).collect();
    let other = pick(rng, &others)?;
    let follow =
        pick(rng, &["Name another character in that play.", "Who else is in that play?", "Name one more character from that play."])?;
    let answer = format!("{other}, for one.");
    let check = Check::mentions(&others);
    Some(turns("followup_character", item.keys, &[&item.question, &item.answer, follow, &answer], check))
}

/// "What is 7 + 5?" then "And times 3?"
fn followup_arith(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let item = items::arithmetic(pools, rng)?;
    let Value::Number(r) = &item.value else { return None };
    let r = r.as_i64()?;
    let (op, k, follow) = match rng.random_range(0..3) {
        0 => {
            let k = rng.random_range(2..6);
            ("mul", k, format!("And times {k}?"))
        }
        1 => {
            let k = rng.random_range(1..21);
            ("add", k, format!("Now add {k}."))
        }
        _ => {
            let k = rng.random_range(0..=r.clamp(0, 20));
            ("sub", k, format!("Subtract {k} from that."))
        }
    };
    let (sym, r2) = apply(op, r, k);
    // The first answer with its tool call; the follow-up calls the calculator too, unless the
    // tools were off.
    let first = item.reply(rng, 1);
    let expression = format!("{r} {sym} {k}");
    let second = if items::tools_were_off(&first) {
        vec![Message::assistant(format!("{expression} = {r2}."))]
    } else {
        items::calculator_reply(&expression, 2)
    };
    let mut messages = vec![Message::user(&item.question)];
    messages.extend(first);
    messages.push(Message::user(follow));
    messages.extend(second);
    Some(Draft { kind: "followup_arith".into(), keys: item.keys, messages, check: Check::Number { value: r2 } })
}

/// Two items of the same kind, for "Sorry, I meant ..." (each has a `subject`).
fn item_pair(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<(Item, Item)> {
    let kind = pick_weighted(rng, &[("who_wrote", 0.2), ("which_play", 0.25), ("word_length", 0.15), ("spell", 0.15), ("arith", 0.25)]);
    let draw = |rng: &mut ChaCha8Rng| -> Option<Item> {
        match kind {
            "who_wrote" => {
                let x = pick(rng, &pools.works)?;
                items::who_wrote(rng, x)
            }
            "which_play" => {
                let x = pick(rng, &pools.characters)?;
                items::which_play(pools, rng, x)
            }
            "arith" => None,
            _ => loop {
                // word_length and spell: draw spelling items until the kind matches.
                let item = items::spelling(pools, rng)?;
                if item.kind == kind {
                    break Some(item);
                }
            },
        }
    };
    if kind == "arith" {
        let a = items::arithmetic(pools, rng)?;
        // The same operation, one operand changed.
        let (x, y) = operands(&a)?;
        let (x2, y2) = if rng.random_bool(0.5) { (x, (y + rng.random_range(1..5)) % 100) } else { ((x + rng.random_range(1..5)) % 100, y) };
        let (x2, y2) = if a.kind == "sub" && y2 > x2 { (y2, x2) } else { (x2, y2) };
        let (x2, y2) = if a.kind == "mul" { (x2 % 13, y2 % 13) } else { (x2, y2) };
        let b = arith_item(pools, rng, a.kind, x2, y2);
        // The changed problem must be held out in this split too.
        return (a.subject != b.subject && pools.holds(&b.keys[0])).then_some((a, b));
    }
    let a = draw(rng)?;
    let b = draw(rng)?;
    (a.subject != b.subject && a.check != b.check).then_some((a, b))
}

/// The operands of an arithmetic item, from its subject `a + b`.
fn operands(item: &Item) -> Option<(i64, i64)> {
    let s = item.subject.as_deref()?;
    let mut parts = s.split(' ');
    let a = parts.next()?.parse().ok()?;
    parts.next()?;
    let b = parts.next()?.parse().ok()?;
    Some((a, b))
}

/// Question A, its answer, "Sorry, I meant B", B's answer.
fn user_correction(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let (a, b) = item_pair(pools, rng)?;
    let (sa, sb) = (a.subject.as_deref()?, b.subject.as_deref()?);
    let fix = match rng.random_range(0..3) {
        0 => format!("Sorry, I meant {sb}."),
        1 => format!("No, I meant {sb}."),
        _ => format!("Oops, I meant {sb}, not {sa}."),
    };
    let keys = [a.keys.clone(), b.keys.clone()].concat();
    let mut messages = a.exchange(rng);
    messages.push(Message::user(fix));
    messages.extend(b.reply(rng, 2));
    Some(Draft { kind: "user_correction".into(), keys, messages, check: b.check.clone() })
}

/// A question, a wrong answer (kept out of the loss), the user's objection, the fixed answer.
fn assistant_correction(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let item = base_item(pools, rng)?;
    let (wrong, wrong_term) = item.wrong.clone()?;
    let objection = pick(rng, &["That's not right.", "Are you sure? I don't think that's correct.", "That's wrong. Please check again."])?;
    let apology = pick(rng, &["You're right, sorry.", "My mistake.", "Sorry, I was wrong."])?;
    let fixed = format!("{apology} {}", item.answer);
    let check = match (item.check.clone(), wrong_term) {
        (Check::Mentions { all, mut none, ignore }, Some(term)) => {
            none.push(term);
            Check::Mentions { all, none, ignore }
        }
        (check, _) => check,
    };
    let messages =
        vec![Message::user(&item.question), Message::assistant_unlearned(wrong), Message::user(*objection), Message::assistant(fixed)];
    Some(Draft { kind: "assistant_correction".into(), keys: item.keys, messages, check })
}

/// A right answer, a doubting user, and the assistant keeping its (right) answer.
fn challenge_holds(pools: &Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let item = base_item(pools, rng)?;
    item.wrong.as_ref()?;
    let doubt = pick(rng, &["Are you sure?", "Really? Check again.", "I don't think that's right."])?;
    let mut messages = item.exchange(rng);
    let first = messages.last().expect("an exchange ends with the answer").content.clone();
    let answer = format!("{} {first}", pick(rng, &["Yes, I'm sure:", "I checked again:", "It is right:"])?);
    messages.push(Message::user(*doubt));
    messages.push(Message::assistant(answer));
    Some(Draft { kind: "challenge_holds".into(), keys: item.keys.clone(), messages, check: item.check.clone() })
}
