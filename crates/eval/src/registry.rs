//! The evals registry, in the OpenAI Evals format: YAML files whose entries are either an eval's
//! name pointing at an id (`arithmetic: {id: arithmetic.test.v0, description: ...}`) or the id's
//! spec (`arithmetic.test.v0: {class: ..., args: {samples_jsonl: ...}}`), and JSONL samples
//! `{"input": [messages], "ideal": "..." | [...]}`. Adding an eval is dropping a YAML file and
//! its samples into the folder.
//!
//! Sample paths are relative to the registry folder (`data/arithmetic.jsonl`); a path starting
//! with `run:` is inside the run folder being evaluated (`run:data/val.jsonl`).
//!
//! Samples may carry more than OpenAI's two fields; each grader reads what it needs:
//! `check` (a task-suite [`Check`]), `constraint` (what a system message demands), `choices`
//! (multiple choice), `pair` (the other input of a symmetry pair), `group` and `kind` (for
//! per-family and per-kind figures), `keys` (what the sample is about, for the held-out check).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatforge_data::chat::{Conversation, Message, Role};
use chatforge_data::tasks::Check;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graders::Constraint;
use crate::{Error, Result};

/// How an eval grades (the `class` of its spec). OpenAI's class paths are accepted for the four
/// basic graders and model-graded classification, and short names for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The answer starts with an ideal answer.
    Match,
    /// The answer contains an ideal answer.
    Includes,
    /// After normalising (case, punctuation, articles, spaces), one contains the other.
    FuzzyMatch,
    /// The answer parses as JSON equal to an ideal answer's JSON.
    JsonMatch,
    /// The sample's `check`: the task suite's graders.
    Programmatic,
    /// The sample's `constraint`: whether the answer obeys the system message.
    ObeysSystem,
    /// Refusal checks, with harmful compliance and over-refusal by `kind` (`harmful` / `benign`).
    Refusal,
    /// The choice with the highest log-likelihood is the ideal one.
    MultipleChoice,
    /// A judge (a checkpoint, by log-likelihood, or the reward model) picks among choice strings.
    ModelGraded,
    /// Answers to the two prompts of a pair, compared by length and reward.
    Symmetry,
    /// Many samples per prompt: the distribution of grades and rewards, and the worst case.
    ManySamples,
    /// Bits per byte on the run's held-out token stream.
    Bpb,
    /// Next-word accuracy on held-out lines of text.
    NextWord,
}

impl Class {
    pub fn parse(s: &str) -> Option<Class> {
        Some(match s {
            "evals.elsuite.basic.match:Match" | "match" => Class::Match,
            "evals.elsuite.basic.includes:Includes" | "includes" => Class::Includes,
            "evals.elsuite.basic.fuzzy_match:FuzzyMatch" | "fuzzy_match" => Class::FuzzyMatch,
            "evals.elsuite.basic.json_match:JsonMatch" | "json_match" => Class::JsonMatch,
            "evals.elsuite.modelgraded.classify:ModelBasedClassify" | "model_graded" | "chatforge.model_graded" => Class::ModelGraded,
            "chatforge.programmatic" | "programmatic" => Class::Programmatic,
            "chatforge.obeys_system" | "obeys_system" => Class::ObeysSystem,
            "chatforge.refusal" | "refusal" => Class::Refusal,
            "chatforge.multiple_choice" | "multiple_choice" => Class::MultipleChoice,
            "chatforge.symmetry" | "symmetry" => Class::Symmetry,
            "chatforge.many_samples" | "many_samples" => Class::ManySamples,
            "chatforge.bpb" | "bpb" => Class::Bpb,
            "chatforge.next_word" | "next_word" => Class::NextWord,
            _ => return None,
        })
    }

    /// Whether the class reads `args.samples_jsonl`.
    pub fn needs_samples(self) -> bool {
        !matches!(self, Class::Bpb | Class::NextWord)
    }
}

/// An eval's arguments (`args:` in its spec). Unknown keys are an error, so a typo is caught.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Samples file, relative to the registry folder, or `run:PATH` inside the run.
    pub samples_jsonl: Option<String>,
    /// Tokens to generate per answer (default 64).
    pub max_tokens: Option<usize>,
    /// Sampling temperature (default 0: greedy; `many_samples` defaults to 1).
    pub temperature: Option<f32>,
    /// `many_samples`: answers per prompt (default 100; `chatforge eval --samples N` overrides).
    pub n: Option<usize>,
    /// `match` / `includes`: compare ignoring case.
    #[serde(default)]
    pub ignore_case: bool,
    /// Examples shown before each question when a base model is evaluated in plain text (default 3).
    pub few_shot: Option<usize>,
    /// `model_graded`: `rm` (the run's reward model) or a stage whose checkpoint judges (`sft`).
    pub judge: Option<String>,
    /// `model_graded`: the judge's prompt; `{input}`, `{completion}` and `{ideal}` are filled in.
    pub prompt: Option<String>,
    /// `model_graded`: the strings the judge picks among.
    pub choice_strings: Option<Vec<String>>,
    /// `model_graded`: the score of each choice (default 1 for the first, 0 for the others).
    pub choice_scores: Option<BTreeMap<String, f64>>,
    /// `bpb`: tokens of the val stream to score (default 32,768, as pretraining measures it).
    pub tokens: Option<usize>,
    /// `next_word`: held-out lines to ask about (default 300).
    pub lines: Option<usize>,
    /// Seed of sampling (default 0).
    pub seed: Option<u64>,
    /// Chat answers with the built-in tools (calculator, string tools): calls are run and the
    /// answer graded is the turn after them. Default false: a call is answered "tools are
    /// turned off" and the model answers by itself.
    #[serde(default)]
    pub tools: bool,
    /// With `tools`: ground the tools' arguments in the conversation (default true;
    /// `chatforge_data::tools::Ground`). False measures the model writing them freely.
    pub grounded: Option<bool>,
}

/// One eval of the registry.
#[derive(Clone, Debug)]
pub struct EvalSpec {
    /// The short name (`arithmetic`); the first part of the id when no alias names it.
    pub name: String,
    /// `<eval>.<split>.<version>`.
    pub id: String,
    pub class: Class,
    pub args: Args,
    pub description: String,
    /// Which of the eval's metrics become the stage's headline figures in `report.json`
    /// (`{injection_resistance: obeys}`).
    pub report: BTreeMap<String, String>,
    /// The YAML file the spec came from.
    pub file: PathBuf,
    /// The registry folder.
    pub dir: PathBuf,
}

impl EvalSpec {
    /// The samples file, resolved (`run:` paths against `run`).
    pub fn samples_path(&self, run: &Path) -> Option<PathBuf> {
        let p = self.args.samples_jsonl.as_deref()?;
        Some(match p.strip_prefix("run:") {
            Some(rest) => run.join(rest),
            None => self.dir.join(p),
        })
    }

    /// Reads the samples (an error names the file and line).
    pub fn samples(&self, run: &Path) -> Result<Vec<Sample>> {
        let path = self
            .samples_path(run)
            .ok_or_else(|| Error::Registry { path: self.file.clone(), msg: format!("{}: args.samples_jsonl is missing", self.id) })?;
        load_samples(&path)
    }
}

/// A sample's prompt: messages (chat) or a string (a completion prompt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Chat(Vec<Message>),
    Text(String),
}

impl Input {
    /// The input as a conversation (a string is one user message).
    pub fn conversation(&self) -> Conversation {
        match self {
            Input::Chat(m) => Conversation::new(m.clone()),
            Input::Text(s) => Conversation::new(vec![Message::user(s.clone())]),
        }
    }
}

/// One sample of an eval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub input: Input,
    /// The ideal answer: a string, a list of acceptable strings, or (for `json_match`) JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ideal: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<Input>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

impl Sample {
    /// The acceptable answers as strings (JSON that is not a string is written as JSON).
    pub fn ideals(&self) -> Vec<String> {
        match &self.ideal {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect(),
            Some(other) => vec![other.to_string()],
        }
    }
}

/// Reads a samples file: one JSON object per line, blank lines skipped. A bad line is an error
/// that names the file and the line.
pub fn load_samples(path: &Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::BadSample { path: path.to_path_buf(), line: i + 1, msg };
        let s: Sample = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let conv = s.input.conversation();
        conv.validate().map_err(bad)?;
        if conv.messages.last().is_some_and(|m| m.role == Role::Assistant) {
            return Err(bad("the input ends with an assistant message; it must end with the user's".into()));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err(Error::Registry { path: path.to_path_buf(), msg: "no samples".into() });
    }
    Ok(out)
}

/// The registry: every eval of the YAML files in a folder.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub evals: Vec<EvalSpec>,
}

/// A YAML entry, before it is known to be an alias or a spec.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: Option<String>,
    class: Option<String>,
    #[serde(default)]
    args: Option<Args>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    disclaimer: Option<String>,
    #[serde(default)]
    metrics: Option<Vec<String>>,
    #[serde(default)]
    report: BTreeMap<String, String>,
}

impl Registry {
    /// Reads every `*.yaml` / `*.yml` file of `dir` (sorted by name). Errors name the file: a YAML
    /// error, an unknown class, an id that is not `<eval>.<split>.<version>`, a name defined
    /// twice, an alias to a missing id, a samples file that does not exist.
    pub fn load(dir: &Path) -> Result<Registry> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Registry { path: dir.to_path_buf(), msg: "no *.yaml files: not an evals registry".into() });
        }
        // name -> (id, description, file) and id -> spec entry.
        let mut aliases: BTreeMap<String, (String, String, PathBuf)> = BTreeMap::new();
        let mut specs: BTreeMap<String, (Entry, PathBuf)> = BTreeMap::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
            let bad = |msg: String| Error::Registry { path: file.clone(), msg };
            let entries: BTreeMap<String, Entry> = serde_norway::from_str(&text).map_err(|e| bad(e.to_string()))?;
            for (name, entry) in entries {
                if aliases.contains_key(&name) || specs.contains_key(&name) {
                    return Err(bad(format!("{name} is defined twice")));
                }
                let _ = (&entry.disclaimer, &entry.metrics);
                match (&entry.id, &entry.class) {
                    (Some(id), None) => {
                        aliases.insert(name, (id.clone(), entry.description.clone().unwrap_or_default(), file.clone()));
                    }
                    (None, Some(_)) => {
                        if name.split('.').count() < 3 || name.split('.').any(str::is_empty) {
                            return Err(bad(format!("{name}: a spec's name is <eval>.<split>.<version>, like arithmetic.test.v0")));
                        }
                        specs.insert(name, (entry, file.clone()));
                    }
                    (Some(_), Some(_)) => {
                        return Err(bad(format!("{name}: an entry has either `id` (a name) or `class` (a spec), not both")))
                    }
                    (None, None) => return Err(bad(format!("{name}: an entry needs `id` (a name) or `class` (a spec)"))),
                }
            }
        }
        let mut named: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (name, (id, description, file)) in &aliases {
            if !specs.contains_key(id) {
                return Err(Error::Registry { path: file.clone(), msg: format!("{name} points to {id}, which no file defines") });
            }
            named.insert(id.clone(), (name.clone(), description.clone()));
        }
        let mut evals = Vec::new();
        for (id, (entry, file)) in specs {
            let bad = |msg: String| Error::Registry { path: file.clone(), msg: format!("{id}: {msg}") };
            let class_name = entry.class.as_deref().unwrap_or_default();
            let class = Class::parse(class_name).ok_or_else(|| bad(format!("unknown class {class_name:?}")))?;
            let (name, alias_description) =
                named.remove(&id).unwrap_or_else(|| (id.split('.').next().unwrap_or(&id).to_string(), String::new()));
            let spec = EvalSpec {
                name,
                id: id.clone(),
                class,
                args: entry.args.unwrap_or_default(),
                description: entry.description.unwrap_or(alias_description),
                report: entry.report,
                file: file.clone(),
                dir: dir.to_path_buf(),
            };
            match (&spec.args.samples_jsonl, class.needs_samples()) {
                (None, true) => return Err(bad("args.samples_jsonl is missing".into())),
                (Some(p), _) if !p.starts_with("run:") => {
                    let path = dir.join(p);
                    if !path.is_file() {
                        return Err(bad(format!("samples file {} does not exist", path.display())));
                    }
                }
                _ => {}
            }
            if class == Class::ModelGraded && spec.args.choice_strings.as_ref().is_none_or(|c| c.len() < 2) {
                return Err(bad("a model-graded eval needs args.choice_strings (two or more)".into()));
            }
            evals.push(spec);
        }
        evals.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(Registry { evals })
    }

    /// The evals called `names` (a name or an id each), in that order; all of them when empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<&EvalSpec>> {
        if names.is_empty() {
            return Ok(self.evals.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.evals.iter().find(|e| &e.name == n || &e.id == n).ok_or_else(|| {
                    let known: Vec<&str> = self.evals.iter().map(|e| e.name.as_str()).collect();
                    Error::Input(format!("no eval named {n:?}; the registry has {}", known.join(", ")))
                })
            })
            .collect()
    }
}

/// The registry bundled with chatforge (`evals/` at the repository root): looked for above the
/// working directory, above the executable, then at the source tree's path.
pub fn bundled_registry_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|a| a.join("evals")));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join("evals")));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../evals"));
    candidates.into_iter().find(|p| p.join("README.md").is_file() && p.join("data").is_dir())
}
