//! How users ask the questions of the spelling/counting and arithmetic families: the question
//! templates ("frames"), held out by split (`items::phrasings`), so the test split asks in
//! phrasings that training never used.
//!
//! In order: the frames of each kind; the fillers that vary a frame's wording; the wrappers
//! ("Quick question: ...", "... Thanks!") that any question may get.
//!
//! `{w}` is a word, `{l}` a letter, `{t}` a phrase, `{a}` and `{b}` numbers. A frame may also
//! hold filler slots (`{things}`, `{who}`, `{lost}`, ...), filled at random from [`FILLERS`] in
//! every split: the frame is what is held out, not its words, so training sees "ate" and "away
//! from" in some frames and the test asks with them in frames it never saw. A tiny model learns
//! the mapping from a question to its tool call only from many frames: with a dozen per kind it
//! learned each frame by heart and copied the wrong numbers into new ones.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::pick;

// ---------------------------------------------------------------------------------------------
// 1. Frames

pub(super) const LETTER_COUNT: &[&str] = &[
    "How many times does the letter \"{l}\" appear in \"{w}\"?",
    "How many {l}'s are in \"{w}\"?",
    "Count the letter \"{l}\" in the word \"{w}\".",
    "how many {l} in {w}?",
    "How many \"{l}\"s does \"{w}\" have?",
    "In the word \"{w}\", how many times do you see \"{l}\"?",
    "Count how often \"{l}\" occurs in \"{w}\".",
    "How often does \"{l}\" occur in the word {w}?",
    "What is the number of \"{l}\" letters in \"{w}\"?",
    "Tell me how many {l}'s there are in {w}.",
    "Count the {l}'s in \"{w}\".",
    "How many times does {l} occur in {w}?",
    "Number of \"{l}\" in \"{w}\"?",
    "{w}: how many {l}'s?",
    "How many \"{l}\" are there in the word \"{w}\"?",
    "How many times is \"{l}\" in {w}?",
    "Tell me the number of times \"{l}\" shows up in \"{w}\".",
    "Count occurrences of the letter {l} in the word {w}.",
    "I need the count of \"{l}\" in \"{w}\".",
    "How many {l}'s does the word {w} contain?",
];

pub(super) const WORD_LENGTH: &[&str] = &[
    "How many letters are in \"{w}\"?",
    "How many letters does the word \"{w}\" have?",
    "Count the letters in \"{w}\".",
    "How long is the word \"{w}\", in letters?",
    "What is the length of \"{w}\"?",
    "how many letters in {w}?",
    "Give the number of letters in the word \"{w}\".",
    "\"{w}\": how many letters?",
    "How many letters does {w} have?",
    "What's the length of the word {w}?",
    "Count the letters of {w}.",
    "Number of letters in \"{w}\"?",
    "How many letters make up \"{w}\"?",
    "Tell me how many letters \"{w}\" has.",
    "The word \"{w}\" has how many letters?",
    "How long is \"{w}\"?",
];

pub(super) const CHAR_COUNT: &[&str] = &[
    "How many characters are in \"{t}\", counting spaces?",
    "Count the characters, spaces included, in \"{t}\".",
    "What is the length of \"{t}\" in characters, spaces included?",
    "How many characters long is \"{t}\", with spaces?",
    "Give the character count of \"{t}\", counting spaces.",
    "Count every character of \"{t}\", including spaces.",
    "How many characters, including spaces, does \"{t}\" have?",
    "Including spaces, how long is \"{t}\" in characters?",
    "Tell me the number of characters in \"{t}\", spaces included.",
    "What is the character count of \"{t}\", spaces counted?",
];

pub(super) const WORD_COUNT: &[&str] = &[
    "How many words are in \"{t}\"?",
    "Count the words in \"{t}\".",
    "How many words does \"{t}\" have?",
    "What is the word count of \"{t}\"?",
    "\"{t}\": how many words?",
    "Count how many words \"{t}\" has.",
    "How many words make up \"{t}\"?",
    "Tell me the number of words in \"{t}\".",
    "Number of words in \"{t}\"?",
    "In \"{t}\", how many words are there?",
];

pub(super) const SPELL: &[&str] = &[
    "Spell \"{w}\" letter by letter.",
    "How do you spell \"{w}\"? Give it letter by letter.",
    "Spell out the word \"{w}\".",
    "Can you spell {w} for me?",
    "Write \"{w}\" one letter at a time.",
    "Break \"{w}\" into its letters.",
    "What are the letters of \"{w}\", in order?",
    "Spell {w}.",
    "Please spell \"{w}\".",
    "Give me the letters of \"{w}\" one by one.",
    "How is \"{w}\" spelled?",
    "Spell the word {w} out for me.",
    "List the letters in \"{w}\".",
    "Letter by letter, how do you write \"{w}\"?",
];

/// How users ask for a sum, a difference or a product: symbols, words, word problems.
pub(super) const ADD: &[&str] = &[
    "What is {a} + {b}?",
    "What is {a} plus {b}?",
    "{do} {a} + {b}.",
    "{a} + {b} = ?",
    "Add {a} and {b}.",
    "What is the sum of {a} and {b}?",
    "I have {a} {things} and {gain} {b} more. How many {things} do I have?",
    "{a} plus {b} equals what?",
    "If you add {b} to {a}, what do you get?",
    "{who} had {a} {things} and {gained} {b} more. How many {things} does {who} have now?",
    "What do {a} and {b} make together?",
    "{do} {a}+{b}.",
    "Add {b} to {a}.",
    "Find the sum of {a} and {b}.",
    "What is the total of {a} and {b}?",
    "{a} + {b}",
    "What's {a} plus {b}?",
    "There are {a} {things} in one box and {b} in another. How many {things} are there in all?",
    "{who} has {a} {things}. {who} {gains} {b} more. How many {things} now?",
    "What is {b} more than {a}?",
    "Increase {a} by {b}.",
    "Tell me what {a} plus {b} is.",
    "{a} and {b} added together is what?",
    "What number is {a} + {b}?",
];

pub(super) const SUB: &[&str] = &[
    "What is {a} - {b}?",
    "What is {a} minus {b}?",
    "Subtract {b} from {a}.",
    "{a} - {b} = ?",
    "What is the difference between {a} and {b}?",
    "I had {a} {things} and {lost} {b}. How many are left?",
    "Take {b} away from {a}.",
    "What is {a} take away {b}?",
    "A shelf holds {a} {things} and {b} are removed. How many remain?",
    "{do} {a}-{b}.",
    "How much is {a} less {b}?",
    "{a} minus {b} equals what?",
    "{do} {a} - {b}.",
    "{who} had {a} {things} and {lost} {b} of them. How many {things} does {who} have now?",
    "What is {b} less than {a}?",
    "Take {b} from {a}.",
    "Remove {b} from {a}. What is left?",
    "{a} - {b}",
    "What's {a} minus {b}?",
    "If you subtract {b} from {a}, what do you get?",
    "There were {a} {things}. {b} were taken. How many {things} are left?",
    "Decrease {a} by {b}.",
    "{who} has {a} {things} and {loses} {b}. How many are left?",
    "What number is {a} - {b}?",
];

pub(super) const MUL: &[&str] = &[
    "What is {a} * {b}?",
    "What is {a} times {b}?",
    "Multiply {a} by {b}.",
    "{a} x {b} = ?",
    "What is the product of {a} and {b}?",
    "There are {a} boxes with {b} {things} in each. How many {things} are there?",
    "What is {a} multiplied by {b}?",
    "{do} {a}*{b}.",
    "{a} times {b} equals what?",
    "If each of {a} friends brings {b} {things}, how many {things} are there?",
    "How much is {a} groups of {b}?",
    "{do} {a} × {b}.",
    "{do} {a} * {b}.",
    "Multiply {a} and {b}.",
    "Find the product of {a} and {b}.",
    "{a} * {b} = ?",
    "{a} * {b}",
    "What's {a} times {b}?",
    "{who} buys {a} bags of {b} {things}. How many {things} is that?",
    "There are {a} rows of {b} {things}. How many {things} in total?",
    "{a} multiplied by {b} is what?",
    "Tell me what {a} times {b} is.",
    "What do you get if you multiply {a} by {b}?",
    "{who} has {a} boxes, each with {b} {things}. How many {things} does {who} have?",
];

// ---------------------------------------------------------------------------------------------
// 2. Fillers

/// The filler slots of the frames and their words, the same in every split. A slot that appears
/// twice in a frame gets the same word both times.
const FILLERS: &[(&str, &[&str])] = &[
    ("{do}", &["Compute", "Calculate", "Work out", "Evaluate", "Find", "Solve"]),
    ("{things}", &["apples", "coins", "books", "marbles", "stamps", "pens", "shells", "cards", "eggs", "sweets"]),
    ("{who}", &["Tom", "Anna", "Sam", "Mary", "Ben", "Lucy", "Omar", "Priya"]),
    ("{gain}", &["get", "find", "buy", "win", "receive"]),
    ("{gained}", &["found", "got", "bought", "won", "received"]),
    ("{gains}", &["finds", "gets", "buys", "wins", "receives"]),
    ("{lost}", &["ate", "lost", "sold", "gave away", "used", "broke"]),
    ("{loses}", &["eats", "loses", "sells", "gives away", "uses", "breaks"]),
];

/// A frame with its filler slots filled at random.
pub(super) fn fill(frame: &str, rng: &mut ChaCha8Rng) -> String {
    let mut out = frame.to_string();
    for (slot, words) in FILLERS {
        if out.contains(slot) {
            let word = pick(rng, words).expect("fillers are not empty");
            out = out.replace(slot, word);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 3. Wrappers

/// Openings and closings a question may get in any split (a quarter get an opening, a sixth a
/// closing): the question inside is what the tool call is made from.
const OPENINGS: &[&str] = &["Quick question: ", "Hi! ", "Please help. ", "Question: ", "Hello. "];
const CLOSINGS: &[&str] = &[" Thanks!", " Thank you.", " Please answer briefly."];

/// The question, maybe with an opening and a closing.
pub(super) fn wrap(question: String, rng: &mut ChaCha8Rng) -> String {
    let open = if rng.random_bool(0.25) { *pick(rng, OPENINGS).expect("not empty") } else { "" };
    let close = if rng.random_bool(1.0 / 6.0) { *pick(rng, CLOSINGS).expect("not empty") } else { "" };
    format!("{open}{question}{close}")
}
