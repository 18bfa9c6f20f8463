//! `chatforge pretrain`: train (or resume) a base model on a text file or a cleaned corpus.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chatforge_core::config::ShapeOverrides;
use chatforge_data::clean;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_train::optim::Schedule;
use chatforge_train::pretrain::{
    lr_for_depth, prepare_corpus, pretrain, Budget, PretrainConfig, PretrainOptions, PretrainOutcome, TokenShards, TokenizerSpec, BASE_LR,
};
use clap::Args;

/// Where a run's text comes from and how it is tokenised (pretrain, scale).
#[derive(Args, Clone)]
pub struct CorpusArgs {
    /// A plain text file, or a cleaned corpus folder from `chatforge data` (default: the bundled
    /// corpus, cleaned into RUN/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `bpe` (trained on the train split), `bytes`, or a tokenizer.json path.
    #[arg(long, default_value = "bpe")]
    pub tokenizer: String,
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
}

impl CorpusArgs {
    pub fn tokenizer_spec(&self) -> TokenizerSpec {
        match self.tokenizer.as_str() {
            "bpe" => TokenizerSpec::Bpe { vocab_size: self.vocab_size },
            "bytes" => TokenizerSpec::Bytes,
            path => TokenizerSpec::File(PathBuf::from(path)),
        }
    }

    /// The tokenizer and token shards of `run` (made once: the data stage on the bundled corpus
    /// when no --data is given, the tokenizer, the shards).
    pub fn prepare(&self, run: &Path, quiet: bool) -> anyhow::Result<(Tokenizer, TokenShards)> {
        let data = match &self.data {
            Some(d) => d.clone(),
            None => bundled_clean_corpus(run, quiet)?,
        };
        Ok(prepare_corpus(run, &data, &self.tokenizer_spec(), !quiet)?)
    }
}

#[derive(Args, Clone)]
pub struct PretrainArgs {
    /// Run folder (checkpoints, tokenizer, shards, metrics, report). Resumes if it holds a checkpoint.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// The size dial: layers = D, hidden = 64·D, heads of 64, MLP ≈ 8/3·hidden.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Tie the LM head to the token embedding.
    #[arg(long)]
    pub tied: bool,
    #[arg(long, default_value_t = 256)]
    pub context: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Optimizer steps (or give --tokens or --time-budget).
    #[arg(long, conflicts_with_all = ["tokens", "time_budget"])]
    pub steps: Option<usize>,
    /// Training tokens.
    #[arg(long, conflicts_with = "time_budget")]
    pub tokens: Option<usize>,
    /// Wall-clock budget in seconds (`300`, `5m`): the step count is fixed from a measured step.
    #[arg(long)]
    pub time_budget: Option<String>,
    /// Peak learning rate (default: 3e-3 up to depth 2, then ∝ 1/width: 1.5e-3 at depth 4).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// cosine | linear | constant
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 32768)]
    pub eval_tokens: usize,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = 64)]
    pub sample_tokens: usize,
    /// Resume from this checkpoint folder (e.g. RUN/base.prev) instead of RUN/base.
    #[arg(long)]
    pub resume_from: Option<PathBuf>,
}

pub fn parse_duration(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1.0),
        Some('m') => (&s[..s.len() - 1], 60.0),
        Some('h') => (&s[..s.len() - 1], 3600.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().with_context(|| format!("--time-budget {s:?}: expected seconds, or a number with s/m/h"))?;
    if v <= 0.0 {
        bail!("--time-budget must be positive");
    }
    Ok(v * mult)
}

impl PretrainArgs {
    pub fn config(&self) -> anyhow::Result<(PretrainConfig, Budget)> {
        let schedule = match self.schedule.as_str() {
            "cosine" => Schedule::Cosine,
            "linear" => Schedule::Linear,
            "constant" => Schedule::Constant,
            other => bail!("--schedule {other:?}: expected cosine, linear or constant"),
        };
        if self.depth == 0 || self.context < 2 || self.batch == 0 || self.grad_accum == 0 {
            bail!("--depth, --batch and --grad-accum must be at least 1 and --context at least 2");
        }
        let mut cfg = PretrainConfig {
            depth: self.depth,
            shape: ShapeOverrides {
                layers: self.layers,
                hidden: self.hidden,
                heads: self.heads,
                kv_heads: self.kv_heads,
                intermediate: None,
                tied: self.tied,
            },
            context: self.context,
            batch: self.batch,
            grad_accum: self.grad_accum,
            eval_every: self.eval_every,
            eval_tokens: self.eval_tokens,
            sample_tokens: self.sample_tokens,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
            ..Default::default()
        };
        cfg.optim.lr = self.lr.unwrap_or_else(|| lr_for_depth(BASE_LR, self.depth));
        cfg.optim.warmup_steps = self.warmup;
        cfg.optim.weight_decay = self.weight_decay;
        cfg.optim.schedule = schedule;
        let budget = match (self.steps, self.tokens, &self.time_budget) {
            (Some(s), _, _) => Budget::Steps(s),
            (_, Some(t), _) => Budget::Tokens(t),
            (_, _, Some(d)) => Budget::Seconds(parse_duration(d)?),
            _ => Budget::Steps(cfg.steps),
        };
        Ok((cfg, budget))
    }
}

/// The cleaned bundled corpus at `run/data`, made by the data stage if it is not there yet.
pub fn bundled_clean_corpus(run: &Path, quiet: bool) -> anyhow::Result<PathBuf> {
    let out = run.join("data");
    if out.join("train.jsonl").exists() {
        return Ok(out);
    }
    let input = clean::bundled_corpus_dir().context("the bundled corpus (data/corpus) was not found; pass --data FILE|DIR")?;
    let r = clean::run(&input, &out, &clean::CleanConfig::default())?;
    if !quiet {
        println!(
            "data: {} docs in, {} out ({} near-duplicate pairs found); report in {}",
            r.docs_in,
            r.docs_out,
            r.near_duplicates.len(),
            out.join("data_report.md").display()
        );
    }
    Ok(out)
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let (cfg, budget) = a.config()?;
    std::fs::create_dir_all(&a.run).with_context(|| format!("creating {}", a.run.display()))?;
    let (tok, corpus) = a.corpus.prepare(&a.run, false)?;
    let opts = PretrainOptions { resume_from: a.resume_from.clone(), quiet: false };
    let out = pretrain(&a.run, cfg, budget, &tok, &corpus, &opts)?;
    print_outcome(&a.run, &out);
    Ok(())
}

pub fn print_outcome(run: &Path, o: &PretrainOutcome) {
    println!(
        "base: {} steps, {} tokens, {:.2}M params: val loss {:.4} nats/token, {:.4} bits/byte (unigram baseline {:.4}); {:.0} tokens/s end to end, MFU {:.0}%, {:.1}s",
        o.steps,
        o.tokens,
        o.params as f64 / 1e6,
        o.val_loss,
        o.val_bpb,
        o.unigram_val_bpb,
        o.train_tokens_per_s,
        100.0 * o.mfu,
        o.wall_s
    );
    for (i, s) in o.samples.iter().enumerate() {
        println!("--- sample {} ---\n{}", i + 1, s.trim_end());
    }
    println!("report: {}", run.join("report.md").display());
}
