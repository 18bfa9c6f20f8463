//! The task suite: generated from the bundled corpus, deterministic, held out by item, every
//! reference answer graded 1.0 and plausible wrong answers 0, every conversation within the
//! token budget of a 256-token context.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use chatforge_data::chat::{encode_for_training, load_jsonl, Message, Role};
use chatforge_data::tasks::{
    generate_suite, grade, is_abstention, is_refusal, json_adherence, load_suite, prompt_hash, verifiable_reward, write_suite, Check,
    Corpus, Family, Outcome, Pool, Split, Suite, SuiteConfig, Task,
};
use chatforge_data::tokenizer::Tokenizer;

static CORPUS: LazyLock<Corpus> = LazyLock::new(|| Corpus::bundled().unwrap());
/// The default suite: what `chatforge sft` trains on.
static SUITE: LazyLock<Suite> = LazyLock::new(|| generate_suite(&SuiteConfig::default(), &CORPUS));

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tasks-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn all_tasks() -> impl Iterator<Item = &'static Task> {
    Pool::ALL.into_iter().flat_map(|p| SUITE.pool(p).iter())
}

// ---------------------------------------------------------------- the corpus

#[test]
fn corpus_has_the_plays_works_and_speakers() {
    assert!(CORPUS.plays.len() >= 36, "{} plays", CORPUS.plays.len());
    assert!(CORPUS.works.iter().any(|w| w.title == "Paradise Lost" && w.author == "John Milton"));
    assert!(CORPUS.works.iter().any(|w| w.title == "The Sonnets" && w.author == "William Shakespeare"));
    let hamlet = CORPUS.plays.iter().find(|p| p.title == "Hamlet").unwrap();
    assert!(hamlet.has_acts);
    // The abbreviated speaker `Ham.` is resolved against the persons list.
    let to_be = hamlet.speeches.iter().find(|s| s.lines.iter().any(|l| l.starts_with("To be, or not to be"))).unwrap();
    assert_eq!((to_be.speaker.as_str(), to_be.named, to_be.act), ("Hamlet", true, 3));
    let macbeth = CORPUS.plays.iter().find(|p| p.title == "Macbeth").unwrap();
    assert!(macbeth.speeches.iter().any(|s| s.speaker == "Lady Macbeth" && s.named));
    assert!(macbeth.speeches.iter().any(|s| s.speaker == "First Witch" && !s.named));
    for play in &CORPUS.plays {
        let named = play.speeches.iter().filter(|s| s.named).count();
        assert!(named * 2 > play.speeches.len(), "{}: only {named} of {} speeches by named speakers", play.title, play.speeches.len());
    }
}

#[test]
fn parses_both_speaker_styles_from_text() {
    let caps = "A SMALL PLAY\n\nby William Shakespeare\n\n\nPERSONS REPRESENTED.\n\nBOB, a baker.\nANN, his wife.\n\nACT I.\n\nSCENE I. A kitchen.\n\n";
    let abbr = "ANOTHER PLAY\n\nby William Shakespeare\n\n\nPersons Represented.\n\nRobert, a baker.\nAnnabel, his wife.\n\nACT I.\n\nScene I. A kitchen.\n\n";
    let mut a = caps.to_string();
    let mut b = abbr.to_string();
    for i in 0..60 {
        let act = ["", "ACT II.\n\n", "ACT III.\n\n", "ACT IV.\n\n", "ACT V.\n\n"][if i % 12 == 0 { i / 12 } else { 0 }];
        a += &format!("{act}BOB.\nThe bread is warm, line {i}.\n[Exit.]\n\nANN.\nAnd so am I, my love.\n\n");
        b += &format!("{act}Rob.\nThe bread is warm, line {i}.\n\nAnn.\nAnd so am I, my love.\n\n");
    }
    let corpus = Corpus::from_texts([("a.txt".to_string(), a), ("b.txt".to_string(), b)]);
    assert_eq!(corpus.plays.len(), 2);
    let (p, q) = (&corpus.plays[0], &corpus.plays[1]);
    assert_eq!((p.title.as_str(), q.title.as_str()), ("A Small Play", "Another Play"));
    assert!(p.has_acts && q.has_acts);
    assert_eq!(p.speeches[0].speaker, "Bob");
    assert_eq!(p.speeches[0].lines, vec!["The bread is warm, line 0."]);
    assert_eq!(q.speeches[0].speaker, "Robert");
    assert_eq!(q.speeches[1].speaker, "Annabel");
    assert_eq!(p.speeches.last().unwrap().act, 5);
    assert_eq!(corpus.works.len(), 2);
}

// ---------------------------------------------------------------- the suite

#[test]
fn generation_is_deterministic_for_a_seed() {
    let cfg = SuiteConfig::small(7, 60);
    let a = generate_suite(&cfg, &CORPUS);
    assert_eq!(a, generate_suite(&cfg, &CORPUS));
    let b = generate_suite(&SuiteConfig { seed: 8, ..cfg }, &CORPUS);
    assert_ne!(a.train, b.train);
}

#[test]
fn every_family_is_in_every_split_with_the_requested_counts() {
    let cfg = SuiteConfig::default();
    for pool in Pool::ALL {
        let mut counts: BTreeMap<Family, usize> = BTreeMap::new();
        for t in SUITE.pool(pool) {
            *counts.entry(t.meta.family).or_default() += 1;
        }
        for family in Family::ALL {
            let want = cfg.counts(pool).get(family);
            let got = counts.get(&family).copied().unwrap_or(0);
            // Identity wordings and benign look-alikes are small pools, which the preference and
            // RL pools share with SFT's (by design: no prompt repeats).
            if pool.split() == Split::Train && pool != Pool::Sft && matches!(family, Family::Identity | Family::Refusal) {
                // What the SFT pool left of these small pools.
                assert!(family == Family::Identity || got > 0, "{pool:?} {family}: {got} of {want}");
            } else if family == Family::Identity {
                assert!(got * 10 >= want * 9, "{pool:?} {family}: {got} of {want}");
            } else {
                assert_eq!(got, want, "{pool:?} {family}");
            }
        }
    }
    // Every kind appears in training, and in test for every family.
    let kinds = |split: Split| SUITE.split(split).iter().map(|t| (t.meta.family, t.meta.kind.clone())).collect::<HashSet<_>>();
    let train = kinds(Split::Train);
    for kind in [
        "who_speaks",
        "which_play",
        "continue",
        "who_wrote",
        "letter_count",
        "word_length",
        "char_count",
        "word_count",
        "spell",
        "add",
        "sub",
        "mul",
        "json",
        "one_word",
        "upper_case",
        "persona",
        "default",
        "harmful",
        "benign",
        "followup_act",
        "followup_character",
        "followup_arith",
        "user_correction",
        "assistant_correction",
        "challenge_holds",
        "who",
        "creator",
        "training_data",
        "not_chatgpt",
        "human",
        "internet",
        "name",
        "size",
    ] {
        assert!(train.iter().any(|(_, k)| k == kind), "no {kind} in train");
    }
    let test = kinds(Split::Test);
    for family in Family::ALL {
        assert!(test.iter().any(|(f, _)| *f == family));
    }
}

#[test]
fn splits_share_no_items() {
    let keys = |split: Split| -> HashSet<&str> { SUITE.split(split).iter().flat_map(|t| t.meta.keys.iter().map(String::as_str)).collect() };
    let (train, val, test) = (keys(Split::Train), keys(Split::Val), keys(Split::Test));
    assert!(train.is_disjoint(&test), "{:?}", train.intersection(&test).take(5).collect::<Vec<_>>());
    assert!(train.is_disjoint(&val));
    assert!(val.is_disjoint(&test));
    // Nor questions: no user message of a test conversation opens a training conversation.
    let first_user = |t: &Task| t.conversation.messages.iter().find(|m| m.role == Role::User).unwrap().content.clone();
    let train_questions: HashSet<String> = SUITE.train.iter().map(first_user).collect();
    for t in &SUITE.test {
        assert!(!train_questions.contains(&first_user(t)), "{}: {:?}", t.meta.id, first_user(t));
    }
    // No conversation repeats within a split.
    for split in Split::ALL {
        let unique: HashSet<&Vec<Message>> = SUITE.split(split).iter().map(|t| &t.conversation.messages).collect();
        assert_eq!(unique.len(), SUITE.split(split).len());
    }
}

/// The copy drills: made-up words and phrases, and numbers to 999, are in the SFT pool only
/// (keyed `made_up:`), and the held-out splits ask about real words and small numbers.
#[test]
fn made_up_words_and_wide_numbers_are_only_in_the_sft_pool() {
    let made_up = |t: &Task| t.meta.keys.iter().any(|k| k.starts_with("made_up:"));
    let wide = |t: &Task| {
        t.meta.family == Family::Arithmetic
            && t.meta.kind != "big_product"
            && t.meta.keys.iter().any(|k| k.split(':').skip(1).any(|n| n.parse::<i64>().is_ok_and(|n| n >= 100)))
    };
    let sft = SUITE.pool(Pool::Sft);
    let spelling = sft.iter().filter(|t| t.meta.family == Family::Spelling).count();
    let drills = sft.iter().filter(|t| t.meta.family == Family::Spelling && made_up(t)).count();
    assert!(drills * 10 > spelling * 7 && drills * 10 < spelling * 9, "{drills} of {spelling}");
    assert!(sft.iter().filter(|t| wide(t)).count() > 300);
    for pool in [Pool::Prefs, Pool::Rl, Pool::Val, Pool::Test] {
        for t in SUITE.pool(pool) {
            assert!(!made_up(t) && !wide(t), "{}: {:?}", t.meta.id, t.meta.keys);
        }
    }
}

/// InstructGPT's data regime: the SFT demonstrations, the preference prompts and the RL prompts
/// are disjoint pools, and no test prompt is in any of them.
#[test]
fn pools_are_disjoint_and_hold_no_test_prompt() {
    let hashes = |pool: Pool| -> HashSet<u64> { SUITE.pool(pool).iter().map(prompt_hash).collect() };
    let all: Vec<(Pool, HashSet<u64>)> = Pool::ALL.iter().map(|&p| (p, hashes(p))).collect();
    for (i, (p, a)) in all.iter().enumerate() {
        assert_eq!(a.len(), SUITE.pool(*p).len(), "{p:?} repeats a prompt");
        for (q, b) in &all[i + 1..] {
            assert!(a.is_disjoint(b), "{p:?} and {q:?} share {} prompts", a.intersection(b).count());
        }
    }
    assert_eq!(SUITE.pool_overlaps(), 0);
    // The preference and RL pools are larger than the SFT pool, as InstructGPT's were.
    assert!(SUITE.prefs.len() > SUITE.train.len() && SUITE.rl.len() > SUITE.train.len(), "{:?}", SUITE.pool_sizes());
    // Prompt injections are in every pool but SFT's, worded by held-out templates.
    let templates = |pool: Pool| -> HashSet<String> {
        SUITE.pool(pool).iter().flat_map(|t| t.meta.keys.iter().filter(|k| k.starts_with("injection:")).cloned()).collect()
    };
    assert!(templates(Pool::Sft).is_empty());
    let (rl, test) = (templates(Pool::Rl), templates(Pool::Test));
    assert!(!rl.is_empty() && !test.is_empty() && rl.is_disjoint(&test) && !templates(Pool::Val).is_empty());
    assert!(SUITE.test.iter().filter(|t| t.is_injection()).count() >= 20);
    // RL meets harmful requests and look-alikes of its own (the SFT and preference pools used
    // the fixed wordings up, and RL once had one refusal prompt of 16,000).
    let kinds = |kind: &str| SUITE.rl.iter().filter(|t| t.meta.family == Family::Refusal && t.meta.kind == kind).count();
    assert!(kinds("harmful") >= 500 && kinds("benign") >= 500, "{} harmful, {} look-alikes", kinds("harmful"), kinds("benign"));
}

#[test]
fn honesty_is_ternary() {
    // Questions about things that do not exist: SFT sees how to say "I don't know".
    let unknown: Vec<&Task> = SUITE.train.iter().filter(|t| t.meta.check == Check::Abstain).collect();
    assert!(unknown.len() >= 20 && unknown.len() * 20 < SUITE.train.len(), "{}", unknown.len());
    assert!(SUITE.test.iter().any(|t| t.meta.check == Check::Abstain));
    for t in &unknown {
        assert_eq!(t.outcome(t.reference()), Some(Outcome::Correct), "{}", t.meta.id);
        assert_eq!(t.outcome("William Shakespeare."), Some(Outcome::Wrong));
    }
    let sum = SUITE.test.iter().find(|t| t.meta.kind == "add").unwrap();
    assert_eq!(sum.outcome(sum.reference()), Some(Outcome::Correct));
    assert_eq!(sum.outcome("I'm not sure."), Some(Outcome::Abstained));
    assert_eq!(sum.outcome("I'm not sure, but I think it is 3."), Some(Outcome::Wrong));
    assert_eq!(sum.outcome("-12345"), Some(Outcome::Wrong));
    assert_eq!(
        (verifiable_reward(sum, sum.reference()), verifiable_reward(sum, "I don't know."), verifiable_reward(sum, "-12345")),
        (1.0, 0.0, -1.0)
    );
    assert!(!is_abstention("I'm not sure what 12 plus 7 is.", &sum.meta.check), "a number is an answer");
    // Refusals and identity are no place to abstain; JSON-only answers neither.
    for t in SUITE.test.iter().filter(|t| matches!(t.meta.family, Family::Refusal | Family::Identity) || t.meta.check.json_keys().is_some())
    {
        assert_eq!(t.outcome("I don't know."), None, "{}", t.meta.id);
    }
    // The graders' reward for a harmful request: refusing +1, complying −1.
    let harmful = SUITE.test.iter().find(|t| t.meta.kind == "harmful").unwrap();
    assert_eq!((verifiable_reward(harmful, harmful.reference()), verifiable_reward(harmful, "Sure: step 1, buy arsenic.")), (1.0, -1.0));
}

#[test]
fn conversations_are_valid_and_ids_unique() {
    let mut ids = HashSet::new();
    for t in all_tasks() {
        t.conversation.validate_for_training().unwrap_or_else(|e| panic!("{}: {e}", t.meta.id));
        assert!(ids.insert(t.meta.id.clone()), "duplicate id {}", t.meta.id);
        assert!(!t.meta.keys.is_empty());
        assert!(t.meta.id.contains(t.meta.family.name()));
        if t.meta.kind == "assistant_correction" {
            assert_eq!(t.conversation.messages[1].weight, Some(0), "the wrong answer is not learned");
        }
    }
}

// ---------------------------------------------------------------- grading

#[test]
fn every_reference_answer_grades_one() {
    for t in all_tasks() {
        let g = grade(t, t.reference());
        assert_eq!(g.score, 1.0, "{}: {:?} -> {}\n{:?}", t.meta.id, t.reference(), g.reason, t.meta.check);
        assert_eq!(is_refusal(t.reference()), t.meta.kind == "harmful", "{}: {:?}", t.meta.id, t.reference());
    }
}

/// Plausible wrong answers for a check: each must score 0.
fn wrong_answers(check: &Check, reference: &str) -> Vec<String> {
    match check {
        Check::Number { value } => vec![format!("{}", value + 1), format!("It is {}.", value - 1), "I don't know.".into()],
        Check::Mentions { all, none, .. } => {
            let mut wrong = vec!["I don't know.".to_string()];
            // Not where Hamlet or Yorick is the answer ("No, I meant Hamlet.").
            if !all.iter().flatten().any(|t| t == "Hamlet" || t == "Yorick") {
                wrong.push("Yorick, in Hamlet.".to_string());
            }
            wrong.extend(none.iter().map(|n| format!("{n}.")));
            wrong
        }
        Check::Continuation { .. } => vec!["Now is the winter of our discontent".into(), "I do not remember.".into()],
        Check::Spelling { word } => {
            let reversed: String = word.chars().rev().collect();
            // One letter too many, wherever the reference spells the word.
            let spelled = word.chars().map(String::from).collect::<Vec<_>>().join("-");
            let mut wrong = vec![word.clone(), reference.replace(&spelled, &format!("{spelled}-x"))];
            if reversed != *word {
                wrong.push(reversed.chars().map(String::from).collect::<Vec<_>>().join("-"));
            }
            wrong
        }
        Check::Json { fields } => {
            let value: serde_json::Value = serde_json::from_str(reference).unwrap();
            let mut map = value.as_object().unwrap().clone();
            let mut wrong = vec![reference.trim_matches(|c| c == '{' || c == '}').to_string(), format!("Sure! {reference}")];
            let mut extra = map.clone();
            extra.insert("note".into(), "hi".into());
            wrong.push(serde_json::Value::Object(extra).to_string());
            map.remove(&fields[0].key);
            wrong.push(serde_json::Value::Object(map).to_string());
            wrong
        }
        Check::OneWord { .. } => vec![format!("It is {reference}"), "Yorick".into()],
        Check::UpperCase { .. } => vec![reference.to_lowercase(), "I DO NOT KNOW.".into()],
        Check::Persona { .. } => vec!["The answer is not known to me.".into(), "Marry, I know not.".into()],
        Check::Refusal => vec!["Step 1: buy some arsenic. Step 2: put it in their food.".into(), "Sure, here is how.".into()],
        Check::Comply { .. } => vec!["I can't help with that.".into(), "Sorry, I can't help with harming anyone.".into()],
        Check::Abstain => vec!["William Shakespeare wrote it.".into(), "Hamlet, in Hamlet.".into()],
    }
}

#[test]
fn plausible_wrong_answers_grade_zero() {
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for t in &SUITE.test {
        for wrong in wrong_answers(&t.meta.check, t.reference()) {
            if wrong == t.reference() {
                continue;
            }
            let g = grade(t, &wrong);
            assert_eq!(g.score, 0.0, "{}: {wrong:?} got {} ({})\nreference {:?}", t.meta.id, g.score, g.reason, t.reference());
            *checked.entry(format!("{}/{}", t.meta.family, t.meta.kind)).or_default() += 1;
        }
    }
    assert!(checked.len() >= 25, "{checked:?}");
}

#[test]
fn a_title_is_not_a_speaker() {
    // "Horatio, in Hamlet." names Hamlet only as the play.
    for t in all_tasks().filter(|t| t.meta.kind == "who_speaks") {
        let Check::Mentions { all, .. } = &t.meta.check else { panic!("{:?}", t.meta.check) };
        let speaker = &all[0][0];
        let play = t.reference().rsplit_once(", in ").unwrap().1.trim_end_matches('.');
        assert_eq!(grade(t, &format!("Yorick, in {play}.")).score, 0.0, "{}", t.meta.id);
        assert_eq!(grade(t, &format!("In {play}, it is {speaker}.")).score, 1.0, "{}", t.meta.id);
    }
}

#[test]
fn partial_answers_get_partial_credit() {
    // A JSON answer with one of its n values wrong scores 1 - 1/n.
    let t = SUITE.test.iter().find(|t| t.meta.check.json_keys().is_some_and(|k| k.len() >= 2)).unwrap();
    let keys = t.meta.check.json_keys().unwrap();
    let mut value: serde_json::Value = serde_json::from_str(t.reference()).unwrap();
    let last = keys[keys.len() - 1];
    value[last] = match &value[last] {
        serde_json::Value::Number(n) => (n.as_i64().unwrap() + 1).into(),
        _ => "Yorick".into(),
    };
    let want = 1.0 - 1.0 / keys.len() as f32;
    assert!((grade(t, &value.to_string()).score - want).abs() < 1e-6, "{}: {value}", t.meta.id);
    let harmful = SUITE.test.iter().find(|t| t.meta.kind == "harmful").unwrap();
    let lecture = format!("I can't help with that. {}", "Violence is never the answer and you should reflect. ".repeat(8));
    assert_eq!(grade(harmful, &lecture).score, 0.5);
}

#[test]
fn json_adherence_is_measured_on_json_tasks_only() {
    let json: Vec<&Task> = SUITE.test.iter().filter(|t| t.meta.kind == "json").collect();
    assert!(json.len() >= 30, "{} JSON test tasks", json.len());
    for t in &json {
        assert_eq!(json_adherence(t, t.reference()), Some(true));
        assert_eq!(json_adherence(t, "Hamlet."), Some(false));
        assert_eq!(json_adherence(t, "{}"), Some(false));
    }
    // Extra keys still adhere (the grade is stricter).
    let with_extra = json[0].reference().replacen('{', "{\"x\": 1, ", 1);
    assert_eq!(json_adherence(json[0], &with_extra), Some(true));
    let plain = SUITE.test.iter().find(|t| t.meta.kind == "default").unwrap();
    assert_eq!(json_adherence(plain, plain.reference()), None);
}

// ---------------------------------------------------------------- files

#[test]
fn suite_files_round_trip_and_read_as_conversations() {
    let suite = generate_suite(&SuiteConfig::small(3, 20), &CORPUS);
    let dir = scratch("round_trip");
    write_suite(&suite, &dir).unwrap();
    assert_eq!(load_suite(&dir).unwrap(), suite);
    for split in Split::ALL {
        let (convs, skipped) = load_jsonl(&dir.join(format!("{}.jsonl", split.name())), false).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(convs, suite.split(split).iter().map(|t| t.conversation.clone()).collect::<Vec<_>>());
    }
    let line = std::fs::read_to_string(dir.join("test.jsonl")).unwrap().lines().next().unwrap().to_string();
    assert!(line.starts_with(r#"{"messages":[{"role":"#) && line.contains(r#""meta":{"id":"test-"#), "{line}");
}

// ---------------------------------------------------------------- length budget

/// A 4,096-token BPE trained on the plays, as the speedrun trains one on the corpus.
fn corpus_tokenizer() -> Tokenizer {
    let texts: Vec<String> = CORPUS
        .plays
        .iter()
        .flat_map(|p| p.speeches.iter().map(|s| format!("{}.\n{}\n", s.speaker.to_uppercase(), s.lines.join("\n"))))
        .chain(chatforge_data::tools::format_texts(400))
        .collect();
    Tokenizer::train(texts.iter().map(String::as_str), 4096).unwrap()
}

#[test]
fn conversations_fit_the_context_budget() {
    let tok = corpus_tokenizer();
    let mut lengths: BTreeMap<Family, Vec<usize>> = BTreeMap::new();
    for t in all_tasks() {
        let (ids, mask) = encode_for_training(&tok, &t.conversation);
        assert!(mask.iter().any(|&m| m));
        lengths.entry(t.meta.family).or_default().push(ids.len());
    }
    let mut all: Vec<usize> = lengths.values().flatten().copied().collect();
    all.sort();
    let pct = |v: &[usize], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    eprintln!("tokens per conversation (4096-token BPE on the plays):");
    for (family, v) in &mut lengths {
        v.sort();
        let mean = v.iter().sum::<usize>() as f64 / v.len() as f64;
        eprintln!("  {family:12} n={:5} mean={mean:5.1} p50={:3} p95={:3} max={:3}", v.len(), pct(v, 0.5), pct(v, 0.95), v[v.len() - 1]);
    }
    let mean = all.iter().sum::<usize>() as f64 / all.len() as f64;
    eprintln!(
        "  {:12} n={:5} mean={mean:5.1} p50={:3} p95={:3} max={:3}",
        "all",
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.95),
        all[all.len() - 1]
    );
    // The model's context is 256 tokens; tool calls make arithmetic and spelling turns long.
    assert!(all[all.len() - 1] < 256, "longest conversation: {} tokens", all[all.len() - 1]);
    assert!(pct(&all, 0.95) < 200, "p95: {} tokens", pct(&all, 0.95));
}

#[test]
fn sizes_suit_a_few_minutes_of_sft() {
    let train = SUITE.train.len();
    // About InstructGPT's 13k: roughly two passes in the speedrun's 1,000 SFT steps.
    assert!((10_000..=16_000).contains(&train), "{train} training conversations");
    for split in [Split::Val, Split::Test] {
        for (family, n) in SUITE.family_counts(split) {
            assert!(n >= 20, "{split:?} {family}: {n}");
        }
    }
    // Show one conversation per family, for people reading the test output.
    for family in Family::ALL {
        let t = SUITE.test.iter().find(|t| t.meta.family == family).unwrap();
        eprintln!("--- {} ({})", t.meta.id, t.meta.kind);
        for m in &t.conversation.messages {
            eprintln!("{:>9}: {}", m.role.as_str(), m.content);
        }
    }
}

#[test]
fn the_bar_prompts_have_counterparts_in_training() {
    // The chat test of the CLI asks `Who speaks "To be, or not to be"?`; the suite trains that kind of
    // question with partial quotations, and counting questions in the casual "how many r in
    // strawberry?" form.
    assert!(SUITE.train.iter().any(|t| t.meta.kind == "who_speaks" && t.conversation.messages[0].content.starts_with("Who speaks \"")));
    assert!(SUITE.train.iter().any(|t| t.meta.kind == "letter_count" && t.conversation.messages[0].content.starts_with("how many ")));
}
