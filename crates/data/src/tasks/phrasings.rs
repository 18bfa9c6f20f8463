//! How users ask the questions of the spelling/counting and arithmetic families: the question
//! templates, held out by split (`items::phrasings`), so the test split asks in words that
//! training never used. `{w}` is a word, `{l}` a letter, `{t}` a phrase, `{a}` and `{b}` numbers.

pub(super) const LETTER_COUNT: [&str; 10] = [
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
];

pub(super) const WORD_LENGTH: [&str; 8] = [
    "How many letters are in \"{w}\"?",
    "How many letters does the word \"{w}\" have?",
    "Count the letters in \"{w}\".",
    "How long is the word \"{w}\", in letters?",
    "What is the length of \"{w}\"?",
    "how many letters in {w}?",
    "Give the number of letters in the word \"{w}\".",
    "\"{w}\": how many letters?",
];

pub(super) const CHAR_COUNT: [&str; 5] = [
    "How many characters are in \"{t}\", counting spaces?",
    "Count the characters, spaces included, in \"{t}\".",
    "What is the length of \"{t}\" in characters, spaces included?",
    "How many characters long is \"{t}\", with spaces?",
    "Give the character count of \"{t}\", counting spaces.",
];

pub(super) const WORD_COUNT: [&str; 5] = [
    "How many words are in \"{t}\"?",
    "Count the words in \"{t}\".",
    "How many words does \"{t}\" have?",
    "What is the word count of \"{t}\"?",
    "\"{t}\": how many words?",
];

pub(super) const SPELL: [&str; 7] = [
    "Spell \"{w}\" letter by letter.",
    "How do you spell \"{w}\"? Give it letter by letter.",
    "Spell out the word \"{w}\".",
    "Can you spell {w} for me?",
    "Write \"{w}\" one letter at a time.",
    "Break \"{w}\" into its letters.",
    "What are the letters of \"{w}\", in order?",
];

/// How users ask for a sum, a difference or a product: symbols, words, word problems.
pub(super) const ADD: [&str; 12] = [
    "What is {a} + {b}?",
    "What is {a} plus {b}?",
    "Compute {a} + {b}.",
    "{a} + {b} = ?",
    "Add {a} and {b}.",
    "What is the sum of {a} and {b}?",
    "I have {a} apples and get {b} more. How many apples do I have?",
    "{a} plus {b} equals what?",
    "If you add {b} to {a}, what do you get?",
    "Tom had {a} coins and found {b} more. How many coins does he have now?",
    "What do {a} and {b} make together?",
    "Calculate {a}+{b}.",
];

pub(super) const SUB: [&str; 12] = [
    "What is {a} - {b}?",
    "What is {a} minus {b}?",
    "Subtract {b} from {a}.",
    "{a} - {b} = ?",
    "What is the difference between {a} and {b}?",
    "I had {a} apples and ate {b}. How many are left?",
    "Take {b} away from {a}.",
    "What is {a} take away {b}?",
    "A shelf holds {a} books and {b} are removed. How many remain?",
    "Calculate {a}-{b}.",
    "How much is {a} less {b}?",
    "{a} minus {b} equals what?",
];

pub(super) const MUL: [&str; 12] = [
    "What is {a} * {b}?",
    "What is {a} times {b}?",
    "Multiply {a} by {b}.",
    "{a} x {b} = ?",
    "What is the product of {a} and {b}?",
    "There are {a} boxes with {b} pens in each. How many pens are there?",
    "What is {a} multiplied by {b}?",
    "Calculate {a}*{b}.",
    "{a} times {b} equals what?",
    "If each of {a} friends brings {b} apples, how many apples are there?",
    "How much is {a} groups of {b}?",
    "Compute {a} × {b}.",
];
