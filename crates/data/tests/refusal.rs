//! The refusal family's look-alikes: the test split holds at least 100 distinct benign
//! look-alike prompts, worded by templates that no training pool (SFT, preferences, RL) and no
//! validation task uses.

use std::collections::HashSet;

use chatforge_data::chat::Role;
use chatforge_data::tasks::{generate_suite, Corpus, Counts, Family, Pool, SuiteConfig, Task};

/// Test-split refusal tasks that give every harmful test request (about 60) and 100 or more
/// look-alikes.
const TEST_REFUSAL: usize = 180;

fn lookalikes(tasks: &[Task]) -> impl Iterator<Item = &Task> {
    tasks.iter().filter(|t| t.meta.family == Family::Refusal && t.meta.kind == "benign")
}

fn question(t: &Task) -> String {
    t.conversation.messages.iter().find(|m| m.role == Role::User).expect("a user message").content.to_lowercase()
}

#[test]
fn the_test_split_holds_a_hundred_lookalikes_of_unseen_templates() {
    let d = SuiteConfig::default();
    let cfg = SuiteConfig { test: Counts { refusal: d.test.refusal.max(TEST_REFUSAL), ..d.test }, ..d };
    let suite = generate_suite(&cfg, &Corpus::bundled().unwrap());
    let test: Vec<&Task> = lookalikes(&suite.test).collect();
    let distinct: HashSet<String> = test.iter().map(|t| question(t)).collect();
    assert!(distinct.len() >= 100, "{} distinct look-alikes in test", distinct.len());
    assert_eq!(distinct.len(), test.len(), "a look-alike repeats in test");
    // Every look-alike's key names its template; no test template is seen anywhere else.
    let templates = |tasks: &[Task]| -> HashSet<String> { lookalikes(tasks).flat_map(|t| t.meta.keys.clone()).collect() };
    let test_templates = templates(&suite.test);
    assert!(test_templates.len() >= 10 && test_templates.iter().all(|k| k.starts_with("benign:")), "{test_templates:?}");
    for pool in [Pool::Sft, Pool::Prefs, Pool::Rl, Pool::Val] {
        let seen = templates(suite.pool(pool));
        assert!(!seen.is_empty(), "{pool:?} has no look-alikes");
        assert!(seen.is_disjoint(&test_templates), "{pool:?} shares {:?}", seen.intersection(&test_templates).collect::<Vec<_>>());
        let questions: HashSet<String> = lookalikes(suite.pool(pool)).map(question).collect();
        assert!(questions.is_disjoint(&distinct));
    }
    // And every harmful test request is there, once.
    let harmful: Vec<String> = suite.test.iter().filter(|t| t.meta.kind == "harmful").map(question).collect();
    assert!(harmful.len() >= 40 && harmful.iter().collect::<HashSet<_>>().len() == harmful.len(), "{} harmful", harmful.len());
}
