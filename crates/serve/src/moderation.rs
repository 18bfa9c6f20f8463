//! Moderation: a classifier over user inputs and model outputs, and the operator's policy.
//!
//! The classifier is a logistic regression over hashed word unigrams and bigrams, one per
//! category, trained on the task suite's refusal family: its disallowed requests are the
//! positives; its benign look-alikes ("How does Claudius poison the king?"), the assistant's
//! replies and the user messages of every other family are the negatives, so that sounding like
//! the topic is not enough. The suite's policy has one category, `violence` (help to poison or
//! physically hurt a person); a new category needs labelled examples first. [`measure`] scores
//! the classifier on the suite's held-out test split, over-refusal (false positives on benign
//! look-alikes) as seriously as misses: each distinct text counts once (a request asked in
//! several conversations is one request), every flagged text that is not a disallowed request
//! is a false positive, whatever its family or role, and the look-alikes' false-positive rate
//! comes with its 95 % Wilson interval. The test split's look-alikes are worded by templates
//! that training never saw.
//!
//! The policy file (TOML) says per category what a deployment does at or above a threshold:
//!
//! ```toml
//! refusal = "I can't help with that. I'm glad to help with something else."
//! moderate_outputs = true
//! [categories.violence]
//! action = "refuse"   # allow | refuse | flag
//! threshold = 0.5
//! ```
//!
//! `refuse` answers with the short refusal instead of generating (or, for an output, instead of
//! the output); `flag` lets it through and counts and logs it; `allow` does nothing.

use std::collections::BTreeMap;
use std::path::Path;

use chatforge_data::chat::Role;
use chatforge_data::tasks::{Counts, Family, Split, Suite, Task};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::{Error, Result};

/// The categories the classifier knows (those the task suite has examples of).
pub const CATEGORIES: &[&str] = &["violence"];

const DIM_BITS: u32 = 16;

/// Hashed word unigrams and bigrams of `text` (lowercase, split at anything not alphanumeric or
/// an apostrophe), deduplicated.
pub fn features(text: &str) -> Vec<u32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')).filter(|w| !w.is_empty()).collect();
    let mask = (1u64 << DIM_BITS) - 1;
    let mut f: Vec<u32> = words.iter().map(|w| (xxh3_64(format!("u:{w}").as_bytes()) & mask) as u32).collect();
    f.extend(words.windows(2).map(|p| (xxh3_64(format!("b:{} {}", p[0], p[1]).as_bytes()) & mask) as u32));
    f.sort_unstable();
    f.dedup();
    f
}

/// One logistic regression per category.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classifier {
    pub categories: Vec<String>,
    pub bias: Vec<f32>,
    /// Per category, the nonzero weights as (feature, weight).
    pub weights: Vec<Vec<(u32, f32)>>,
    #[serde(skip)]
    dense: Vec<Vec<f32>>,
}

impl Classifier {
    fn from_dense(categories: Vec<String>, bias: Vec<f32>, dense: Vec<Vec<f32>>) -> Classifier {
        let weights =
            dense.iter().map(|w| w.iter().enumerate().filter(|(_, &x)| x != 0.0).map(|(i, &x)| (i as u32, x)).collect()).collect();
        Classifier { categories, bias, weights, dense }
    }

    fn densify(&mut self) {
        self.dense = self
            .weights
            .iter()
            .map(|ws| {
                let mut d = vec![0.0; 1 << DIM_BITS];
                for &(i, w) in ws {
                    d[i as usize] = w;
                }
                d
            })
            .collect();
    }

    /// Probability per category that `text` is disallowed.
    pub fn scores(&self, text: &str) -> Vec<f32> {
        let f = features(text);
        (0..self.categories.len()).map(|c| sigmoid(self.bias[c] + f.iter().map(|&i| self.dense[c][i as usize]).sum::<f32>())).collect()
    }

    /// Trains on (text, label per category) with SGD on the logistic loss plus L2, deterministic.
    pub fn train(categories: &[&str], data: &[(String, Vec<bool>)], epochs: usize, seed: u64) -> Classifier {
        let (lr, l2) = (0.2f32, 1e-4f32);
        let feats: Vec<Vec<u32>> = data.iter().map(|(t, _)| features(t)).collect();
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dense = vec![vec![0.0f32; 1 << DIM_BITS]; categories.len()];
        let mut bias = vec![0.0f32; categories.len()];
        for _ in 0..epochs {
            order.shuffle(&mut rng);
            for &k in &order {
                for c in 0..categories.len() {
                    let z = bias[c] + feats[k].iter().map(|&i| dense[c][i as usize]).sum::<f32>();
                    let g = sigmoid(z) - if data[k].1[c] { 1.0 } else { 0.0 };
                    bias[c] -= lr * g;
                    for &i in &feats[k] {
                        let w = &mut dense[c][i as usize];
                        *w -= lr * (g + l2 * *w);
                    }
                }
            }
        }
        Classifier::from_dense(categories.iter().map(|c| c.to_string()).collect(), bias, dense)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).expect("the classifier serializes");
        chatforge_rundir::fs::write_atomic(path, &json)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Classifier> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c: Classifier = serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        if c.bias.len() != c.categories.len()
            || c.weights.len() != c.categories.len()
            || c.weights.iter().flatten().any(|&(i, _)| i >= 1 << DIM_BITS)
        {
            return Err(Error::Config(format!("{}: inconsistent classifier", path.display())));
        }
        c.densify();
        Ok(c)
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// The suite's texts with their labels: every user message (refusal-family `harmful` ones are
/// disallowed) and every assistant message (all allowed).
pub fn examples(tasks: &[Task]) -> Vec<(String, Vec<bool>)> {
    let mut out = Vec::new();
    for t in tasks {
        let harmful = t.meta.family == Family::Refusal && t.meta.kind == "harmful";
        for m in &t.conversation.messages {
            match m.role {
                Role::User => out.push((m.content.clone(), vec![harmful])),
                Role::Assistant if !m.content.is_empty() => out.push((m.content.clone(), vec![false])),
                Role::Assistant | Role::System | Role::Tool => {}
            }
        }
    }
    out
}

/// Suite sizes for moderation: the refusal family's pools in full, and some of every other
/// family as ordinary traffic.
pub fn suite_config(seed: u64) -> chatforge_data::tasks::SuiteConfig {
    let c = |refusal, other| Counts {
        shakespeare: other,
        spelling: other,
        arithmetic: other,
        system: other,
        refusal,
        multi_turn: other,
        identity: other / 4,
    };
    let none = Counts::none();
    chatforge_data::tasks::SuiteConfig { seed, train: c(1200, 150), prefs: none, rl: none, val: c(100, 20), test: c(300, 60) }
}

/// How the classifier does on a split, at the 0.5 threshold, over distinct texts (see
/// [`measure`]).
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// Flagged texts that are disallowed requests: TP / (TP + FP), where FP counts every other
    /// flagged text (look-alikes, other families' user messages, assistant replies).
    pub precision: f64,
    /// Disallowed requests that are flagged.
    pub recall: f64,
    pub f1: f64,
    /// Benign look-alikes flagged (over-refusal).
    pub lookalike_false_positive_rate: f64,
    /// 95 % Wilson interval of `lookalike_false_positive_rate`.
    pub lookalike_false_positive_ci95: [f64; 2],
    /// Other texts flagged: every other family's user messages and all assistant replies.
    pub other_false_positive_rate: f64,
    /// Distinct disallowed requests (the refusal family's `harmful` user messages).
    pub harmful: usize,
    /// Distinct benign look-alikes (the refusal family's `benign` user messages).
    pub lookalikes: usize,
    /// Distinct other texts.
    pub other: usize,
    /// Disallowed requests flagged.
    pub true_positives: usize,
    /// Every flagged text that is not a disallowed request.
    pub false_positives: usize,
    pub lookalike_false_positives: usize,
    pub other_false_positives: usize,
    /// User and assistant messages read, before counting each distinct text once.
    pub messages: usize,
}

/// What a text is for [`measure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Truth {
    Other,
    Lookalike,
    Harmful,
}

/// The text as [`measure`] compares texts: lower-case words (as [`features`] splits them)
/// joined by single spaces.
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')).filter(|w| !w.is_empty()).collect();
    words.join(" ")
}

/// The 95 % Wilson score interval of `k` successes in `n` trials ([0, 1] when `n` is 0).
pub fn wilson95(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (z, n, p) = (1.96f64, n as f64, k as f64 / n as f64);
    let d = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / d;
    let half = z / d * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// Scores the classifier on every user and assistant message of `tasks` (system messages are
/// the operator's and are not moderated). Each distinct text ([`normalize`]) counts once: a
/// disallowed request if it is ever a refusal-family `harmful` user message, else a look-alike
/// if it is ever a refusal-family user message, else other.
pub fn measure(c: &Classifier, tasks: &[Task]) -> Measure {
    let mut truth: BTreeMap<String, (Truth, &str)> = BTreeMap::new();
    let mut messages = 0;
    for t in tasks {
        let refusal = t.meta.family == Family::Refusal;
        let harmful = refusal && t.meta.kind == "harmful";
        for m in &t.conversation.messages {
            let kind = match (m.role, refusal, harmful) {
                (Role::System | Role::Tool, ..) => continue,
                (Role::Assistant, ..) if m.content.is_empty() => continue,
                (Role::User, true, true) => Truth::Harmful,
                (Role::User, true, false) => Truth::Lookalike,
                _ => Truth::Other,
            };
            messages += 1;
            let e = truth.entry(normalize(&m.content)).or_insert((kind, &m.content));
            e.0 = e.0.max(kind);
        }
    }
    let (mut n, mut flagged) = (BTreeMap::new(), BTreeMap::new());
    for (kind, text) in truth.values() {
        *n.entry(*kind).or_insert(0usize) += 1;
        if c.scores(text)[0] >= 0.5 {
            *flagged.entry(*kind).or_insert(0usize) += 1;
        }
    }
    let get = |m: &BTreeMap<Truth, usize>, k| m.get(&k).copied().unwrap_or(0);
    let (h, la, o) = (get(&n, Truth::Harmful), get(&n, Truth::Lookalike), get(&n, Truth::Other));
    let (tp, la_fp, o_fp) = (get(&flagged, Truth::Harmful), get(&flagged, Truth::Lookalike), get(&flagged, Truth::Other));
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(tp, tp + la_fp + o_fp), ratio(tp, h));
    Measure {
        precision: p,
        recall: r,
        f1: if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 },
        lookalike_false_positive_rate: ratio(la_fp, la),
        lookalike_false_positive_ci95: wilson95(la_fp, la),
        other_false_positive_rate: ratio(o_fp, o),
        harmful: h,
        lookalikes: la,
        other: o,
        true_positives: tp,
        false_positives: la_fp + o_fp,
        lookalike_false_positives: la_fp,
        other_false_positives: o_fp,
        messages,
    }
}

/// Trains on the suite's train split and measures on its test split.
pub fn train_on_suite(suite: &Suite, seed: u64) -> (Classifier, Measure) {
    let c = Classifier::train(CATEGORIES, &examples(suite.split(Split::Train)), 8, seed);
    let m = measure(&c, suite.split(Split::Test));
    (c, m)
}

/// Trains the classifier from a task suite generated for it from the bundled corpus
/// ([`suite_config`] with `seed`), and measures it on that suite's test split.
pub fn train(seed: u64) -> Result<(Classifier, Measure)> {
    let corpus = chatforge_data::tasks::Corpus::bundled()?;
    let suite = chatforge_data::tasks::generate_suite(&suite_config(seed), &corpus);
    Ok(train_on_suite(&suite, seed))
}

// ---------------------------------------------------------------------------------------------
// The operator's policy

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Flag,
    Refuse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default = "half")]
    pub threshold: f32,
}

fn half() -> f32 {
    0.5
}

fn yes() -> bool {
    true
}

fn default_refusal() -> String {
    "I can't help with that. I'm glad to help with something else.".into()
}

/// What a deployment refuses, flags or allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationPolicy {
    #[serde(default)]
    pub categories: BTreeMap<String, Rule>,
    /// The brief answer given instead of a refused request or output.
    #[serde(default = "default_refusal")]
    pub refusal: String,
    /// Whether model outputs are checked too (not only user inputs).
    #[serde(default = "yes")]
    pub moderate_outputs: bool,
}

impl Default for ModerationPolicy {
    /// Refuses every category at 0.5.
    fn default() -> ModerationPolicy {
        let categories = CATEGORIES.iter().map(|c| (c.to_string(), Rule { action: Action::Refuse, threshold: 0.5 })).collect();
        ModerationPolicy { categories, refusal: default_refusal(), moderate_outputs: true }
    }
}

impl ModerationPolicy {
    pub fn from_toml(text: &str, path: &Path) -> Result<ModerationPolicy> {
        let bad = |msg: String| Error::Policy { path: path.to_path_buf(), msg };
        let p: ModerationPolicy = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for (name, rule) in &p.categories {
            if !CATEGORIES.contains(&name.as_str()) {
                return Err(bad(format!("unknown category \"{name}\" (known: {})", CATEGORIES.join(", "))));
            }
            if !(0.0..=1.0).contains(&rule.threshold) {
                return Err(bad(format!("category \"{name}\": threshold {} is not in [0, 1]", rule.threshold)));
            }
        }
        if p.refusal.trim().is_empty() {
            return Err(bad("the refusal text is empty".into()));
        }
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<ModerationPolicy> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        ModerationPolicy::from_toml(&text, path)
    }
}

/// The classifier's verdict on one text under the policy.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// (category, score, at or above the policy's threshold).
    pub categories: Vec<(String, f32, bool)>,
    /// The strongest action among the categories over their threshold.
    pub action: Action,
}

impl Verdict {
    pub fn flagged(&self) -> bool {
        self.categories.iter().any(|c| c.2)
    }
}

/// The classifier and the policy.
pub struct Moderator {
    pub classifier: Classifier,
    pub policy: ModerationPolicy,
}

impl Moderator {
    pub fn check(&self, text: &str) -> Verdict {
        let scores = self.classifier.scores(text);
        let mut action = Action::Allow;
        let categories = self
            .classifier
            .categories
            .iter()
            .zip(scores)
            .map(|(c, s)| {
                let rule = self.policy.categories.get(c);
                let over = s >= rule.map_or(0.5, |r| r.threshold);
                if over {
                    action = action.max(rule.map_or(Action::Allow, |r| r.action));
                }
                (c.clone(), s, over)
            })
            .collect();
        Verdict { categories, action }
    }
}
