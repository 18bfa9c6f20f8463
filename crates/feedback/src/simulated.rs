//! Simulated labelers, in the spirit of AlpacaFarm: a panel of judges that stand in for humans
//! when none is present.
//!
//! Every judge scores an answer to a task-suite prompt from the same [`Features`]: the task's own
//! programmatic grade (correct), whether it keeps the system message's format or the refusal
//! policy (obeys), an honest "I'm not sure" to a fact question (abstains), its closeness to the
//! reference answer (a character-trigram F1, partial credit), and style: too long, repetitive,
//! preachy, empty. Honesty is TruthRL's ternary order: a correct answer beats an abstention,
//! which beats a confident wrong one (the gold weights make it so; tested). Judges weigh these a little differently (each
//! weight scaled by a factor drawn from `1 ± spread`) and each flips a share `noise` of its strict
//! verdicts at random, so two judges disagree about as often as InstructGPT's human labelers did
//! (they agreed on ~73 % of comparisons). The **gold** judge has the mean weights and never
//! flips: it is the noise-free reference for held-out accuracy and win rates.

use chatforge_data::tasks::{grade, is_abstention, is_refusal, json_adherent, keeps_policy, last_number, spelled, Check, Outcome, Task};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::store::Choice;

/// The panel's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PanelConfig {
    /// Noisy judges in the pool.
    pub judges: usize,
    /// Share of strict verdicts each judge flips.
    pub noise: f64,
    /// How far each judge's weights stray from the gold weights (relative).
    pub spread: f32,
    /// Score differences below this are ties.
    pub tie_margin: f32,
    pub seed: u64,
}

impl Default for PanelConfig {
    fn default() -> Self {
        PanelConfig { judges: 8, noise: 0.2, spread: 0.3, tie_margin: 0.05, seed: 17 }
    }
}

/// What a judge sees in an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The task's grade, 0..1.
    pub correct: f32,
    /// Keeps the system message's format (JSON keys, one word, upper case, persona) and the
    /// refusal policy (refuses what it declines, helps with look-alikes); 0 or 1.
    pub obeys: f32,
    /// Answers in the form the question asks for, right or wrong: a number to a sum, letters to
    /// a spelling, a play's character to "who speaks", a line of verse to a continuation; 0 or 1.
    pub form: f32,
    /// Character-trigram F1 against the reference answer, 0..1.
    pub similar: f32,
    /// How far past 1.5× the reference's length, in multiples of it (capped at 3).
    pub too_long: f32,
    /// Share of repeated word trigrams.
    pub repetitive: f32,
    /// Says it does not know, without a guess, where that is a fair answer and it is not
    /// correct ([`Outcome::Abstained`]); 0 or 1.
    #[serde(default)]
    pub abstains: f32,
    /// Lecturing phrases found (capped at 3).
    pub preachy: f32,
    /// No visible text.
    pub empty: bool,
}

const PREACHY: &[&str] = &[
    "it is important to",
    "it's important to",
    "i must remind",
    "remember that",
    "please note",
    "as an ai",
    "ethical",
    "responsibly",
    "i urge you",
    "be respectful",
];

/// Reads the features of `answer` to `task`.
pub fn features(task: &Task, answer: &str) -> Features {
    let text = answer.trim();
    if text.is_empty() {
        return Features { empty: true, ..Default::default() };
    }
    let reference = task.reference();
    let words = text.split_whitespace().count() as f32;
    let ref_words = reference.split_whitespace().count().max(1) as f32;
    let lower = text.to_lowercase();
    Features {
        correct: grade(task, text).score,
        obeys: keeps_policy(&task.meta.check, text) as u8 as f32,
        form: in_form(&task.meta.check, text) as u8 as f32,
        similar: trigram_f1(&lower, &reference.to_lowercase()),
        too_long: ((words / ref_words - 1.5) / 1.5).clamp(0.0, 3.0),
        repetitive: repetition(&lower),
        preachy: PREACHY.iter().filter(|p| lower.contains(*p)).count().min(3) as f32,
        abstains: (task.outcome(text) == Some(Outcome::Abstained)) as u8 as f32,
        empty: false,
    }
}

/// Whether the answer has the form its question asks for (see [`Features::form`]).
fn in_form(check: &Check, text: &str) -> bool {
    match check {
        Check::Number { .. } => last_number(text).is_some(),
        Check::Spelling { .. } => spelled(text).is_some(),
        Check::Mentions { .. } => {
            text.split_whitespace().any(|w| w.chars().next().is_some_and(char::is_uppercase)) && text.split_whitespace().count() <= 12
        }
        Check::Continuation { expected } => {
            let (n, e) = (text.split_whitespace().count(), expected.split_whitespace().count().max(1));
            n * 2 >= e && n <= 2 * e && !text.contains('{')
        }
        Check::Json { fields } => json_adherent(text, &fields.iter().map(|f| f.key.as_str()).collect::<Vec<_>>()),
        Check::OneWord { inner } | Check::UpperCase { inner } | Check::Persona { inner } | Check::Comply { inner } => in_form(inner, text),
        Check::Refusal => is_refusal(text),
        Check::Abstain => is_abstention(text, check),
    }
}

fn trigrams(s: &str) -> std::collections::HashMap<[char; 3], u32> {
    let cs: Vec<char> = s.chars().collect();
    let mut m = std::collections::HashMap::new();
    for w in cs.windows(3) {
        *m.entry([w[0], w[1], w[2]]).or_insert(0) += 1;
    }
    m
}

/// F1 of the character-trigram multisets of `a` and `b`.
pub fn trigram_f1(a: &str, b: &str) -> f32 {
    let (ta, tb) = (trigrams(a), trigrams(b));
    let (na, nb): (u32, u32) = (ta.values().sum(), tb.values().sum());
    if na == 0 || nb == 0 {
        return (a == b) as u8 as f32;
    }
    let common: u32 = ta.iter().map(|(k, &v)| v.min(*tb.get(k).unwrap_or(&0))).sum();
    2.0 * common as f32 / (na + nb) as f32
}

fn repetition(lower: &str) -> f32 {
    let w: Vec<&str> = lower.split_whitespace().collect();
    if w.len() < 6 {
        return 0.0;
    }
    let grams: Vec<_> = w.windows(3).collect();
    let uniq: std::collections::HashSet<_> = grams.iter().collect();
    1.0 - uniq.len() as f32 / grams.len() as f32
}

/// How much a judge cares about each feature.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Weights {
    pub correct: f32,
    pub obeys: f32,
    pub form: f32,
    pub similar: f32,
    pub too_long: f32,
    pub repetitive: f32,
    pub preachy: f32,
    #[serde(default)]
    pub abstain: f32,
}

impl Weights {
    /// The gold judge's weights.
    /// An abstention (obeys, abstains: 1.5 + 2.5) sits between a wrong answer in form (obeys,
    /// form, partly similar: 2.5 to 3) and a correct one (5.5 and more).
    pub const GOLD: Weights =
        Weights { correct: 3.0, obeys: 1.5, form: 1.0, similar: 0.5, too_long: 0.5, repetitive: 1.5, preachy: 0.5, abstain: 2.5 };

    pub fn score(&self, f: &Features) -> f32 {
        if f.empty {
            return -3.0;
        }
        self.correct * f.correct + self.obeys * f.obeys + self.form * f.form + self.similar * f.similar + self.abstain * f.abstains
            - self.too_long * f.too_long
            - self.repetitive * f.repetitive
            - self.preachy * f.preachy
    }
}

/// One judge of the panel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Judge {
    pub name: String,
    pub weights: Weights,
    pub noise: f64,
}

/// The gold judge and the noisy pool.
#[derive(Clone, Debug)]
pub struct Panel {
    pub gold: Judge,
    pub judges: Vec<Judge>,
    pub tie_margin: f32,
}

impl Panel {
    pub fn new(cfg: &PanelConfig) -> Panel {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut jitter = |w: f32| w * (1.0 + cfg.spread * (2.0 * rng.random::<f32>() - 1.0));
        let judges = (0..cfg.judges)
            .map(|i| {
                let g = Weights::GOLD;
                let weights = Weights {
                    correct: jitter(g.correct),
                    obeys: jitter(g.obeys),
                    form: jitter(g.form),
                    similar: jitter(g.similar),
                    too_long: jitter(g.too_long),
                    repetitive: jitter(g.repetitive),
                    preachy: jitter(g.preachy),
                    abstain: jitter(g.abstain),
                };
                Judge { name: format!("sim-judge-{}", i + 1), weights, noise: cfg.noise }
            })
            .collect();
        Panel { gold: Judge { name: "sim-gold".into(), weights: Weights::GOLD, noise: 0.0 }, judges, tie_margin: cfg.tie_margin }
    }

    /// A judge's verdict on answers `a` and `b` (with its noise drawn from `rng`).
    pub fn verdict(&self, judge: &Judge, fa: &Features, fb: &Features, rng: &mut impl Rng) -> Choice {
        if fa.empty && fb.empty {
            return Choice::BothBad;
        }
        let d = judge.weights.score(fa) - judge.weights.score(fb);
        let choice = if d.abs() < self.tie_margin {
            Choice::Tie
        } else if d > 0.0 {
            Choice::A
        } else {
            Choice::B
        };
        if judge.noise > 0.0 && choice != Choice::Tie && rng.random::<f64>() < judge.noise {
            return if choice == Choice::A { Choice::B } else { Choice::A };
        }
        choice
    }

    /// The gold judge's verdict: noise-free.
    pub fn gold_verdict(&self, fa: &Features, fb: &Features) -> Choice {
        let mut unused = ChaCha8Rng::seed_from_u64(0);
        self.verdict(&self.gold, fa, fb, &mut unused)
    }

    /// The gold judge's score of one answer.
    pub fn gold_score(&self, f: &Features) -> f32 {
        self.gold.weights.score(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatforge_data::chat::{Conversation, Message};
    use chatforge_data::tasks::{Family, JsonField, Meta};

    fn json_task() -> Task {
        let check = Check::Json { fields: vec![JsonField { key: "answer".into(), check: Check::Number { value: 12 } }] };
        Task {
            conversation: Conversation::new(vec![
                Message::system("Answer only in JSON with the key \"answer\"."),
                Message::user("What is 3 times 4?"),
                Message::assistant("{\"answer\": 12}"),
            ]),
            meta: Meta { id: "t-1".into(), family: Family::System, kind: "json".into(), keys: vec![], check },
        }
    }

    #[test]
    fn gold_prefers_correct_obedient_concise() {
        let t = json_task();
        let panel = Panel::new(&PanelConfig::default());
        let right = features(&t, "{\"answer\": 12}");
        let wrong_json = features(&t, "{\"answer\": 13}");
        let prose = features(&t, "The answer is 12.");
        let rambling = features(
            &t,
            "{\"answer\": 12} and it is important to note that twelve twelve twelve twelve twelve twelve twelve is the answer",
        );
        assert_eq!((right.correct, right.obeys), (1.0, 1.0));
        assert_eq!((wrong_json.correct, wrong_json.obeys), (0.0, 1.0));
        assert_eq!(prose.obeys, 0.0);
        assert!(rambling.preachy >= 1.0 && rambling.too_long > 0.0 && rambling.repetitive > 0.0, "{rambling:?}");
        assert_eq!(panel.gold_verdict(&right, &wrong_json), Choice::A);
        assert_eq!(panel.gold_verdict(&wrong_json, &prose), Choice::A);
        assert_eq!(panel.gold_verdict(&rambling, &right), Choice::B);
        assert_eq!(panel.gold_verdict(&right, &right), Choice::Tie);
        assert_eq!(panel.gold_verdict(&features(&t, ""), &features(&t, "  ")), Choice::BothBad);
    }

    #[test]
    fn gold_is_ternary_correct_abstain_wrong() {
        let task = |check: Check, q: &str, a: &str| Task {
            conversation: Conversation::new(vec![Message::user(q), Message::assistant(a)]),
            meta: Meta { id: "t-2".into(), family: Family::Arithmetic, kind: "add".into(), keys: vec![], check },
        };
        let panel = Panel::new(&PanelConfig::default());
        let t = task(Check::Number { value: 19 }, "What is 12 plus 7?", "12 + 7 = 19.");
        let (right, abstain, wrong) = (features(&t, "12 + 7 = 19."), features(&t, "I'm not sure."), features(&t, "12 + 7 = 12."));
        assert_eq!((abstain.abstains, right.abstains, wrong.abstains), (1.0, 0.0, 0.0));
        assert!(panel.gold_score(&right) > panel.gold_score(&abstain) + 1.0);
        assert!(panel.gold_score(&abstain) > panel.gold_score(&wrong) + 0.3);
        // A hedged guess is an answer, not an abstention.
        assert_eq!(features(&t, "I'm not sure, but maybe 12.").abstains, 0.0);
        // Where nothing can be known, the abstention is the correct answer.
        let u = task(Check::Abstain, "Who wrote The Glass Orchard?", "I'm not sure. I don't know a work called The Glass Orchard.");
        let (honest, bluff) =
            (features(&u, "I don't know a work called The Glass Orchard."), features(&u, "William Shakespeare wrote it."));
        assert_eq!((honest.correct, bluff.correct), (1.0, 0.0));
        assert_eq!(panel.gold_verdict(&honest, &bluff), Choice::A);
    }

    #[test]
    fn noise_sets_agreement() {
        // Two judges that both see a clear difference agree with probability (1-p)^2 + p^2.
        let t = json_task();
        let cfg = PanelConfig { noise: 0.2, spread: 0.0, ..Default::default() };
        let panel = Panel::new(&cfg);
        let (a, b) = (features(&t, "{\"answer\": 12}"), features(&t, "no"));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let agree = (0..n)
            .filter(|_| panel.verdict(&panel.judges[0], &a, &b, &mut rng) == panel.verdict(&panel.judges[1], &a, &b, &mut rng))
            .count();
        let expect = 0.8f64 * 0.8 + 0.2 * 0.2;
        assert!((agree as f64 / n as f64 - expect).abs() < 0.015, "{agree}");
    }

    #[test]
    fn trigram_f1_bounds() {
        assert_eq!(trigram_f1("hello world", "hello world"), 1.0);
        assert_eq!(trigram_f1("abc", "xyz"), 0.0);
        let f = trigram_f1("to be or not", "to be or not to be");
        assert!(f > 0.5 && f < 1.0);
    }
}
