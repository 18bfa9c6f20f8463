//! Demonstrations of calling a function the client declares (SFT pool only): the system message
//! lists one to three made-up functions the way `tools::declare` writes an API caller's
//! `tools`, the user asks for something one of them does, the assistant calls it with arguments
//! taken from the question, the client's result comes back as a `tool` turn, and the assistant
//! answers from it. So the model learns to read a tools list, not only its built-in tools.
//! Only in the SFT pool: an eval or an RL rollout has no client to run these functions.

use rand::seq::SliceRandom;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::check::Check;
use super::{pick, Draft};
use crate::chat::{Conversation, Message, ToolCall};
use crate::tools::{declare, Function};

/// A made-up function: its definition, how users ask for it, the argument values to draw, the
/// client's result and the answer from it.
struct Spec {
    name: &'static str,
    description: &'static str,
    param: &'static str,
    values: &'static [&'static str],
    asks: &'static [&'static str],
    result: &'static str,
    answer: &'static str,
}

const SPECS: [Spec; 6] = [
    Spec {
        name: "get_weather",
        description: "Current weather in a city.",
        param: "city",
        values: &["Verona", "Padua", "Venice", "Mantua", "Athens", "Windsor", "London", "Milan", "Rome", "Elsinore"],
        asks: &["What is the weather in {v}?", "Is it raining in {v}?", "How warm is it in {v} today?"],
        result: "sunny, 21 C",
        answer: "In {v} it is sunny, 21 C.",
    },
    Spec {
        name: "find_book",
        description: "Where a book is in the library.",
        param: "title",
        values: &["Hamlet", "Macbeth", "Othello", "King Lear", "The Tempest", "Twelfth Night", "Comus", "Paradise Lost"],
        asks: &["Where can I find {v} in the library?", "Which shelf is {v} on?", "Find the book {v} for me."],
        result: "shelf 4, row 2",
        answer: "{v} is on shelf 4, row 2.",
    },
    Spec {
        name: "set_timer",
        description: "Starts a timer.",
        param: "minutes",
        values: &["5", "10", "15", "20", "25", "30", "45", "60"],
        asks: &["Set a timer for {v} minutes.", "Start a {v} minute timer.", "Remind me in {v} minutes."],
        result: "timer started",
        answer: "Done: the timer for {v} minutes is running.",
    },
    Spec {
        name: "define_word",
        description: "The meaning of an English word.",
        param: "word",
        values: &["forsooth", "anon", "prithee", "wherefore", "hither", "methinks", "perchance", "ere"],
        asks: &["What does \"{v}\" mean?", "Define the word {v}.", "Look up the meaning of \"{v}\"."],
        result: "an old word, still found in Shakespeare",
        answer: "\"{v}\" is an old word, still found in Shakespeare.",
    },
    Spec {
        name: "play_song",
        description: "Plays a song by its title.",
        param: "title",
        values: &["Greensleeves", "Willow Song", "It Was a Lover and His Lass", "Sigh No More", "Full Fathom Five"],
        asks: &["Play {v}.", "Can you put on {v}?", "I'd like to hear {v}."],
        result: "playing",
        answer: "Now playing {v}.",
    },
    Spec {
        name: "book_table",
        description: "Books a table at the restaurant for a number of people.",
        param: "people",
        values: &["2", "3", "4", "5", "6", "8"],
        asks: &["Book a table for {v}.", "Reserve a table for {v} people, please.", "We are {v}; get us a table."],
        result: "booked for 8 pm",
        answer: "Your table for {v} is booked for 8 pm.",
    },
];

fn function(spec: &Spec) -> Function {
    let kind = if spec.values[0].parse::<i64>().is_ok() { "integer" } else { "string" };
    Function {
        name: spec.name.into(),
        description: Some(spec.description.into()),
        parameters: json!({"type": "object", "properties": {spec.param: {"type": kind}}, "required": [spec.param]}),
    }
}

/// A conversation that calls one of two or three declared functions.
pub(super) fn generate(rng: &mut ChaCha8Rng) -> Option<Draft> {
    let mut order: Vec<usize> = (0..SPECS.len()).collect();
    order.shuffle(rng);
    let listed: Vec<&Spec> = order[..rng.random_range(1..=3)].iter().map(|&i| &SPECS[i]).collect();
    let spec = *pick(rng, &listed)?;
    let v = *pick(rng, spec.values)?;
    let question = pick(rng, spec.asks)?.replace("{v}", v);
    let value = v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v));
    let arguments = format!("{{{}: {value}}}", Value::from(spec.param));
    let system = pick(rng, &[None, Some("You are a helpful assistant."), Some("Be brief.")])?;
    let mut messages: Vec<Message> = system.iter().map(|s| Message::system(*s)).collect();
    messages.push(Message::user(&question));
    let functions: Vec<Function> = listed.iter().map(|s| function(s)).collect();
    let mut messages = declare(&Conversation::new(messages), &functions).messages;
    let answer = spec.answer.replace("{v}", v);
    messages.push(Message::assistant_calls("", vec![ToolCall::new("call_1", spec.name, arguments)]));
    messages.push(Message::tool("call_1", spec.result));
    messages.push(Message::assistant(&answer));
    let check = Check::mentions(&[v]);
    Some(Draft { kind: "declared_tool".into(), keys: vec![format!("declared:{}:{v}", spec.name)], messages, check })
}
