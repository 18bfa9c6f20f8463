//! The layout of a run folder: every file and folder a stage reads or writes, named once.
//!
//! ```text
//! R/tokenizer.json        the tokenizer            R/data/           the cleaned corpus
//! R/tokens/{train,val}.bin token shards            R/scale/          the scaling ladder's runs
//! R/<stage>/              a checkpoint (base, sft, rm, ppo, dpo): model.safetensors, config.json,
//!                         generation_config.json, trainer.safetensors, state.json; with LoRA
//!                         also adapter/ (PEFT's adapter_config.json, adapter_model.safetensors)
//! R/sft_data/             the task suite (train/val/test.jsonl) and the base model's scores
//! R/feedback.sqlite       the preference store     R/moderation.json the moderation classifier
//! R/report.{json,md,html} the report card          R/metrics.jsonl   one line per step or event
//! R/plots/                SVG plots                R/evals/<stage>/  per-sample eval results
//! R/pairs/n<N>/           data-efficiency sub-runs R/scaling.json    the scaling prediction
//! ```
//! Code outside this module does not spell these names; it asks a [`RunDir`] (or, for the
//! files of one checkpoint folder, the constants below).

use std::path::{Path, PathBuf};

/// The weights of a checkpoint folder (HF safetensors).
pub const MODEL: &str = "model.safetensors";
/// The model's HF `config.json`.
pub const CONFIG: &str = "config.json";
/// HF `generation_config.json` (EOS and stop tokens).
pub const GENERATION_CONFIG: &str = "generation_config.json";
/// The optimizer moments of a training checkpoint.
pub const TRAINER: &str = "trainer.safetensors";
/// Step, RNG, data cursor, config and the sha256 of each file of a training checkpoint.
pub const STATE: &str = "state.json";
/// A LoRA fine-tune's adapters, in PEFT's format, inside its checkpoint folder. A folder of its
/// own: `transformers` would apply adapters it finds beside a model's weights a second time.
pub const ADAPTER: &str = "adapter";

/// A run folder: the names of its files. Cheap to clone; it holds only the root path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The folder's own name (e.g. `speedrun`), for labels such as `speedrun/sft`.
    pub fn name(&self) -> String {
        let canonical = self.root.canonicalize().unwrap_or_else(|_| self.root.clone());
        canonical.file_name().or(self.root.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
    /// The cleaned corpus of the data stage (`train.jsonl`, `val.jsonl`, `data_report.*`).
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// The cleaned corpus's training documents.
    pub fn train_docs(&self) -> PathBuf {
        self.data().join("train.jsonl")
    }
    /// What the data stage removed and why, for people.
    pub fn data_report_md(&self) -> PathBuf {
        self.data().join("data_report.md")
    }
    /// The cleaned corpus's held-out documents.
    pub fn val_docs(&self) -> PathBuf {
        self.data().join("val.jsonl")
    }
    /// The data stage's report, as JSON.
    pub fn data_report(&self) -> PathBuf {
        self.data().join("data_report.json")
    }
    pub fn tokens(&self) -> PathBuf {
        self.root.join("tokens")
    }
    pub fn train_tokens(&self) -> PathBuf {
        self.tokens().join("train.bin")
    }
    pub fn val_tokens(&self) -> PathBuf {
        self.tokens().join("val.bin")
    }
    /// A stage's checkpoint folder: `base`, `sft`, `rm`, `ppo`, `dpo`, ...
    pub fn stage(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }
    /// A stage's weights, `R/<stage>/model.safetensors`.
    pub fn model(&self, stage: &str) -> PathBuf {
        self.stage(stage).join(MODEL)
    }
    /// Whether the stage has trained weights.
    pub fn has_model(&self, stage: &str) -> bool {
        self.model(stage).is_file()
    }
    /// The task suite and the files made from it.
    pub fn suite(&self) -> PathBuf {
        self.root.join("sft_data")
    }
    /// One split of the task suite: `train`, `val` or `test`.
    pub fn suite_split(&self, split: &str) -> PathBuf {
        self.suite().join(format!("{split}.jsonl"))
    }
    /// The base model's few-shot scores on the test split (SFT's "before").
    pub fn base_scores(&self) -> PathBuf {
        self.suite().join("scores_base.json")
    }
    /// SFT's greedy answers to the test split, graded.
    pub fn test_answers(&self) -> PathBuf {
        self.stage("sft").join("test_answers.jsonl")
    }
    pub fn feedback(&self) -> PathBuf {
        self.root.join("feedback.sqlite")
    }
    pub fn moderation(&self) -> PathBuf {
        self.root.join("moderation.json")
    }
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }
    pub fn report_md(&self) -> PathBuf {
        self.root.join("report.md")
    }
    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
    pub fn plot(&self, file: &str) -> PathBuf {
        self.plots().join(file)
    }
    /// Per-sample results of the evals of a stage.
    pub fn evals(&self, stage: &str) -> PathBuf {
        self.root.join("evals").join(stage)
    }
    /// Every eval's metrics and the stage's headline figures, from its last evals.
    pub fn eval_summary(&self, stage: &str) -> PathBuf {
        self.evals(stage).join("summary.json")
    }
    /// The scaling ladder's runs.
    pub fn scale(&self) -> PathBuf {
        self.root.join("scale")
    }
    /// One run of the scaling ladder (`d<depth>-t<tokens>`, or `target`): a run folder of its own.
    pub fn scale_run(&self, name: &str) -> RunDir {
        RunDir::new(self.scale().join(name))
    }
    pub fn scaling_json(&self) -> PathBuf {
        self.root.join("scaling.json")
    }
    /// The data-efficiency sub-run trained from `n` preference pairs.
    pub fn pairs(&self, n: usize) -> RunDir {
        RunDir::new(self.root.join("pairs").join(format!("n{n}")))
    }
    /// What a sub-run shares with its parent (linked, not copied): the tokenizer, the task suite,
    /// the SFT model and the preference store.
    pub fn shared_with_subruns(&self) -> [PathBuf; 4] {
        [self.tokenizer(), self.stage("sft"), self.suite(), self.feedback()]
    }
}

impl AsRef<Path> for RunDir {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}
