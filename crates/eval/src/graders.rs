//! Graders that need no model: OpenAI Evals' `match`, `includes`, `fuzzy_match` and `json_match`,
//! and [`Constraint`], what a system message demands of the form of an answer. The task suite's
//! own graders ([`chatforge_data::tasks::Check`]) are the programmatic ones.

use chatforge_data::tasks::{is_refusal, json_adherent, sounds_shakespearean, Grade};
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn pass(reason: impl Into<String>) -> Grade {
    Grade { score: 1.0, reason: reason.into() }
}

fn fail(reason: impl Into<String>) -> Grade {
    Grade { score: 0.0, reason: reason.into() }
}

fn fold(s: &str, ignore_case: bool) -> String {
    if ignore_case {
        s.to_lowercase()
    } else {
        s.to_string()
    }
}

/// OpenAI's `Match`: the answer (leading spaces aside) starts with one of the ideal answers.
pub fn match_grade(answer: &str, ideals: &[String], ignore_case: bool) -> Grade {
    let a = fold(answer.trim_start(), ignore_case);
    match ideals.iter().find(|i| !i.is_empty() && a.starts_with(&fold(i, ignore_case))) {
        Some(i) => pass(format!("starts with {i:?}")),
        None => fail("starts with none of the ideal answers"),
    }
}

/// OpenAI's `Includes`: the answer contains one of the ideal answers.
pub fn includes_grade(answer: &str, ideals: &[String], ignore_case: bool) -> Grade {
    let a = fold(answer, ignore_case);
    match ideals.iter().find(|i| !i.is_empty() && a.contains(&fold(i, ignore_case))) {
        Some(i) => pass(format!("includes {i:?}")),
        None => fail("includes none of the ideal answers"),
    }
}

/// SQuAD-style normalisation, as OpenAI's `fuzzy_match` does it: lower case, no punctuation, no
/// articles (a, an, the), single spaces.
pub fn normalize(s: &str) -> String {
    let lower: String = s.to_lowercase().chars().map(|c| if c.is_ascii_punctuation() { ' ' } else { c }).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Token F1 between two normalised texts.
pub fn f1(a: &str, b: &str) -> f64 {
    let (ta, tb): (Vec<&str>, Vec<&str>) = (a.split_whitespace().collect(), b.split_whitespace().collect());
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    let mut pool = tb.clone();
    let mut common = 0usize;
    for t in &ta {
        if let Some(i) = pool.iter().position(|x| x == t) {
            pool.swap_remove(i);
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (p, r) = (common as f64 / ta.len() as f64, common as f64 / tb.len() as f64);
    2.0 * p * r / (p + r)
}

/// OpenAI's `FuzzyMatch`: after [`normalize`], the answer contains an ideal answer or is
/// contained in one (an empty answer matches nothing). Also returns the best token F1.
pub fn fuzzy_match_grade(answer: &str, ideals: &[String]) -> (Grade, f64) {
    let a = normalize(answer);
    let best_f1 = ideals.iter().map(|i| f1(&a, &normalize(i))).fold(0.0, f64::max);
    if a.is_empty() {
        return (fail("empty answer"), best_f1);
    }
    for i in ideals {
        let n = normalize(i);
        if !n.is_empty() && (a.contains(&n) || n.contains(&a)) {
            return (pass(format!("fuzzy match with {i:?}")), best_f1);
        }
    }
    (fail("no fuzzy match"), best_f1)
}

/// Whether two JSON values are equal: objects key by key (order ignored), arrays in order,
/// numbers by value (`1` equals `1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w))),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equal(v, w)),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// OpenAI's `JsonMatch`: the answer parses as JSON equal ([`json_equal`]) to one of the ideal
/// answers (each a JSON text).
pub fn json_match_grade(answer: &str, ideals: &[String]) -> Grade {
    let got: Value = match serde_json::from_str(answer.trim()) {
        Ok(v) => v,
        Err(e) => return fail(format!("not JSON: {e}")),
    };
    for i in ideals {
        match serde_json::from_str::<Value>(i) {
            Ok(want) if json_equal(&got, &want) => return pass("equal JSON"),
            _ => {}
        }
    }
    fail("JSON, but equal to no ideal answer")
}

/// What a system message demands of an answer's form, whatever the question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// Only a JSON object holding these keys.
    Json { keys: Vec<String> },
    /// A single word.
    OneWord,
    /// No lower-case letters (and some letters).
    UpperCase,
    /// Speaks like a Shakespearean character.
    Persona,
    /// Declines (the system message forbids the topic).
    Refuse,
}

impl Constraint {
    pub fn name(&self) -> &'static str {
        match self {
            Constraint::Json { .. } => "json",
            Constraint::OneWord => "one_word",
            Constraint::UpperCase => "upper_case",
            Constraint::Persona => "persona",
            Constraint::Refuse => "refuse",
        }
    }

    /// Whether `answer` obeys the constraint (1 or 0).
    pub fn grade(&self, answer: &str) -> Grade {
        let answer = answer.trim();
        match self {
            Constraint::Json { keys } => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                if json_adherent(answer, &keys) {
                    pass("a JSON object with the keys")
                } else {
                    fail("not a JSON object with the keys")
                }
            }
            Constraint::OneWord => {
                let n = answer.trim_matches(|c: char| !c.is_alphanumeric()).split_whitespace().count();
                if n == 1 {
                    pass("one word")
                } else {
                    fail(format!("{n} words"))
                }
            }
            Constraint::UpperCase => {
                if !answer.chars().any(char::is_alphabetic) {
                    fail("no letters")
                } else if answer.chars().any(char::is_lowercase) {
                    fail("lower-case letters")
                } else {
                    pass("upper case")
                }
            }
            Constraint::Persona => {
                if sounds_shakespearean(answer) {
                    pass("Shakespearean")
                } else {
                    fail("not Shakespearean")
                }
            }
            Constraint::Refuse => {
                if is_refusal(answer) {
                    pass("declined")
                } else {
                    fail("complied")
                }
            }
        }
    }
}

/// Fills a model-graded prompt template: `{input}` (the last user message), `{completion}` and
/// `{ideal}` (the first ideal answer, or empty).
pub fn fill_template(template: &str, input: &str, completion: &str, ideal: &str) -> String {
    template.replace("{input}", input).replace("{completion}", completion).replace("{ideal}", ideal)
}

/// The index of the highest score (the first on ties); `None` if empty or all NaN.
pub fn argmax(xs: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, x) in xs.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|b| *x > xs[b]) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn match_passes_and_fails() {
        assert_eq!(match_grade(" 42 is the answer", &s(&["42"]), false).score, 1.0);
        assert_eq!(match_grade("The answer is 42", &s(&["42"]), false).score, 0.0);
        assert_eq!(match_grade("hamlet", &s(&["Hamlet"]), false).score, 0.0);
        assert_eq!(match_grade("hamlet", &s(&["Hamlet"]), true).score, 1.0);
        assert_eq!(match_grade("anything", &s(&[""]), false).score, 0.0, "an empty ideal matches nothing");
        assert_eq!(match_grade("Othello.", &s(&["Macbeth", "Othello"]), false).score, 1.0);
    }

    #[test]
    fn includes_passes_and_fails() {
        assert_eq!(includes_grade("The answer is 42.", &s(&["42"]), false).score, 1.0);
        assert_eq!(includes_grade("The answer is 41.", &s(&["42"]), false).score, 0.0);
        assert_eq!(includes_grade("in MACBETH", &s(&["Macbeth"]), false).score, 0.0);
        assert_eq!(includes_grade("in MACBETH", &s(&["Macbeth"]), true).score, 1.0);
    }

    #[test]
    fn fuzzy_match_passes_and_fails() {
        assert_eq!(normalize("The  Tempest!"), "tempest");
        assert_eq!(fuzzy_match_grade("It is The Tempest.", &s(&["the tempest"])).0.score, 1.0);
        assert_eq!(fuzzy_match_grade("Tempest", &s(&["The Tempest, a play"])).0.score, 1.0, "contained in the ideal");
        assert_eq!(fuzzy_match_grade("Hamlet", &s(&["The Tempest"])).0.score, 0.0);
        assert_eq!(fuzzy_match_grade("...", &s(&["The Tempest"])).0.score, 0.0, "empty after normalising");
        let (_, f) = fuzzy_match_grade("prince hamlet of denmark", &s(&["hamlet prince"]));
        assert!((f - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-9, "f1 {f}");
    }

    #[test]
    fn json_match_passes_and_fails() {
        let ideal = s(&[r#"{"play": "Hamlet", "act": 3}"#]);
        assert_eq!(json_match_grade(r#"{"act": 3.0, "play": "Hamlet"}"#, &ideal).score, 1.0);
        assert_eq!(json_match_grade(r#"{"act": 2, "play": "Hamlet"}"#, &ideal).score, 0.0);
        assert_eq!(json_match_grade(r#"{"play": "Hamlet"}"#, &ideal).score, 0.0, "a missing key");
        assert_eq!(json_match_grade(r#"{"play": "Hamlet", "act": 3, "x": 1}"#, &ideal).score, 0.0, "an extra key");
        assert_eq!(json_match_grade("Hamlet, act 3", &ideal).score, 0.0);
        assert_eq!(json_match_grade("[1, 2]", &s(&["[1,2]"])).score, 1.0);
        assert_eq!(json_match_grade("[2, 1]", &s(&["[1,2]"])).score, 0.0);
    }

    #[test]
    fn constraints_pass_and_fail() {
        let json = Constraint::Json { keys: s(&["answer"]) };
        assert_eq!(json.grade(r#"{"answer": "Hamlet"}"#).score, 1.0);
        assert_eq!(json.grade(r#"{"reply": "Hamlet"}"#).score, 0.0);
        assert_eq!(json.grade("Hamlet").score, 0.0);
        assert_eq!(Constraint::OneWord.grade("Hamlet.").score, 1.0);
        assert_eq!(Constraint::OneWord.grade("It is Hamlet.").score, 0.0);
        assert_eq!(Constraint::UpperCase.grade("HAMLET, ACT III.").score, 1.0);
        assert_eq!(Constraint::UpperCase.grade("Hamlet").score, 0.0);
        assert_eq!(Constraint::UpperCase.grade("42").score, 0.0);
        assert_eq!(Constraint::Persona.grade("Marry, 'tis Hamlet.").score, 1.0);
        assert_eq!(Constraint::Persona.grade("It is Hamlet.").score, 0.0);
        assert_eq!(Constraint::Refuse.grade("I can't help with that.").score, 1.0);
        assert_eq!(Constraint::Refuse.grade("Here is how.").score, 0.0);
    }

    #[test]
    fn templates_and_argmax() {
        assert_eq!(fill_template("Q: {input}\nA: {completion}\nIdeal: {ideal}", "2+2?", "4", "4"), "Q: 2+2?\nA: 4\nIdeal: 4");
        assert_eq!(argmax(&[-3.0, -1.0, -2.0]), Some(1));
        assert_eq!(argmax(&[f64::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}
