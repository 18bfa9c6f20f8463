//! The task suite: chat conversations generated from the corpus with a seed, for SFT and evals.
//!
//! Seven families:
//!
//! | family | kinds |
//! |---|---|
//! | `shakespeare` | `who_speaks` a line, `which_play` a character is in, `continue` a line, `who_wrote` a work; `unknown_work`, `unknown_character`, `unknown_line`, `unknown_continue` (made up: the answer is "I'm not sure") |
//! | `spelling` | `letter_count`, `word_length`, `char_count`, `word_count`, `spell` |
//! | `arithmetic` | `add`, `sub`, `mul` (small integers), asked in symbols, words and word problems; `big_product` (5 digits by 4) |
//! | `system` | a question of the three families above under a system message: `json` (only a JSON object with given keys), `one_word`, `upper_case`, `persona` (as a Shakespearean character), or `default` (no system message) |
//! | `refusal` | `harmful` (step-by-step help to poison or hurt a person: a brief refusal that offers something else) and `benign` look-alikes that must be answered (how Claudius poisons the king) |
//! | `multi_turn` | `followup_act`, `followup_character`, `followup_arith`, `user_correction` ("no, I meant ..."), `assistant_correction` (a wrong answer, kept out of the loss, then fixed), `challenge_holds` (a doubting user; the right answer stands) |
//! | `identity` | who and what the assistant is, who trained it on what, truthfully |
//!
//! Each [`Task`] is a [`Conversation`] whose last message is the assistant's reference answer,
//! plus [`Meta`]: family, kind, the held-out keys and the [`Check`] that [`grade`] applies to a
//! model's answer. Every reference answer grades 1.0 (tested).
//!
//! # Held-out splits
//! Items are assigned to train / val / test by what they are about, not by conversation: a quoted
//! line, a character, a word, a short phrase, an arithmetic problem (`7 * 8` and `8 * 7` are one
//! problem), a work, a refusal prompt, a benign question, an identity question's wording. Large
//! pools are split 80/10/10 by a seeded hash of the key, small ones (works, benign questions,
//! identity wordings) are shuffled with the seed and cut 60/20/20, so each split has some. A
//! key's split is the same in every family, so test items are held out of all of training.
//! Every task lists its keys in `meta.keys`.
//!
//! # Pools
//! The train split is three disjoint prompt pools (see [`SuiteConfig`]): SFT demonstrations
//! (`train`), preference prompts (`prefs`) and RL prompts (`rl`); prompt injections
//! (`injection.rs`) appear in every pool but SFT's. Questions about made-up works, characters
//! and lines (`unknown.rs`) have one right answer: "I'm not sure" ([`Check::Abstain`]). Fact
//! questions are graded correct, abstained or wrong ([`Outcome`]).
//!
//! # Files
//! [`write_suite`] writes `train.jsonl`, `prefs.jsonl`, `rl.jsonl`, `val.jsonl` and
//! `test.jsonl`, one task per line:
//! `{"messages": [...], "meta": {"id", "family", "kind", "keys", "check"}}`. The files are also
//! plain conversation files for [`crate::chat::load_jsonl`] (which ignores `meta`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::chat::{Conversation, Message};
use crate::{Error, Result};

mod check;
mod corpus;
mod declared;
mod families;
mod identity;
mod injection;
mod items;
mod phrasings;
mod refusal;
mod unknown;

pub use check::{
    is_abstention, is_refusal, json_adherent, keeps_policy, last_number, mentions, sounds_shakespearean, spelled, Check, Grade, JsonField,
    Outcome,
};
pub use corpus::{Corpus, Play, Speech, Work};
pub use injection::is_injection;

/// A task family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Shakespeare,
    Spelling,
    Arithmetic,
    System,
    Refusal,
    MultiTurn,
    Identity,
}

impl Family {
    pub const ALL: [Family; 7] =
        [Family::Shakespeare, Family::Spelling, Family::Arithmetic, Family::System, Family::Refusal, Family::MultiTurn, Family::Identity];

    /// The name used in files and reports: `shakespeare`, `multi_turn`, ...
    pub fn name(self) -> &'static str {
        match self {
            Family::Shakespeare => "shakespeare",
            Family::Spelling => "spelling",
            Family::Arithmetic => "arithmetic",
            Family::System => "system",
            Family::Refusal => "refusal",
            Family::MultiTurn => "multi_turn",
            Family::Identity => "identity",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A split of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A task: the conversation, ending with the reference answer, and what grading needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub meta: Meta,
}

/// A task's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// `test-shakespeare-0007`.
    pub id: String,
    pub family: Family,
    /// The family's kind of task: `who_speaks`, `json`, `harmful`, ...
    pub kind: String,
    /// What the task is about, for holding out (`line:...`, `word:castle`, `mul:7:8`).
    pub keys: Vec<String>,
    /// How [`grade`] scores an answer to the last user message.
    pub check: Check,
}

impl Task {
    /// The conversation without the reference answer: what the model is asked.
    pub fn prompt(&self) -> Conversation {
        self.conversation.prompt()
    }

    /// The reference answer (the last assistant message).
    pub fn reference(&self) -> &str {
        self.conversation.last_assistant().unwrap_or("")
    }

    /// The system message, if any.
    pub fn system(&self) -> Option<&str> {
        self.conversation.system()
    }

    /// Correct, abstained or wrong, for fact questions ([`Check::outcome`]); `None` for the
    /// refusal and identity families, where "I don't know" is no fair answer.
    pub fn outcome(&self, answer: &str) -> Option<Outcome> {
        match self.meta.family {
            Family::Refusal | Family::Identity => None,
            _ => self.meta.check.outcome(answer),
        }
    }

    /// Whether the user tries to override the system message (see [`injection_templates`]).
    pub fn is_injection(&self) -> bool {
        is_injection(&self.meta.keys)
    }
}

/// The prompt-injection templates of a split for the suite seed `seed` (`{q}` is the
/// question): the same ones the suite's tasks of that split use.
pub fn injection_templates(seed: u64, split: Split) -> Vec<&'static str> {
    injection::templates(&Holdout::new(seed), split)
}

/// Grades a model's answer to `task` (its reply to the last user message) in [0, 1].
pub fn grade(task: &Task, answer: &str) -> Grade {
    task.meta.check.grade(answer)
}

/// The verifiable reward of an answer, in [−1, 1]: TruthRL's ternary reward for fact
/// questions (+1 correct, 0 abstained, −1 wrong, with the system message's format part of
/// "correct"); otherwise grade + keeps-the-policy − 1 (a JSON object with wrong values 0, no
/// JSON −1; a refusal of a harmful request +1, a refused look-alike −1). What `ppo --reward
/// graders` maximizes, as nanochat's RL stage does with GSM8K's answers.
pub fn verifiable_reward(task: &Task, answer: &str) -> f32 {
    match task.outcome(answer) {
        Some(o) => o.reward(),
        None => grade(task, answer).score + keeps_policy(&task.meta.check, answer) as u8 as f32 - 1.0,
    }
}

/// For a task under a JSON-only system message, whether the answer is a JSON object with the
/// required keys (the report's `json_adherence`); `None` for other tasks.
pub fn json_adherence(task: &Task, answer: &str) -> Option<bool> {
    let keys = task.meta.check.json_keys()?;
    Some(json_adherent(answer, &keys))
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Conversations per family, for one split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub shakespeare: usize,
    pub spelling: usize,
    pub arithmetic: usize,
    pub system: usize,
    pub refusal: usize,
    pub multi_turn: usize,
    pub identity: usize,
}

impl Counts {
    /// The same number for every family.
    pub fn none() -> Counts {
        Counts::uniform(0)
    }

    pub fn uniform(n: usize) -> Counts {
        Counts { shakespeare: n, spelling: n, arithmetic: n, system: n, refusal: n, multi_turn: n, identity: n }
    }

    pub fn get(&self, family: Family) -> usize {
        match family {
            Family::Shakespeare => self.shakespeare,
            Family::Spelling => self.spelling,
            Family::Arithmetic => self.arithmetic,
            Family::System => self.system,
            Family::Refusal => self.refusal,
            Family::MultiTurn => self.multi_turn,
            Family::Identity => self.identity,
        }
    }

    pub fn total(&self) -> usize {
        Family::ALL.iter().map(|&f| self.get(f)).sum()
    }
}

/// How to generate a suite. Small pools (identity questions, benign look-alikes, works) cannot
/// supply every count without repeating; a split then gets fewer tasks of that family.
///
/// The train split is three disjoint prompt pools, as InstructGPT kept (13k SFT
/// demonstrations, 33k comparison prompts, 31k PPO prompts): `train` holds the SFT
/// demonstrations, `prefs` the prompts labelers compare answers to (reward model, DPO), `rl`
/// the prompts PPO samples. No prompt (its messages before the answer) is in two pools. The
/// SFT pool has no prompt injections: SFT teaches the system message's authority, and the
/// preference and RL pools (like val and test) also try to override it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteConfig {
    pub seed: u64,
    /// The SFT pool.
    pub train: Counts,
    #[serde(default = "Counts::none")]
    pub prefs: Counts,
    #[serde(default = "Counts::none")]
    pub rl: Counts,
    pub val: Counts,
    pub test: Counts,
}

impl Default for SuiteConfig {
    /// About 13,000 SFT demonstrations (InstructGPT's count; about two passes in the speedrun's
    /// 1,000 SFT steps, where 4,200 were six passes and the model learned them by heart instead
    /// of learning to copy a question's numbers and words into a tool call), preference and RL
    /// pools larger still (InstructGPT's proportions), 40-60 validation and 60-100 test
    /// conversations per family. Tool use (arithmetic, spelling and counting) and the system
    /// message (JSON-only above all) are most of what SFT must teach.
    /// Refusals are 600, 70 % of them benign look-alikes (`refusal::generate`): with 300, half
    /// harmful, and the copy drills, the SFT model refused 76 % of val's look-alikes (seed 1; 38 %
    /// with seed 2); with 600, 29 % and 5 %.
    /// The RL pool has 1,500 refusal prompts, under any opening (`refusal::generate`): with 300
    /// in their fixed wording it got one, as SFT and the preferences had used the rest up, and
    /// RLVR with a light PTX term learned to answer harmful requests "I'm not sure" (val).
    fn default() -> SuiteConfig {
        let twice =
            Counts { shakespeare: 2800, spelling: 3600, arithmetic: 3000, system: 5000, refusal: 300, multi_turn: 1800, identity: 20 };
        SuiteConfig {
            seed: 1,
            train: Counts {
                shakespeare: 2000,
                spelling: 3000,
                arithmetic: 2500,
                system: 4000,
                refusal: 600,
                multi_turn: 1500,
                identity: 90,
            },
            prefs: twice,
            // RL meets harmful requests and look-alikes often enough (9 % of its prompts) to keep
            // refusing what it should while it learns to abstain on fact questions.
            rl: Counts { refusal: 1500, ..twice },
            val: Counts { shakespeare: 40, spelling: 40, arithmetic: 40, system: 60, refusal: 40, multi_turn: 40, identity: 20 },
            test: Counts { shakespeare: 80, spelling: 80, arithmetic: 80, system: 100, refusal: 180, multi_turn: 80, identity: 30 },
        }
    }
}

impl SuiteConfig {
    /// A small suite for tests and `--quick` runs: `n` in each train pool, `n / 4` val and test
    /// per family.
    pub fn small(seed: u64, n: usize) -> SuiteConfig {
        let u = Counts::uniform;
        SuiteConfig { seed, train: u(n), prefs: u(n), rl: u(n), val: u(n / 4), test: u(n / 4) }
    }

    pub fn counts(&self, pool: Pool) -> &Counts {
        match pool {
            Pool::Sft => &self.train,
            Pool::Prefs => &self.prefs,
            Pool::Rl => &self.rl,
            Pool::Val => &self.val,
            Pool::Test => &self.test,
        }
    }
}

/// Where a task is used: the three pools of the train split, val, test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    Sft,
    Prefs,
    Rl,
    Val,
    Test,
}

impl Pool {
    pub const ALL: [Pool; 5] = [Pool::Sft, Pool::Prefs, Pool::Rl, Pool::Val, Pool::Test];

    /// The file stem (`train.jsonl` is the SFT pool) and the prefix of task ids.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Sft => "train",
            Pool::Prefs => "prefs",
            Pool::Rl => "rl",
            Pool::Val => "val",
            Pool::Test => "test",
        }
    }

    /// The split whose held-out material the pool is drawn from.
    pub fn split(self) -> Split {
        match self {
            Pool::Sft | Pool::Prefs | Pool::Rl => Split::Train,
            Pool::Val => Split::Val,
            Pool::Test => Split::Test,
        }
    }
}

/// A generated suite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Suite {
    /// The SFT pool.
    pub train: Vec<Task>,
    /// The preference pool: prompts for labels, the reward model and DPO.
    pub prefs: Vec<Task>,
    /// The RL pool: PPO's prompts.
    pub rl: Vec<Task>,
    pub val: Vec<Task>,
    pub test: Vec<Task>,
}

impl Suite {
    /// A split's tasks (the SFT pool for train).
    pub fn split(&self, split: Split) -> &[Task] {
        self.pool(match split {
            Split::Train => Pool::Sft,
            Split::Val => Pool::Val,
            Split::Test => Pool::Test,
        })
    }

    pub fn pool(&self, pool: Pool) -> &[Task] {
        match pool {
            Pool::Sft => &self.train,
            Pool::Prefs => &self.prefs,
            Pool::Rl => &self.rl,
            Pool::Val => &self.val,
            Pool::Test => &self.test,
        }
    }

    fn pool_mut(&mut self, pool: Pool) -> &mut Vec<Task> {
        match pool {
            Pool::Sft => &mut self.train,
            Pool::Prefs => &mut self.prefs,
            Pool::Rl => &mut self.rl,
            Pool::Val => &mut self.val,
            Pool::Test => &mut self.test,
        }
    }

    /// Tasks per family in one split (the SFT pool for train).
    pub fn family_counts(&self, split: Split) -> BTreeMap<Family, usize> {
        let mut counts = BTreeMap::new();
        for t in self.split(split) {
            *counts.entry(t.meta.family).or_default() += 1;
        }
        counts
    }

    /// Prompts (by [`prompt_hash`]) found in more than one pool: 0 for a generated suite.
    pub fn pool_overlaps(&self) -> usize {
        let mut pools_of: HashMap<u64, HashSet<Pool>> = HashMap::new();
        for pool in Pool::ALL {
            for t in self.pool(pool) {
                pools_of.entry(prompt_hash(t)).or_default().insert(pool);
            }
        }
        pools_of.values().filter(|p| p.len() > 1).count()
    }

    /// Tasks per pool, by file stem (`train` is the SFT pool).
    pub fn pool_sizes(&self) -> BTreeMap<&'static str, usize> {
        Pool::ALL.iter().map(|&p| (p.name(), self.pool(p).len())).collect()
    }
}

/// The hash that identifies a prompt: its messages before the reference answer.
pub fn prompt_hash(task: &Task) -> u64 {
    let text = serde_json::to_string(&task.prompt().messages).expect("messages serialize");
    xxh3_64_with_seed(text.as_bytes(), 0)
}

// ---------------------------------------------------------------------------------------------
// Generation

/// Generates the suite from the corpus. The same config and corpus give the same suite.
pub fn generate_suite(cfg: &SuiteConfig, corpus: &Corpus) -> Suite {
    let holdout = Holdout::new(cfg.seed);
    let mut suite = Suite::default();
    for split in Split::ALL {
        let mut pools = items::Pools::new(corpus, &holdout, split);
        // A prompt is generated once per split, whatever its family or pool.
        let mut seen = HashSet::new();
        for pool in Pool::ALL.into_iter().filter(|p| p.split() == split) {
            pools.injections = if pool == Pool::Sft { vec![] } else { injection::templates(&holdout, split) };
            pools.sft = pool == Pool::Sft;
            pools.vary_openings = pool == Pool::Rl;
            for family in Family::ALL {
                let want = cfg.counts(pool).get(family);
                let mut rng = ChaCha8Rng::seed_from_u64(xxh3_64_with_seed(format!("{family}/{}", pool.name()).as_bytes(), cfg.seed));
                let mut made = 0;
                // Give up on a family after many duplicates in a row: its pool is exhausted.
                let mut misses = 0;
                while made < want && misses < 200 {
                    let Some(draft) = generate_one(family, &pools, &mut rng) else {
                        misses += 1;
                        continue;
                    };
                    if !seen.insert(Conversation::new(draft.messages.clone()).prompt().messages) {
                        misses += 1;
                        continue;
                    }
                    misses = 0;
                    let id = format!("{}-{family}-{made:04}", pool.name());
                    suite.pool_mut(pool).push(draft.into_task(id, family));
                    made += 1;
                }
            }
        }
    }
    suite
}

fn generate_one(family: Family, pools: &items::Pools, rng: &mut ChaCha8Rng) -> Option<Draft> {
    match family {
        Family::Shakespeare => items::shakespeare(pools, rng).map(|i| i.into_draft(rng)),
        Family::Spelling => items::spelling(pools, rng).map(|i| i.into_draft(rng)),
        Family::Arithmetic if rng.random_bool(0.06) => unknown::big_product(pools, rng).map(|i| i.into_draft(rng)),
        Family::Arithmetic => items::arithmetic(pools, rng).map(|i| i.into_draft(rng)),
        Family::System => families::system(pools, rng),
        Family::Refusal => refusal::generate(pools, rng),
        Family::MultiTurn => families::multi_turn(pools, rng),
        Family::Identity => identity::generate(pools, rng),
    }
}

/// A generated conversation before it gets its id.
struct Draft {
    kind: String,
    keys: Vec<String>,
    messages: Vec<Message>,
    check: Check,
}

impl Draft {
    fn into_task(self, id: String, family: Family) -> Task {
        Task {
            conversation: Conversation { messages: self.messages },
            meta: Meta { id, family, kind: self.kind, keys: self.keys, check: self.check },
        }
    }
}

/// Assigns held-out keys to splits (see the module docs).
struct Holdout {
    seed: u64,
}

impl Holdout {
    fn new(seed: u64) -> Holdout {
        Holdout { seed }
    }

    fn hash(&self, key: &str) -> u64 {
        xxh3_64_with_seed(key.as_bytes(), self.seed)
    }

    /// The split of a key of a large pool: 80 % train, 10 % val, 10 % test.
    fn split_of(&self, key: &str) -> Split {
        match self.hash(key) % 10 {
            0 => Split::Val,
            1 => Split::Test,
            _ => Split::Train,
        }
    }

    /// Splits a small pool: shuffled by the seed, 60 % train, 20 % val, 20 % test, with at
    /// least one key in train, in test (from 2 keys) and in val (from 3).
    fn cut<'a, T>(&self, items: &'a [T], key: impl Fn(&T) -> String) -> HashMap<Split, Vec<&'a T>> {
        let mut order: Vec<(u64, &T)> = items.iter().map(|t| (self.hash(&key(t)), t)).collect();
        order.sort_by_key(|(h, _)| *h);
        let n = order.len();
        let test = if n >= 2 { (n / 5).max(1) } else { 0 };
        let val = if n >= 3 { (n / 5).max(1) } else { 0 };
        let mut out: HashMap<Split, Vec<&T>> = HashMap::new();
        for (i, (_, t)) in order.into_iter().enumerate() {
            let split = if i < test {
                Split::Test
            } else if i < test + val {
                Split::Val
            } else {
                Split::Train
            };
            out.entry(split).or_default().push(t);
        }
        out
    }
}

/// Picks a name by weight.
fn pick_weighted<'a>(rng: &mut ChaCha8Rng, choices: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = choices.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (name, w) in choices {
        if x < *w {
            return name;
        }
        x -= w;
    }
    choices.last().expect("choices are not empty").0
}

/// A random element of a slice.
fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(&items[rng.random_range(0..items.len())])
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// Writes `train.jsonl` (the SFT pool), `prefs.jsonl`, `rl.jsonl`, `val.jsonl` and
/// `test.jsonl` into `dir` (created if needed), each atomically.
pub fn write_suite(suite: &Suite, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for pool in Pool::ALL {
        crate::chat::write_jsonl(&dir.join(format!("{}.jsonl", pool.name())), suite.pool(pool))?;
    }
    Ok(())
}

/// Reads a suite written by [`write_suite`]. A bad line is an error naming file and line; a
/// suite written before the preference and RL pools existed reads with them empty.
pub fn load_suite(dir: &Path) -> Result<Suite> {
    let mut suite = Suite::default();
    for pool in Pool::ALL {
        let path = dir.join(format!("{}.jsonl", pool.name()));
        if matches!(pool, Pool::Prefs | Pool::Rl) && !path.exists() {
            continue;
        }
        *suite.pool_mut(pool) = load_tasks(&path)?;
    }
    Ok(suite)
}

/// Reads one task file (`{"messages": [...], "meta": {...}}` per line).
pub fn load_tasks(path: &Path) -> Result<Vec<Task>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut tasks = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::BadLine { path: path.to_path_buf(), line: i + 1, msg };
        let task: Task = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        task.conversation.validate_for_training().map_err(bad)?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// A conversation of one user question and the assistant's answer, after an optional system
/// message.
fn exchange(system: Option<&str>, question: &str, answer: &str) -> Vec<Message> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message::system(s));
    }
    messages.push(Message::user(question));
    messages.push(Message::assistant(answer));
    messages
}
