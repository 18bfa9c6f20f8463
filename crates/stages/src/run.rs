//! [`Run`]: a run folder and what its stages share, loaded once: the tokenizer, the task suite,
//! the preference store, the checkpoints, the typed report. Stages take a `&Run`; none of them
//! joins a path of the run folder by hand (the names are [`RunDir`]'s).

use std::sync::OnceLock;

use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_data::tasks::{generate_suite, load_suite, write_suite, Corpus, Suite, SuiteConfig};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::Store;
use chatforge_rundir::report::{self, Key, Report};
use chatforge_rundir::RunDir;
use chatforge_train::rm::RewardModel;
use serde::Serialize;

use crate::{Error, Result};

/// The seed of a run's task suite. The suite is generated once per run (by SFT, or by the
/// first stage that needs it) and read back after that, so every stage sees the same one.
pub const SUITE_SEED: u64 = 1;

/// Conversations per family of the small suite (`--quick` speedruns, tests).
const SMALL_SUITE: usize = 150;

/// A run folder and what its stages share.
pub struct Run {
    pub dir: RunDir,
    /// No progress bars or per-stage summaries (sub-runs, tests).
    pub quiet: bool,
    tokenizer: OnceLock<Tokenizer>,
    suite: OnceLock<Suite>,
}

impl Run {
    /// The run folder at `root` (created when a stage first writes to it).
    pub fn open(root: impl Into<std::path::PathBuf>) -> Run {
        Run { dir: RunDir::new(root), quiet: false, tokenizer: OnceLock::new(), suite: OnceLock::new() }
    }

    /// The same folder, quietly.
    pub fn quiet(mut self, quiet: bool) -> Run {
        self.quiet = quiet;
        self
    }

    /// Creates the folder.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(self.dir.root()).map_err(|e| Error::io(self.dir.root(), e))
    }

    /// `R/tokenizer.json`.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t);
        }
        let path = self.dir.tokenizer();
        if !path.exists() {
            return Err(self.missing(
                "tokenizer.json",
                format!("pretrain first: `chatforge pretrain --run {}` (or `chatforge speedrun`)", self.dir.root().display()),
            ));
        }
        let tok = Tokenizer::load(&path)?;
        Ok(self.tokenizer.get_or_init(|| tok))
    }

    /// The task suite: read from `R/sft_data/`, or generated there from the bundled corpus
    /// (full size, [`SUITE_SEED`]) by the first stage that needs it.
    pub fn suite(&self) -> Result<&Suite> {
        self.suite_sized(false)
    }

    /// The task suite, generated small (150 conversations per family) when it does not exist yet.
    pub fn suite_sized(&self, small: bool) -> Result<&Suite> {
        if let Some(s) = self.suite.get() {
            return Ok(s);
        }
        let dir = self.dir.suite();
        let suite = if self.dir.suite_split("test").exists() {
            load_suite(&dir)?
        } else {
            let corpus = Corpus::bundled()?;
            let cfg =
                if small { SuiteConfig::small(SUITE_SEED, SMALL_SUITE) } else { SuiteConfig { seed: SUITE_SEED, ..Default::default() } };
            let s = generate_suite(&cfg, &corpus);
            write_suite(&s, &dir)?;
            if !self.quiet {
                println!(
                    "task suite: {} train / {} val / {} test conversations in {}",
                    s.train.len(),
                    s.val.len(),
                    s.test.len(),
                    dir.display()
                );
            }
            s
        };
        Ok(self.suite.get_or_init(|| suite))
    }

    /// The preference store, `R/feedback.sqlite` (created empty when missing).
    pub fn store(&self) -> Result<Store> {
        Ok(Store::open(&self.dir.feedback())?)
    }

    /// The preference store, or an error saying how to fill it when it does not exist yet.
    pub fn existing_store(&self) -> Result<Store> {
        if !self.dir.feedback().exists() {
            return Err(self.missing("feedback.sqlite", self.label_hint()));
        }
        self.store()
    }

    /// A stage's checkpoint.
    pub fn model(&self, stage: &str) -> Result<Llama<Cpu>> {
        let dir = self.dir.stage(stage);
        if !self.dir.has_model(stage) {
            return Err(self.missing(&format!("{stage}/model.safetensors"), format!("the run has no {stage} model")));
        }
        load_model(Cpu, &dir).map_err(|e| Error::Input(format!("loading the {stage} model from {}: {e}", dir.display())))
    }

    /// Refuses a training stage whose model would not fit: `copies` f32 copies of the `stage`
    /// checkpoint's parameters (weights, gradients and Adam's two moments are 4; a frozen
    /// reference or reward model adds one each) against the machine's free memory.
    pub fn check_memory(&self, stage: &str, copies: usize, what: &str) -> Result<()> {
        let path = self.dir.stage(stage).join(chatforge_rundir::layout::CONFIG);
        let Ok(cfg) = chatforge_core::LlamaConfig::from_json_file(&path) else { return Ok(()) };
        let need = (cfg.num_params() * 4 * copies) as u64;
        match crate::import::available_memory() {
            Some(free) if need > free => Err(Error::Input(format!(
                "{what} needs about {:.1} GB ({copies} f32 copies of {:.0}M parameters, activations not counted), but only {:.1} GB is free",
                need as f64 / 1e9,
                cfg.num_params() as f64 / 1e6,
                free as f64 / 1e9
            ))),
            _ => Ok(()),
        }
    }

    /// `R/rm`, the reward model.
    pub fn reward_model(&self) -> Result<RewardModel> {
        if !self.dir.has_model("rm") {
            return Err(self.missing(
                "rm/model.safetensors",
                format!("train the reward model first: `chatforge rm --run {}`", self.dir.root().display()),
            ));
        }
        Ok(RewardModel::load(&self.dir.stage("rm"))?)
    }

    /// `R/rm` when the run has one.
    pub fn reward_model_if_any(&self) -> Result<Option<RewardModel>> {
        if self.dir.has_model("rm") {
            Ok(Some(self.reward_model()?))
        } else {
            Ok(None)
        }
    }

    pub fn report(&self) -> Report {
        Report::load(&self.dir)
    }

    /// Merges `figures` into `report.json` under `key`.
    pub fn record(&self, key: Key, figures: &impl Serialize) -> Result<()> {
        Ok(report::record(&self.dir, key, figures)?)
    }

    /// The name answers are stored under in the preference store: `<run>/<stage>`.
    pub fn model_name(&self, stage: &str) -> String {
        format!("{}/{stage}", self.dir.name())
    }

    /// What to run to fill the preference store.
    pub fn label_hint(&self) -> String {
        format!("run `chatforge label --run {} --simulated` or vote on the rater page", self.dir.root().display())
    }

    pub(crate) fn missing(&self, file: &str, hint: impl Into<String>) -> Error {
        Error::Missing { what: format!("{} has no {file}", self.dir.root().display()), hint: hint.into() }
    }
}
