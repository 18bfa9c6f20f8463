//! Exact resume of every trainable stage after pretraining (SFT, reward model, PPO, DPO, and SFT
//! and DPO with LoRA adapters): each stage is run once uninterrupted, and once crashed at chosen
//! points of a checkpoint write (`CHATFORGE_CRASH`), SIGKILLed at moments spread over the run and
//! restarted until it finishes.
//! Both runs must log the same figures at every step, bit for bit (each step exactly once), and
//! end with byte-identical weights and optimizer state.
//!
//! One tiny run (bytes tokenizer, depth 1, a few steps, the small suite) is prepared once and
//! shared: `pretrain` -> `sft` -> `label --simulated` -> `rm`, with a snapshot of the run folder
//! before each stage; every stage's interrupted run works in a copy of the snapshot taken just
//! before that stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatforge"));
    c.args(["--threads", "2"]);
    c
}

/// `chatforge <args[0]> --run <run> <args[1..]>`, with its output captured.
fn cmd(args: &[&str], run: &Path) -> Command {
    let mut c = bin();
    c.arg(args[0]).arg("--run").arg(run).args(&args[1..]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn ok(args: &[&str], run: &Path) {
    let out = cmd(args, run).output().unwrap();
    assert!(
        out.status.success(),
        "chatforge {args:?} in {} failed:\n{}{}",
        run.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stage under test: its command line (with frequent checkpoints), its step count, the
/// checkpoint-write crashes to inject, and how many new steps each SIGKILLed attempt may log.
struct Stage {
    name: &'static str,
    args: &'static [&'static str],
    steps: u64,
    crashes: &'static [&'static str],
    kill_after: &'static [u64],
}

const SFT: Stage = Stage {
    name: "sft",
    args: &["sft", "--steps", "20", "--batch", "2", "--small-suite", "--checkpoint-every", "2"],
    steps: 20,
    crashes: &["mid_write:4", "between_renames:8"],
    kill_after: &[3, 3],
};
/// SFT and DPO with LoRA adapters on the frozen model: the checkpoint resumes from the base it
/// names plus the adapters and their moments.
const SFT_LORA: Stage = Stage {
    name: "sft",
    args: &["sft", "--lora", "--lora-r", "4", "--steps", "20", "--batch", "2", "--small-suite", "--checkpoint-every", "2"],
    steps: 20,
    crashes: &["mid_write:4", "between_renames:8"],
    kill_after: &[3, 3],
};
const DPO_LORA: Stage = Stage {
    name: "dpo",
    args: &["dpo", "--lora", "--epochs", "3", "--checkpoint-every", "2"],
    steps: 0,
    crashes: &["mid_write:4", "between_renames:6"],
    kill_after: &[2, 2],
};
const RM: Stage = Stage {
    name: "rm",
    args: &["rm", "--epochs", "2", "--batch-prompts", "2", "--checkpoint-every", "2"],
    steps: 0, // set by the data (epochs x prompts / batch); read from the uninterrupted run
    crashes: &["mid_write:4", "between_renames:6"],
    kill_after: &[3, 3],
};
const PPO: Stage = Stage {
    name: "ppo",
    // A checkpoint every iteration, so that every restart reads a different adaptive β back.
    args: &["ppo", "--iterations", "12", "--rollouts", "4", "--checkpoint-every", "1"],
    steps: 12,
    crashes: &["mid_write:2", "between_renames:3"],
    kill_after: &[1, 2, 1, 2],
};
const DPO: Stage = Stage {
    name: "dpo",
    args: &["dpo", "--epochs", "3", "--checkpoint-every", "2"],
    steps: 0, // set by the data
    crashes: &["mid_write:4", "between_renames:6"],
    kill_after: &[2, 2],
};

/// The shared tiny run: `snap[stage]` is the run folder as it was just before `stage`;
/// `done` holds SFT and the reward model trained uninterrupted.
struct Prepared {
    root: PathBuf,
    snap: BTreeMap<&'static str, PathBuf>,
    done: PathBuf,
}

static PREPARED: OnceLock<Result<Prepared, String>> = OnceLock::new();
static FINISHED: AtomicUsize = AtomicUsize::new(0);

fn prepared() -> &'static Prepared {
    let p = PREPARED.get_or_init(|| {
        std::panic::catch_unwind(prepare).map_err(|e| {
            e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        })
    });
    match p {
        Ok(p) => p,
        Err(e) => panic!("preparing the shared run failed: {e}"),
    }
}

fn prepare() -> Prepared {
    let t = Instant::now();
    let root = std::env::temp_dir().join(format!("chatforge-resume-stages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let done = root.join("done");
    let pre = common::tiny_pretrain();
    ok(&pre.iter().map(String::as_str).collect::<Vec<_>>(), &done);
    let mut snap = BTreeMap::new();
    let mut take = |stages: &[&'static str]| {
        let to = root.join(format!("before-{}", stages[0]));
        copy_dir(&done, &to);
        for &s in stages {
            snap.insert(s, to.clone());
        }
    };
    take(&["sft"]);
    ok(SFT.args, &done);
    ok(&["label", "--simulated", "--pairs", "120", "--samples-per-prompt", "4"], &done);
    take(&["rm", "dpo"]);
    ok(RM.args, &done);
    take(&["ppo"]);
    eprintln!("resume_stages: shared run prepared in {:.1}s", t.elapsed().as_secs_f64());
    Prepared { root, snap, done }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ty.is_dir() {
            copy_dir(&e.path(), &dst);
        } else if ty.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The figures a metrics line of a stage carries, as written, less the wall-clock ones: the JSON
/// text itself, so that equal strings are equal f64s bit for bit (serde_json writes the
/// shortest text that round-trips, with the keys sorted).
fn figures(line: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    // The only wall-clock figure a step logs (throughput); everything else is a function of
    // the seed, the data and the thread count.
    v.as_object_mut().unwrap().remove("tokens_per_s");
    let mut text = line.to_string();
    if let Some(at) = text.find("\"tokens_per_s\":") {
        let rest = &text[at..];
        let end = rest.find([',', '}']).unwrap();
        let cut = if rest.as_bytes()[end] == b',' { end + 1 } else { end };
        text.replace_range(at..at + cut, "");
        if let Some(stripped) = text.strip_suffix(",}") {
            text = format!("{stripped}}}");
        }
    }
    // The stripped text must still parse to the same object (the cut was clean).
    let back: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(back, v, "{line}");
    text
}

/// Every line of `stage` in `run/metrics.jsonl` by step (the train line and any eval line), as
/// [`figures`]; panics unless every step 1..=n has exactly one train line (with a loss).
fn stage_metrics(run: &Path, stage: &str) -> BTreeMap<u64, Vec<String>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut train: BTreeMap<u64, usize> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad line {e}: {line}", run.display()));
        if v["stage"] != stage {
            continue;
        }
        let step = v["step"].as_u64().unwrap_or_else(|| panic!("{stage} line without a step: {line}"));
        if v.get("loss").is_some() || v.get("reward").is_some() {
            *train.entry(step).or_default() += 1;
        }
        out.entry(step).or_default().push(figures(line));
    }
    let n = train.len() as u64;
    assert!(n > 0, "{stage}: no steps logged in {}", run.display());
    for s in 1..=n {
        assert_eq!(train.get(&s), Some(&1), "{stage} step {s}: logged {:?} times in {}", train.get(&s), run.display());
    }
    out
}

/// The largest step of `stage` logged so far (0 when none; a partial last line is skipped).
fn logged_step(run: &Path, stage: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else { return 0 };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["stage"] == stage)
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The step of the stage's committed checkpoint (or of a complete one awaiting its last rename).
fn checkpoint_step(run: &Path, stage: &str) -> u64 {
    for dir in [stage.to_string(), format!("{stage}.tmp")] {
        let state = run.join(dir).join("state.json");
        if let Ok(text) = std::fs::read_to_string(&state) {
            return serde_json::from_str::<serde_json::Value>(&text).unwrap()["step"].as_u64().unwrap();
        }
    }
    0
}

fn check_stage(stage: &Stage) {
    let p = prepared();
    let t = Instant::now();
    let name = stage.name;
    let lora = stage.args.contains(&"--lora");
    let tag = if lora { format!("{name}-lora") } else { name.to_string() };
    // The uninterrupted run: SFT and the reward model ran while preparing; the others here.
    let a = if matches!(name, "sft" | "rm") && !lora {
        p.done.clone()
    } else {
        let a = p.root.join(format!("{tag}-a"));
        copy_dir(&p.snap[name], &a);
        ok(stage.args, &a);
        a
    };
    let want = stage_metrics(&a, name);
    let steps = want.keys().filter(|s| want[s].iter().any(|l| l.contains("\"loss\"") || l.contains("\"reward\""))).count() as u64;
    if stage.steps > 0 {
        assert_eq!(steps, stage.steps, "{name}: steps of the uninterrupted run");
    }
    assert!(steps >= 10, "{name}: {steps} steps are too few to interrupt");
    let t_a = t.elapsed().as_secs_f64();

    let b = p.root.join(format!("{tag}-b"));
    copy_dir(&p.snap[name], &b);
    let log = p.root.join(format!("{tag}-b.log"));
    // Crashes inside checkpoint writes: after the model is written but before the optimizer
    // state and state.json, and between the two renames of the commit.
    for crash in stage.crashes {
        let out = cmd(stage.args, &b).env("CHATFORGE_CRASH", crash).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("CHATFORGE_CRASH"), "{name} {crash}: the run should have aborted:\n{err}");
        let (phase, at) = crash.split_once(':').unwrap();
        let tmp = b.join(format!("{name}.tmp"));
        match phase {
            "mid_write" => assert!(tmp.join("model.safetensors").exists() && !tmp.join("state.json").exists(), "{name} {crash}"),
            _ => assert!(tmp.join("state.json").exists() && !b.join(name).exists(), "{name} {crash}"),
        }
        assert!(logged_step(&b, name) >= at.parse().unwrap(), "{name} {crash}: steps logged before the crash");
    }
    // Then SIGKILLs mid-run, once the restarted run has logged a few more steps.
    let mut kills = Vec::new();
    for &after in stage.kill_after {
        // A new step of this attempt (not one an earlier attempt logged past its checkpoint).
        let (from, before) = (checkpoint_step(&b, name), logged_step(&b, name));
        let until = (from + after).max(before + 1);
        let mut child = bin()
            .arg(stage.args[0])
            .arg("--run")
            .arg(&b)
            .args(&stage.args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while logged_step(&b, name) < until && t0.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{name}: the run exited ({status}) before it could be killed:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push((from, logged_step(&b, name), checkpoint_step(&b, name)));
    }
    // Each kill landed mid-run: before the last step was committed.
    assert!(kills.iter().all(|&(_, _, ck)| ck < steps), "{name}: a kill came after the run's last checkpoint: {kills:?}");
    // The last attempt resumes and finishes.
    ok(stage.args, &b);
    let got = stage_metrics(&b, name);
    for (step, lines) in &want {
        assert_eq!(got.get(step), Some(lines), "{name} step {step}: resumed vs uninterrupted");
    }
    assert_eq!(got.len(), want.len(), "{name}: steps logged");
    let files: &[&str] = if lora {
        &["model.safetensors", "trainer.safetensors", "adapter/adapter_model.safetensors"]
    } else {
        &["model.safetensors", "trainer.safetensors"]
    };
    for file in files {
        let (x, y) = (std::fs::read(a.join(name).join(file)).unwrap(), std::fs::read(b.join(name).join(file)).unwrap());
        assert!(x == y, "{name}/{file} differs between the resumed and the uninterrupted run");
    }
    eprintln!(
        "resume_stages: {tag}: {steps} steps; crashes {:?}, kills (resumed from, logged, committed) {kills:?}; uninterrupted {t_a:.1}s, total {:.1}s",
        stage.crashes,
        t.elapsed().as_secs_f64()
    );
    for dir in [a, b] {
        if dir != p.done {
            std::fs::remove_dir_all(dir).ok();
        }
    }
    // The last stage test to pass removes the shared run.
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == 6 {
        std::fs::remove_dir_all(&p.root).ok();
    }
}

#[test]
fn sft_resumes_exactly() {
    check_stage(&SFT);
}

#[test]
fn sft_with_lora_resumes_exactly() {
    check_stage(&SFT_LORA);
}

#[test]
fn dpo_with_lora_resumes_exactly() {
    check_stage(&DPO_LORA);
}

#[test]
fn rm_resumes_exactly() {
    check_stage(&RM);
}

#[test]
fn ppo_resumes_exactly() {
    check_stage(&PPO);
}

#[test]
fn dpo_resumes_exactly() {
    check_stage(&DPO);
}
