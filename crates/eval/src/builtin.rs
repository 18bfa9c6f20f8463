//! The built-in evals' samples, made from the task suite's held-out test split and the bundled
//! corpus (`chatforge eval --write-builtin evals/data` writes them; they are committed, and a test
//! checks that they are what this code makes).
//!
//! The test split holds out its items (lines, characters, words, problems, works, prompts) from
//! training for the suite's seed 1, the speedrun's; the runner also drops any sample whose keys
//! a run's SFT data trained on, so another seed cannot leak into the scores.

use std::collections::BTreeMap;
use std::path::Path;

use chatforge_data::chat::{Message, Role};
use chatforge_data::tasks::{generate_suite, injection_templates, Check, Corpus, Counts, Family, Split, SuiteConfig, Task};
use serde_json::Value;
use xxhash::hash;

use crate::graders::Constraint;
use crate::registry::{Input, Sample};
use crate::Result;

mod xxhash {
    /// A stable hash for deterministic choices (FNV-1a; no need for speed here).
    pub fn hash(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
    }
}

/// The suite the samples come from: the test split only (train and val are not generated), with
/// more system and refusal tasks than SFT's own test split, to have enough of each kind.
pub fn suite_config() -> SuiteConfig {
    let none = Counts::uniform(0);
    SuiteConfig {
        seed: 1,
        train: none,
        prefs: none,
        rl: none,
        val: none,
        test: Counts { shakespeare: 80, spelling: 80, arithmetic: 80, system: 240, refusal: 240, multi_turn: 80, identity: 30 },
    }
}

fn sample_of(t: &Task) -> Sample {
    Sample {
        input: Input::Chat(t.prompt().messages),
        ideal: Some(Value::String(t.reference().to_string())),
        id: Some(t.meta.id.clone()),
        check: Some(t.meta.check.clone()),
        constraint: None,
        choices: vec![],
        pair: None,
        group: Some(t.meta.family.name().to_string()),
        kind: Some(t.meta.kind.clone()),
        keys: t.meta.keys.clone(),
    }
}

/// The constraint a system-family task's system message sets, if it sets one.
fn constraint_of(t: &Task) -> Option<Constraint> {
    Some(match t.meta.kind.as_str() {
        "json" => Constraint::Json { keys: t.meta.check.json_keys()?.into_iter().map(String::from).collect() },
        "one_word" => Constraint::OneWord,
        "upper_case" => Constraint::UpperCase,
        "persona" => Constraint::Persona,
        _ => return None,
    })
}

/// Templates of symmetric prompts: `{x}` is the subject.
const CHARACTER_PROMPTS: &[&str] = &["Tell me about {x}.", "Describe {x} in a few sentences.", "What kind of person is {x}?"];
const PLAY_PROMPTS: &[&str] = &["What is {x} about?", "Tell me about the play {x}."];
const AUTHOR_PROMPTS: &[&str] = &["Who was {x}?", "Tell me about {x}.", "What is {x} known for?", "Write two sentences about {x}."];

fn user(text: String) -> Input {
    Input::Chat(vec![Message::user(text)])
}

fn pair_sample(id: String, group: &str, template: &str, a: &str, b: &str) -> Sample {
    Sample {
        input: user(template.replace("{x}", a)),
        ideal: None,
        id: Some(id),
        check: None,
        constraint: None,
        choices: vec![],
        pair: Some(user(template.replace("{x}", b))),
        group: Some(group.into()),
        kind: None,
        keys: vec![],
    }
}

/// Every built-in samples file: name -> samples.
pub fn builtin_samples(corpus: &Corpus) -> BTreeMap<&'static str, Vec<Sample>> {
    let suite = generate_suite(&suite_config(), corpus);
    let test = &suite.test;
    let of = |f: Family| test.iter().filter(move |t| t.meta.family == f);
    let mut out: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    for (name, family) in [
        ("shakespeare", Family::Shakespeare),
        ("spelling", Family::Spelling),
        ("arithmetic", Family::Arithmetic),
        ("multi_turn", Family::MultiTurn),
        ("identity", Family::Identity),
    ] {
        out.insert(name, of(family).map(sample_of).collect());
    }

    // System-message adherence, and the same questions under a prompt injection worded as
    // the test split's templates are (held out of training).
    let system: Vec<&Task> = of(Family::System).filter(|t| constraint_of(t).is_some() && !t.is_injection()).collect();
    let injections = injection_templates(suite_config().seed, Split::Test);
    out.insert(
        "system",
        system.iter().map(|t| Sample { constraint: constraint_of(t), group: Some("system".into()), ..sample_of(t) }).collect(),
    );
    out.insert(
        "injection",
        system
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut messages = t.prompt().messages;
                let last = messages.last_mut().expect("a task has a user message");
                debug_assert_eq!(last.role, Role::User);
                last.content = injections[i % injections.len()].replace("{q}", &last.content);
                Sample {
                    input: Input::Chat(messages),
                    id: Some(format!("injection-{i:04}")),
                    constraint: constraint_of(t),
                    group: Some("injection".into()),
                    ..sample_of(t)
                }
            })
            .collect(),
    );

    // Refusals: harmful requests and their benign look-alikes.
    out.insert("refusal", of(Family::Refusal).map(sample_of).collect());

    // Multiple choice by log-likelihood: which play a character is in, who wrote a work.
    let titles: Vec<&str> = corpus.plays.iter().map(|p| p.title.as_str()).collect();
    let mut mc = Vec::new();
    for t in of(Family::Shakespeare) {
        let reference = t.reference().to_string();
        let mut choices = match (t.meta.kind.as_str(), &t.meta.check) {
            ("which_play", Check::Mentions { all, .. }) => {
                let Some(title) = all.first().and_then(|g| g.first()) else { continue };
                let Some(stem) = reference.strip_suffix(&format!("{title}.")) else { continue };
                let others: Vec<&&str> = titles.iter().filter(|x| **x != title).collect();
                if others.len() < 3 {
                    continue;
                }
                let h = hash(&t.meta.id) as usize;
                let mut c = vec![reference.clone()];
                for k in 0..3 {
                    c.push(format!("{stem}{}.", others[(h + k * 7919) % others.len()]));
                }
                c.dedup();
                c
            }
            ("who_wrote", _) => {
                let other = if reference.starts_with("William Shakespeare") {
                    reference.replacen("William Shakespeare", "John Milton", 1)
                } else {
                    reference.replacen("John Milton", "William Shakespeare", 1)
                };
                vec![reference.clone(), other]
            }
            _ => continue,
        };
        choices.sort_by_key(|c| hash(&format!("{}{c}", t.meta.id)));
        mc.push(Sample { choices, check: None, ..sample_of(t) });
    }
    out.insert("shakespeare_mc", mc);

    // Symmetry: the two most talkative named characters of each play, adjacent plays, the two authors.
    let mut pairs = Vec::new();
    for (i, play) in corpus.plays.iter().enumerate() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in play.speeches.iter().filter(|s| s.named) {
            *counts.entry(s.speaker.as_str()).or_default() += 1;
        }
        let mut top: Vec<(&str, usize)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if top.len() >= 2 {
            let template = CHARACTER_PROMPTS[i % CHARACTER_PROMPTS.len()];
            pairs.push(pair_sample(format!("characters-{i:02}"), "characters", template, top[0].0, top[1].0));
        }
    }
    for (i, w) in titles.windows(2).enumerate().step_by(2) {
        pairs.push(pair_sample(format!("plays-{i:02}"), "plays", PLAY_PROMPTS[(i / 2) % PLAY_PROMPTS.len()], w[0], w[1]));
    }
    for (i, template) in AUTHOR_PROMPTS.iter().enumerate() {
        pairs.push(pair_sample(format!("authors-{i:02}"), "authors", template, "William Shakespeare", "John Milton"));
    }
    out.insert("symmetry", pairs);

    // "Ask it 10,000 times": a harmful request, a JSON-only question, a benign look-alike.
    let mut many = Vec::new();
    if let Some(t) = of(Family::Refusal).find(|t| t.meta.kind == "harmful") {
        many.push(sample_of(t));
    }
    if let Some(t) = system.iter().find(|t| t.meta.kind == "json") {
        many.push(sample_of(t));
    }
    if let Some(t) = of(Family::Refusal).find(|t| t.meta.kind == "benign") {
        many.push(sample_of(t));
    }
    out.insert("many", many);
    out
}

/// Writes every built-in samples file as `dir/<name>.jsonl`.
pub fn write_builtin(dir: &Path, corpus: &Corpus) -> Result<Vec<(String, usize)>> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let mut written = Vec::new();
    for (name, samples) in builtin_samples(corpus) {
        chatforge_data::chat::write_jsonl(&dir.join(format!("{name}.jsonl")), &samples)?;
        written.push((name.to_string(), samples.len()));
    }
    Ok(written)
}
