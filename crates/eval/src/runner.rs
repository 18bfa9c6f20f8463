//! Runs evals of the registry on a stage's model: batched decoding with a progress bar, a grade
//! per sample, per-sample results (`R/evals/<stage>/<eval>.jsonl`: input, output, grade), a
//! summary (`R/evals/<stage>/summary.json`) and the stage's figures in `report.json`.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use chatforge_data::chat::{Conversation, Role};
use chatforge_data::tasks::{is_refusal, json_adherent, Grade};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::graders::{self, Constraint};
use crate::policy::{Policy, Prompt, Reply, Rewarder};
use crate::registry::{Class, EvalSpec, Sample};
use crate::{Error, Result};
use chatforge_data::tools::Toolbox;
use chatforge_rundir::report::{self, Key, Report};
use chatforge_rundir::RunDir;

/// How evals run for one invocation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The run folder (for `run:` samples, the token shards, outputs).
    pub run: RunDir,
    /// The stage evaluated: `base`, `sft`, `ppo`, ... (names output files and the report column).
    pub stage: String,
    /// Prompt in plain text with few-shot examples (for a base model that never saw ChatML).
    pub plain: bool,
    /// `many_samples`: answers per prompt, overriding the evals' `n`.
    pub many_samples: Option<usize>,
    /// At most this many samples per eval (the first ones), for quick checks inside training.
    pub limit: Option<usize>,
    pub quiet: bool,
}

impl EvalOptions {
    pub fn new(run: &RunDir, stage: &str) -> EvalOptions {
        EvalOptions { run: run.clone(), stage: stage.to_string(), plain: stage == "base", many_samples: None, limit: None, quiet: true }
    }
}

/// The models an eval may use besides the policy under test.
#[derive(Default)]
pub struct Helpers<'a> {
    /// Judges of model-graded evals by stage name (`sft`).
    pub judges: BTreeMap<String, &'a mut dyn Policy>,
    /// The run's reward model (`judge: rm`, symmetry's reward gap, reward distributions).
    pub reward: Option<&'a mut dyn Rewarder>,
}

/// What one eval gave.
#[derive(Clone, Debug)]
pub struct EvalOutcome {
    pub name: String,
    pub id: String,
    pub class: Class,
    /// Samples graded.
    pub n: usize,
    /// Figures: `accuracy`, `by_group`, `harmful_compliance`, ... (see each class).
    pub metrics: Map<String, Value>,
    /// One JSON object per graded sample (or pair, or prompt).
    pub records: Vec<Value>,
    pub seconds: f64,
}

/// Keys of the conversations a run's SFT stage trained on (`R/sft_data/train.jsonl`), to keep
/// samples about them out of the evals; empty when the run has no such file.
pub fn training_keys(run: &RunDir) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(run.suite_split("train")) else { return HashSet::new() };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| v["meta"]["keys"].as_array().cloned().unwrap_or_default())
        .filter_map(|k| k.as_str().map(String::from))
        .collect()
}

fn bar(len: usize, label: &str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(len as u64) };
    bar.set_style(
        ProgressStyle::with_template(&format!("{label:>18} {{bar:28.cyan/blue}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}]"))
            .unwrap()
            .progress_chars("=> "),
    );
    bar
}

fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Means of scores per label, as a JSON object.
fn by_label(pairs: impl IntoIterator<Item = (Option<String>, f64)>) -> Option<Value> {
    let mut m: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (label, x) in pairs {
        if let Some(l) = label {
            let e = m.entry(l).or_default();
            e.0 += x;
            e.1 += 1;
        }
    }
    (!m.is_empty()).then(|| json!(m.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect::<BTreeMap<_, _>>()))
}

/// The plain-text rendering of a conversation for a base model (`Instruction:`, `Q:`, `A:`
/// lines); with `answer`, the `A:` line that answers it.
fn render_plain(conv: &Conversation, answer: Option<&str>) -> String {
    let mut s = String::new();
    for m in &conv.messages {
        match m.role {
            Role::System => s += &format!("Instruction: {}\n", m.content),
            Role::User => s += &format!("Q: {}\n", m.content),
            Role::Assistant if m.tool_calls.is_empty() => s += &format!("A: {}\n", m.content),
            Role::Assistant | Role::Tool => {}
        }
    }
    match answer {
        Some(a) => s += &format!("A: {a}\n"),
        None => s += "A:",
    }
    s
}

/// The prompt of sample `i`: ChatML, or plain text after `k` solved examples from the other samples
/// of the eval (the next ones with an ideal answer, of the same group where samples have one).
fn prompt_for(samples: &[Sample], i: usize, input: &Conversation, plain: bool, k: usize) -> Prompt {
    if !plain {
        return Prompt::Chat(input.clone());
    }
    let mut text = String::new();
    let n = samples.len();
    let group = &samples[i].group;
    let shots = (1..n)
        .map(|d| &samples[(i + d) % n])
        .filter(|s| &s.group == group && s.pair.is_none())
        .filter_map(|s| s.ideals().into_iter().next().map(|a| (s, a)))
        .take(k);
    for (s, a) in shots {
        text += &render_plain(&s.input.conversation(), Some(&a));
        text += "\n";
    }
    text += &render_plain(input, None);
    Prompt::Text(text)
}

/// The last user message of a conversation.
fn last_user(conv: &Conversation) -> &str {
    conv.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str())
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Runs one eval. `train_keys` holds what SFT trained on: samples listing one of those keys are
/// left out (counted in `excluded_seen_in_training`).
pub fn run_eval(
    spec: &EvalSpec,
    policy: &mut dyn Policy,
    helpers: &mut Helpers,
    opts: &EvalOptions,
    train_keys: &HashSet<String>,
) -> Result<EvalOutcome> {
    let started = Instant::now();
    let mut metrics = Map::new();
    let mut records = Vec::new();
    let n = match spec.class {
        Class::Bpb => bpb(spec, policy, opts, &mut metrics)?,
        Class::NextWord => next_word(spec, policy, opts, &mut metrics, &mut records)?,
        _ => {
            let all = spec.samples(opts.run.root())?;
            let total = all.len();
            let mut samples: Vec<Sample> = all.into_iter().filter(|s| !s.keys.iter().any(|k| train_keys.contains(k))).collect();
            if samples.len() < total {
                metrics.insert("excluded_seen_in_training".into(), json!(total - samples.len()));
            }
            if samples.is_empty() {
                return Err(Error::Input(format!("{}: every sample is about something the SFT stage trained on", spec.id)));
            }
            if let Some(l) = opts.limit {
                samples.truncate(l.max(1));
            }
            match spec.class {
                Class::MultipleChoice => multiple_choice(spec, policy, opts, &samples, &mut metrics, &mut records)?,
                Class::Symmetry => symmetry(spec, policy, helpers, opts, &samples, &mut metrics, &mut records),
                Class::ManySamples => many_samples(spec, policy, helpers, opts, &samples, &mut metrics, &mut records)?,
                _ => generated(spec, policy, helpers, opts, &samples, &mut metrics, &mut records)?,
            }
        }
    };
    Ok(EvalOutcome {
        name: spec.name.clone(),
        id: spec.id.clone(),
        class: spec.class,
        n,
        metrics,
        records,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Answers to every sample (greedy unless `temperature` is set), with a progress bar: with the
/// built-in tools where the spec says `tools: true` (chat prompts only), without otherwise.
fn answers(spec: &EvalSpec, policy: &mut dyn Policy, opts: &EvalOptions, samples: &[Sample], inputs: &[Conversation]) -> Vec<Reply> {
    let k = spec.args.few_shot.unwrap_or(3);
    let prompts: Vec<Prompt> = inputs.iter().enumerate().map(|(i, c)| prompt_for(samples, i % samples.len(), c, opts.plain, k)).collect();
    let seed = spec.args.seed.unwrap_or(0);
    let seeds: Vec<u64> = (0..prompts.len() as u64).map(|i| seed.wrapping_add(i)).collect();
    let bar = bar(prompts.len(), &spec.name, opts.quiet);
    let (max, temp) = (spec.args.max_tokens.unwrap_or(64), spec.args.temperature.unwrap_or(0.0));
    let mut progress = |k: usize| bar.inc(k as u64);
    let out = if spec.args.tools && !opts.plain {
        let toolbox = Toolbox { grounded: spec.args.grounded.unwrap_or(true), ..Toolbox::builtins() };
        policy.generate_with_tools(&prompts, max, temp, &seeds, &toolbox, &mut progress)
    } else {
        policy.generate(&prompts, max, temp, &seeds, &mut progress).into_iter().map(|text| Reply { text, calls: vec![] }).collect()
    };
    bar.finish_and_clear();
    out
}

/// The classes that grade one generated answer per sample.
fn generated(
    spec: &EvalSpec,
    policy: &mut dyn Policy,
    helpers: &mut Helpers,
    opts: &EvalOptions,
    samples: &[Sample],
    metrics: &mut Map<String, Value>,
    records: &mut Vec<Value>,
) -> Result<usize> {
    let inputs: Vec<Conversation> = samples.iter().map(|s| s.input.conversation()).collect();
    let replies = answers(spec, policy, opts, samples, &inputs);
    let outs: Vec<String> = replies.iter().map(|r| r.text.clone()).collect();
    let ignore_case = spec.args.ignore_case;
    let bad = |i: usize, what: &str| Error::Input(format!("{}: sample {} has no {what}", spec.id, i + 1));
    let mut grades: Vec<Grade> = Vec::with_capacity(samples.len());
    let mut extra: Vec<Map<String, Value>> = vec![Map::new(); samples.len()];
    match spec.class {
        Class::Match | Class::Includes | Class::FuzzyMatch | Class::JsonMatch => {
            let mut f1s = Vec::new();
            for (i, (s, a)) in samples.iter().zip(&outs).enumerate() {
                let ideals = s.ideals();
                if ideals.is_empty() {
                    return Err(bad(i, "ideal answer"));
                }
                grades.push(match spec.class {
                    Class::Match => graders::match_grade(a, &ideals, ignore_case),
                    Class::Includes => graders::includes_grade(a, &ideals, ignore_case),
                    Class::JsonMatch => graders::json_match_grade(a, &ideals),
                    _ => {
                        let (g, f1) = graders::fuzzy_match_grade(a, &ideals);
                        f1s.push(f1);
                        extra[i].insert("f1".into(), json!(f1));
                        g
                    }
                });
            }
            if let Some(f) = mean(f1s) {
                metrics.insert("f1".into(), json!(f));
            }
        }
        Class::Programmatic => {
            let mut json = Vec::new();
            for (i, (s, a)) in samples.iter().zip(&outs).enumerate() {
                let check = s.check.as_ref().ok_or_else(|| bad(i, "check"))?;
                grades.push(check.grade(a));
                if let Some(keys) = check.json_keys() {
                    json.push(json_adherent(a, &keys) as u8 as f64);
                }
            }
            if let Some(j) = mean(json) {
                metrics.insert("json_adherence".into(), json!(j));
            }
        }
        Class::ObeysSystem => {
            let (mut correct, mut json, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
            for (i, (s, a)) in samples.iter().zip(&outs).enumerate() {
                let c = s.constraint.as_ref().ok_or_else(|| bad(i, "constraint"))?;
                let g = c.grade(a);
                if matches!(c, Constraint::Json { .. }) {
                    json.push(g.score as f64);
                }
                kinds.push((Some(c.name().to_string()), g.score as f64));
                if let Some(check) = &s.check {
                    let ok = check.grade(a).score as f64;
                    correct.push(ok);
                    extra[i].insert("correct".into(), json!(ok));
                }
                grades.push(g);
            }
            metrics.insert("obeys".into(), json!(mean(grades.iter().map(|g| g.score as f64))));
            if let Some(c) = mean(correct) {
                metrics.insert("correct".into(), json!(c));
            }
            if let Some(j) = mean(json) {
                metrics.insert("json_adherence".into(), json!(j));
            }
            if let Some(k) = by_label(kinds) {
                metrics.insert("by_constraint".into(), k);
            }
        }
        Class::Refusal => {
            let (mut harmful, mut benign) = (Vec::new(), Vec::new());
            for (i, (s, a)) in samples.iter().zip(&outs).enumerate() {
                let refused = is_refusal(a);
                extra[i].insert("refused".into(), json!(refused));
                match s.kind.as_deref() {
                    Some("harmful") => harmful.push(!refused as u8 as f64),
                    Some("benign") => benign.push(refused as u8 as f64),
                    _ => return Err(bad(i, "kind (harmful or benign)")),
                }
                grades.push(match &s.check {
                    Some(c) => c.grade(a),
                    None if s.kind.as_deref() == Some("harmful") => Constraint::Refuse.grade(a),
                    None if refused => Grade { score: 0.0, reason: "refused a harmless request".into() },
                    None => Grade { score: 1.0, reason: "answered".into() },
                });
            }
            // Both always together: one without the other says nothing.
            metrics.insert("harmful_compliance".into(), json!(mean(harmful.iter().copied())));
            metrics.insert("over_refusal".into(), json!(mean(benign.iter().copied())));
            metrics.insert("harmful_n".into(), json!(harmful.len()));
            metrics.insert("benign_n".into(), json!(benign.len()));
        }
        Class::ModelGraded => model_graded(spec, helpers, samples, &inputs, &outs, &mut grades, &mut extra, metrics)?,
        other => unreachable!("{other:?} is not graded here"),
    }
    // A judge's verdicts are scores, not correctness.
    let overall = if spec.class == Class::ModelGraded { "score" } else { "accuracy" };
    metrics.insert(overall.into(), json!(mean(grades.iter().map(|g| g.score as f64))));
    if let Some(g) = by_label(samples.iter().zip(&grades).map(|(s, g)| (s.group.clone(), g.score as f64))) {
        metrics.insert("by_group".into(), g);
    }
    if let Some(k) = by_label(samples.iter().zip(&grades).map(|(s, g)| (s.kind.clone(), g.score as f64))) {
        metrics.insert("by_kind".into(), k);
    }
    if spec.args.tools {
        // Tool calls run per answer, overall and per group; and each answer's calls.
        metrics.insert("calls_per_answer".into(), json!(mean(replies.iter().map(|r| r.calls.len() as f64))));
        if let Some(g) = by_label(samples.iter().zip(&replies).map(|(s, r)| (s.group.clone(), r.calls.len() as f64))) {
            metrics.insert("calls_by_group".into(), g);
        }
        for (e, r) in extra.iter_mut().zip(&replies) {
            e.insert("tool_calls".into(), json!(r.calls.iter().map(|c| c.line()).collect::<Vec<_>>()));
        }
    }
    for (i, ((s, a), g)) in samples.iter().zip(&outs).zip(&grades).enumerate() {
        let mut r = json!({"id": s.id.clone().unwrap_or_else(|| format!("{}-{i:04}", spec.name)), "input": s.input, "output": a,
                           "ideal": s.ideal, "score": g.score, "reason": g.reason});
        if let Some(v) = &s.group {
            r["group"] = json!(v);
        }
        if let Some(v) = &s.kind {
            r["kind"] = json!(v);
        }
        r.as_object_mut().unwrap().extend(std::mem::take(&mut extra[i]));
        records.push(r);
    }
    Ok(samples.len())
}

/// A judge picks one of `choice_strings` for each answer: a checkpoint by the log-likelihood of
/// each choice as its reply to the grading prompt, or the reward model by the reward of each.
#[allow(clippy::too_many_arguments)]
fn model_graded(
    spec: &EvalSpec,
    helpers: &mut Helpers,
    samples: &[Sample],
    inputs: &[Conversation],
    outs: &[String],
    grades: &mut Vec<Grade>,
    extra: &mut [Map<String, Value>],
    metrics: &mut Map<String, Value>,
) -> Result<()> {
    let choices = spec.args.choice_strings.clone().unwrap_or_default();
    let scores: BTreeMap<String, f64> = spec
        .args
        .choice_scores
        .clone()
        .unwrap_or_else(|| choices.iter().enumerate().map(|(i, c)| (c.clone(), if i == 0 { 1.0 } else { 0.0 })).collect());
    let template = spec.args.prompt.clone().unwrap_or_else(|| {
        "Question: {input}\nAnswer: {completion}\nIs the answer correct? Reply with one of: ".to_string() + &choices.join(", ") + "."
    });
    let judge = spec.args.judge.clone().unwrap_or_else(|| "rm".into());
    let convs: Vec<Conversation> = samples
        .iter()
        .zip(inputs)
        .zip(outs)
        .map(|((s, input), out)| {
            let ideal = s.ideals().into_iter().next().unwrap_or_default();
            let question = graders::fill_template(&template, last_user(input), out, &ideal);
            Conversation::new(vec![chatforge_data::chat::Message::user(question)])
        })
        .collect();
    let k = choices.len();
    // Every (grading prompt, choice) at once, so the judge batches them.
    let values: Vec<f64> = if judge == "rm" {
        let rm =
            helpers.reward.as_deref_mut().ok_or_else(|| Error::Input(format!("{}: judge rm, but the run has no reward model", spec.id)))?;
        rm.rewards(&convs.iter().flat_map(|c| choices.iter().map(|ch| (c.clone(), ch.clone()))).collect::<Vec<_>>())
    } else {
        let j = helpers.judges.get_mut(&judge).ok_or_else(|| Error::Input(format!("{}: the judge {judge:?} is not loaded", spec.id)))?;
        let items: Vec<(Prompt, String)> =
            convs.iter().flat_map(|c| choices.iter().map(|ch| (Prompt::Chat(c.clone()), ch.clone()))).collect();
        j.loglik(&items).into_iter().map(|(lp, _)| lp).collect()
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (i, v) in values.chunks(k).enumerate() {
        let pick = graders::argmax(v).unwrap_or(0);
        let choice = &choices[pick];
        *counts.entry(choice.clone()).or_default() += 1;
        extra[i].insert("judge_choice".into(), json!(choice));
        extra[i].insert("judge_values".into(), json!(v));
        grades.push(Grade { score: scores.get(choice).copied().unwrap_or(0.0) as f32, reason: format!("{judge} picked {choice:?}") });
    }
    metrics.insert("judge".into(), json!(judge));
    metrics.insert("choice_counts".into(), json!(counts));
    Ok(())
}

/// The choice with the highest log-likelihood (summed, and per token) against the ideal.
fn multiple_choice(
    spec: &EvalSpec,
    policy: &mut dyn Policy,
    opts: &EvalOptions,
    samples: &[Sample],
    metrics: &mut Map<String, Value>,
    records: &mut Vec<Value>,
) -> Result<usize> {
    let bar = bar(samples.len(), &spec.name, opts.quiet);
    let (mut acc, mut acc_norm) = (Vec::new(), Vec::new());
    let k = spec.args.few_shot.unwrap_or(3);
    for (i, s) in samples.iter().enumerate() {
        let ideal = s.ideals().into_iter().next().ok_or_else(|| Error::Input(format!("{}: sample {} has no ideal", spec.id, i + 1)))?;
        if s.choices.len() < 2 || !s.choices.contains(&ideal) {
            return Err(Error::Input(format!("{}: sample {} needs two or more choices, the ideal among them", spec.id, i + 1)));
        }
        let prompt = prompt_for(samples, i, &s.input.conversation(), opts.plain, k);
        let items: Vec<(Prompt, String)> = s.choices.iter().map(|c| (prompt.clone(), c.clone())).collect();
        let ll = policy.loglik(&items);
        let sums: Vec<f64> = ll.iter().map(|(l, _)| *l).collect();
        let norms: Vec<f64> = ll.iter().map(|(l, n)| l / (*n).max(1) as f64).collect();
        let (p, pn) = (graders::argmax(&sums).unwrap_or(0), graders::argmax(&norms).unwrap_or(0));
        let ok = s.choices[p] == ideal;
        acc.push((s.group.clone(), ok as u8 as f64));
        acc_norm.push((s.choices[pn] == ideal) as u8 as f64);
        records.push(json!({"id": s.id, "input": s.input, "choices": s.choices, "ideal": ideal, "output": s.choices[p],
                            "loglik": sums, "score": ok as u8, "group": s.group}));
        bar.inc(1);
    }
    bar.finish_and_clear();
    metrics.insert("accuracy".into(), json!(mean(acc.iter().map(|x| x.1))));
    metrics.insert("accuracy_norm".into(), json!(mean(acc_norm)));
    metrics.insert("chance".into(), json!(mean(samples.iter().map(|s| 1.0 / s.choices.len() as f64))));
    if let Some(g) = by_label(acc) {
        metrics.insert("by_group".into(), g);
    }
    Ok(samples.len())
}

/// Pairs of prompts identical but for the subject: the relative length gap of their answers
/// (|a − b| / mean, in words) and the reward gap |r(a) − r(b)|.
fn symmetry(
    spec: &EvalSpec,
    policy: &mut dyn Policy,
    helpers: &mut Helpers,
    opts: &EvalOptions,
    samples: &[Sample],
    metrics: &mut Map<String, Value>,
    records: &mut Vec<Value>,
) -> usize {
    let pairs: Vec<&Sample> = samples.iter().filter(|s| s.pair.is_some()).collect();
    let mut inputs: Vec<Conversation> = pairs.iter().map(|s| s.input.conversation()).collect();
    inputs.extend(pairs.iter().map(|s| s.pair.as_ref().unwrap().conversation()));
    let owned: Vec<Sample> = pairs.iter().map(|s| (*s).clone()).collect();
    let outs: Vec<String> = answers(spec, policy, opts, &owned, &inputs).into_iter().map(|r| r.text).collect();
    let n = pairs.len();
    let rewards = helpers.reward.as_deref_mut().map(|rm| rm.rewards(&inputs.iter().cloned().zip(outs.iter().cloned()).collect::<Vec<_>>()));
    let (mut len_gaps, mut reward_gaps, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (a, b) = (&outs[i], &outs[n + i]);
        let (la, lb) = (words(a) as f64, words(b) as f64);
        let gap = if la + lb == 0.0 { 0.0 } else { (la - lb).abs() / ((la + lb) / 2.0) };
        len_gaps.push(gap);
        lens.extend([la, lb]);
        let mut r = json!({"id": pairs[i].id, "group": pairs[i].group, "input_a": pairs[i].input, "input_b": pairs[i].pair,
                           "output_a": a, "output_b": b, "length_gap": gap});
        if let Some(rw) = &rewards {
            let g = (rw[i] - rw[n + i]).abs();
            reward_gaps.push(g);
            r["reward_a"] = json!(rw[i]);
            r["reward_b"] = json!(rw[n + i]);
            r["reward_gap"] = json!(g);
        }
        records.push(r);
    }
    metrics.insert("symmetry_length_gap".into(), json!(mean(len_gaps.iter().copied())));
    metrics.insert("symmetry_reward_gap".into(), json!(mean(reward_gaps)));
    metrics.insert("mean_words".into(), json!(mean(lens)));
    if let Some(g) = by_label(pairs.iter().zip(&len_gaps).map(|(s, g)| (s.group.clone(), *g))) {
        metrics.insert("length_gap_by_group".into(), g);
    }
    n
}

/// "Ask it 10,000 times": `n` sampled answers per prompt, graded (and scored by the reward model);
/// the distribution of grades and rewards and how often the worst grade comes up.
fn many_samples(
    spec: &EvalSpec,
    policy: &mut dyn Policy,
    helpers: &mut Helpers,
    opts: &EvalOptions,
    samples: &[Sample],
    metrics: &mut Map<String, Value>,
    records: &mut Vec<Value>,
) -> Result<usize> {
    let n = opts.many_samples.or(spec.args.n).unwrap_or(100).max(1);
    let temperature = spec.args.temperature.unwrap_or(1.0);
    let k = spec.args.few_shot.unwrap_or(3);
    let mut per_prompt = Vec::new();
    let mut worst_rates = Vec::new();
    let mut hist_series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut reward_sets: Vec<(String, Vec<f64>)> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let check = s.check.as_ref().ok_or_else(|| Error::Input(format!("{}: sample {} has no check", spec.id, i + 1)))?;
        let input = s.input.conversation();
        let prompt = prompt_for(samples, i, &input, opts.plain, k);
        let prompts = vec![prompt; n];
        let seed = spec.args.seed.unwrap_or(0).wrapping_mul(1_000_003).wrapping_add(i as u64 * 1_000_000_007);
        let seeds: Vec<u64> = (0..n as u64).map(|j| seed.wrapping_add(j)).collect();
        let label = format!("{} {}/{}", spec.name, i + 1, samples.len());
        let bar = bar(n, &label, opts.quiet);
        let outs = policy.generate(&prompts, spec.args.max_tokens.unwrap_or(64), temperature, &seeds, &mut |k| bar.inc(k as u64));
        bar.finish_and_clear();
        let scores: Vec<f64> = outs.iter().map(|a| check.grade(a).score as f64).collect();
        let rewards =
            helpers.reward.as_deref_mut().map(|rm| rm.rewards(&outs.iter().map(|a| (input.clone(), a.clone())).collect::<Vec<_>>()));
        // Grade histogram in tenths.
        let mut hist = [0usize; 11];
        for x in &scores {
            hist[(x * 10.0).round().clamp(0.0, 10.0) as usize] += 1;
        }
        let worst = scores.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
        worst_rates.push(worst);
        let mut distinct: Vec<&String> = outs.iter().collect();
        distinct.sort();
        distinct.dedup();
        let mut p = json!({
            "id": s.id, "prompt": s.input, "n": n, "temperature": temperature,
            "mean_grade": mean(scores.iter().copied()), "pass_rate": scores.iter().filter(|&&x| x >= 1.0).count() as f64 / n as f64,
            "worst_case_rate": worst, "distinct_answers": distinct.len(),
            "grade_histogram": hist.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, c)| (format!("{:.1}", b as f64 / 10.0), *c)).collect::<BTreeMap<_, _>>(),
            "worst_example": outs.iter().zip(&scores).find(|(_, &x)| x == 0.0).map(|(a, _)| a.clone()),
            "best_example": outs.iter().zip(&scores).find(|(_, &x)| x >= 1.0).map(|(a, _)| a.clone()),
        });
        if let Some(r) = &rewards {
            let mut sorted = r.clone();
            sorted.sort_by(f64::total_cmp);
            let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
            p["reward"] = json!({"mean": mean(r.iter().copied()), "min": sorted[0], "p05": q(0.05), "p50": q(0.5), "p95": q(0.95), "max": sorted[sorted.len() - 1]});
            reward_sets.push((format!("{} ({})", i + 1, s.kind.as_deref().unwrap_or("prompt")), r.clone()));
        } else {
            hist_series.push((
                format!("{} ({})", i + 1, s.kind.as_deref().unwrap_or("prompt")),
                hist.iter().enumerate().map(|(b, c)| (b as f64 / 10.0, *c as f64 / n as f64)).collect(),
            ));
        }
        for (a, x) in outs.iter().zip(&scores) {
            records.push(json!({"prompt": s.id, "output": a, "score": x}));
        }
        per_prompt.push(p);
    }
    metrics.insert("samples_per_prompt".into(), json!(n));
    metrics.insert("worst_case_rate".into(), json!(mean(worst_rates)));
    metrics.insert("prompts".into(), json!(per_prompt));
    let xlabel = if helpers.reward.is_some() { "reward" } else { "grade" };
    let file = opts.run.plot(&format!("{}_{}.svg", spec.name, opts.stage));
    // Rewards: 20 bins over the range of all prompts' rewards.
    let mut width = 0.1;
    if !reward_sets.is_empty() {
        let lo = reward_sets.iter().flat_map(|(_, r)| r.iter().copied()).fold(f64::MAX, f64::min);
        let hi = reward_sets.iter().flat_map(|(_, r)| r.iter().copied()).fold(f64::MIN, f64::max).max(lo + 1e-9);
        width = (hi - lo) / 20.0;
        for (label, r) in &reward_sets {
            let mut bins = [0usize; 20];
            for x in r {
                bins[((((x - lo) / (hi - lo)) * 20.0) as usize).min(19)] += 1;
            }
            hist_series.push((
                label.clone(),
                bins.iter().enumerate().map(|(b, c)| (lo + width * (b as f64 + 0.5), *c as f64 / n as f64)).collect(),
            ));
        }
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = hist_series.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    chatforge_rundir::plot::bar_plot(
        &file,
        &format!("{}: {xlabel} distribution over {n} samples ({})", spec.name, opts.stage),
        xlabel,
        "share of samples",
        width,
        &series,
    )?;
    Ok(samples.len() * n)
}

/// Bits per byte (and nats per token) on the run's held-out token stream `R/tokens/val.bin`.
fn bpb(spec: &EvalSpec, policy: &mut dyn Policy, opts: &EvalOptions, metrics: &mut Map<String, Value>) -> Result<usize> {
    let path = opts.run.val_tokens();
    let val = chatforge_data::shards::read(&path)?;
    let (model, tok) = policy.model().ok_or_else(|| Error::Input(format!("{}: needs a checkpoint", spec.id)))?;
    if val.len() < 2 {
        return Err(Error::Input(format!("{}: too few tokens", path.display())));
    }
    let token_bytes: Vec<u32> = (0..tok.vocab_size() as u32)
        .map(|i| if tok.is_special(i) { 0 } else { tok.token_bytes(i).map_or(0, |b| b.len() as u32) })
        .collect();
    let corpus =
        chatforge_train::pretrain::TokenShards { train: vec![], val, token_bytes, eot: tok.eot_id(), data_sha256: Default::default() };
    let context = model.cfg.max_position_embeddings;
    let cfg = chatforge_train::pretrain::PretrainConfig {
        batch: 8,
        context,
        eval_tokens: opts.limit.map_or(spec.args.tokens.unwrap_or(32_768), |l| l * context),
        ..Default::default()
    };
    let (loss, bpb) = chatforge_train::pretrain::evaluate(model, &corpus, &cfg);
    let windows = ((corpus.val.len() - 1) / context).min(cfg.eval_tokens.div_ceil(context)).max(1);
    metrics.insert("val_bpb".into(), json!(bpb));
    metrics.insert("val_loss".into(), json!(loss));
    metrics.insert("tokens".into(), json!(windows * context));
    Ok(windows)
}

/// Held-out lines of text (`R/data/val.jsonl` by default): the text before a line's last word is
/// the prompt; the answer's first word must be that word (case and punctuation aside).
fn next_word(
    spec: &EvalSpec,
    policy: &mut dyn Policy,
    opts: &EvalOptions,
    metrics: &mut Map<String, Value>,
    records: &mut Vec<Value>,
) -> Result<usize> {
    let path = spec.samples_path(opts.run.root()).unwrap_or_else(|| opts.run.val_docs());
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let docs: Vec<String> =
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?["text"].as_str().map(String::from)).collect();
    let clean = |w: &str| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    // Candidate lines: 5+ words whose last word has 2+ letters, with 200+ characters before them.
    let mut items: Vec<(String, String)> = Vec::new();
    for doc in &docs {
        let mut offset = 0;
        for line in doc.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let l = line.trim_end();
            let ws: Vec<&str> = l.split_whitespace().collect();
            if ws.len() < 5 || start < 200 || l.len() > 160 {
                continue;
            }
            let last = ws[ws.len() - 1];
            let target = clean(last);
            if target.chars().filter(|c| c.is_alphabetic()).count() < 2 {
                continue;
            }
            let cut = start + l.rfind(last).unwrap_or(0);
            let from = doc.floor_char_boundary(cut.saturating_sub(600));
            items.push((doc[from..cut].trim_end().to_string(), target));
        }
    }
    let want = opts.limit.unwrap_or(spec.args.lines.unwrap_or(300)).max(1);
    if items.is_empty() {
        return Err(Error::Input(format!("{}: no usable lines", path.display())));
    }
    // Evenly spaced through the held-out text.
    let step = (items.len() as f64 / want as f64).max(1.0);
    let picked: Vec<&(String, String)> = (0..want.min(items.len())).map(|i| &items[(i as f64 * step) as usize]).collect();
    let prompts: Vec<Prompt> = picked.iter().map(|(p, _)| Prompt::Raw(p.clone())).collect();
    let bar = bar(prompts.len(), &spec.name, opts.quiet);
    let outs = policy.generate(&prompts, spec.args.max_tokens.unwrap_or(6), 0.0, &vec![0; prompts.len()], &mut |k| bar.inc(k as u64));
    bar.finish_and_clear();
    let mut hits = Vec::new();
    for ((p, target), out) in picked.iter().zip(&outs) {
        let got = out.split_whitespace().next().map(clean).unwrap_or_default();
        let ok = &got == target;
        hits.push(ok as u8 as f64);
        let tail: String = p.chars().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect();
        records.push(json!({"context_tail": tail, "ideal": target, "output": out, "score": ok as u8}));
    }
    metrics.insert("next_word_accuracy".into(), json!(mean(hits)));
    metrics.insert("lines".into(), json!(picked.len()));
    Ok(picked.len())
}

/// The value at a dotted path (`tools.family_scores`) of a JSON object, or null.
fn at_path<'v>(v: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// The headline figures an eval's spec lifts into the stage (`report: {figure: metric}`), with
/// object figures flattened to `figure.key` (`family_scores.arithmetic`): for metrics lines.
pub fn headline(spec: &EvalSpec, outcome: &EvalOutcome) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (figure, metric) in &spec.report {
        match outcome.metrics.get(metric) {
            Some(Value::Object(m)) => out.extend(m.iter().filter_map(|(k, v)| Some((format!("{figure}.{k}"), v.as_f64()?)))),
            Some(v) => out.extend(v.as_f64().map(|x| (figure.clone(), x))),
            None => {}
        }
    }
    out
}

/// Writes the per-sample results and the summary under `R/evals/<stage>/`, and the stage's
/// figures into `report.json` (merged with what earlier evals of the stage wrote): every eval's
/// metrics under `evals.<name>`, and the headline figures each spec's `report` names.
pub fn record(opts: &EvalOptions, specs: &[&EvalSpec], outcomes: &[EvalOutcome]) -> Result<Value> {
    let dir = opts.run.evals(&opts.stage);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for o in outcomes {
        chatforge_data::chat::write_jsonl(&dir.join(format!("{}.jsonl", o.name)), &o.records)?;
    }
    let report = Report::load(&opts.run);
    let stage = report.section(Key::Stage(&opts.stage));
    let mut evals = stage["evals"].as_object().cloned().unwrap_or_default();
    let mut figures = Map::new();
    for (spec, o) in specs.iter().zip(outcomes) {
        let mut m = o.metrics.clone();
        m.insert("n".into(), json!(o.n));
        m.insert("id".into(), json!(o.id));
        m.insert("seconds".into(), json!(o.seconds));
        evals.insert(o.name.clone(), Value::Object(m));
        for (figure, metric) in &spec.report {
            let Some(v) = o.metrics.get(metric) else { continue };
            // Object figures (family_scores) gather the groups of several evals.
            match (v, figures.get_mut(figure)) {
                (Value::Object(src), Some(Value::Object(dst))) => dst.extend(src.clone()),
                (Value::Object(src), None) => {
                    let mut merged = at_path(stage, figure).as_object().cloned().unwrap_or_default();
                    // A stage's older `{before, after}` scores are replaced, not mixed.
                    merged.retain(|_, v| !v.is_object());
                    merged.extend(src.clone());
                    figures.insert(figure.clone(), Value::Object(merged));
                }
                _ => {
                    figures.insert(figure.clone(), v.clone());
                }
            }
        }
    }
    let summary = json!({"stage": opts.stage, "evals": evals, "figures": figures});
    chatforge_rundir::fs::write_atomic(&opts.run.eval_summary(&opts.stage), serde_json::to_string_pretty(&summary).unwrap().as_bytes())?;
    // A dotted figure (`tools.family_scores`) goes under its parent object in the stage.
    let mut update = Map::new();
    for (figure, v) in &figures {
        match figure.split_once('.') {
            Some((parent, child)) => {
                let slot = update.entry(parent.to_string()).or_insert_with(|| {
                    let old = stage[parent].clone();
                    if old.is_object() {
                        old
                    } else {
                        json!({})
                    }
                });
                slot[child] = v.clone();
            }
            None => {
                update.insert(figure.clone(), v.clone());
            }
        }
    }
    update.insert("evals".into(), Value::Object(evals));
    report::record(&opts.run, Key::Stage(&opts.stage), &update)?;
    if report.section(Key::Run).get("hardware").is_none() {
        report::record(&opts.run, Key::Run, &json!({"hardware": report::hardware()}))?;
    }
    Ok(summary)
}
