//! The data stage: read a folder of documents, clean it, deduplicate it, filter it, split it, and
//! report everything that was removed and why.
//!
//! # Input
//! Every file under the input folder (or the one input file), in path order: `*.txt` is one
//! document; `*.jsonl` holds one document per line, `{"text": "..."}` (other fields ignored); either
//! may be compressed, `*.txt.gz` / `*.jsonl.gz` (gzip) or `*.txt.zst` / `*.jsonl.zst` (zstd).
//! Other files, and licence files (`COPYING*`, `LICENSE*`, `LICENCE*`, `NOTICE*`, `ATTRIBUTION*`),
//! are skipped and listed in the report. A file that cannot be read (corrupt compression, invalid
//! UTF-8) or a JSONL line that is not an object with a string `text` is **counted as removed with
//! reason `unreadable`**, named in the report with the error, and the run goes on; set
//! [`CleanConfig::fail_on_unreadable`] to make it an error that names the file instead.
//!
//! # Stages, in order (a document is removed by the first rule it fails)
//! 1. **Normalisation**: byte-order mark dropped, CRLF/CR → LF, control characters except tab
//!    dropped, Unicode NFC, trailing whitespace trimmed, runs of blank lines cut to two.
//! 2. **Boilerplate**: Project Gutenberg headers and footers, licence/copyright paragraphs at the
//!    start of a document, scan/page markers (`### START: page.tif.txt ###`, `#### Source: URL`,
//!    `p.772:0`, `[Pg 12]`) are cut out. A document left empty is removed (`empty`).
//! 3. **Blocklist** (`blocklist`): a document containing any term of the user's list (one term or
//!    phrase per line, `#` comments; case-insensitive, whole words).
//! 4. **Quality rules**, in the spirit of Gopher (Rae et al., 2021) and C4: fewer than `min_words`
//!    words (`too_short`); more than `max_symbol_ratio` of the non-space characters are symbols,
//!    i.e. neither letters, digits nor ordinary prose punctuation (`symbol_ratio`); more than
//!    `max_repeated_line_fraction` of the characters sit in lines that repeat an earlier line
//!    (`repeated_lines`). The last is weighted by characters, as Gopher's `dup_line_char_frac`,
//!    because by line count a play fails it: speaker-name lines ("Ham.") repeat all the time.
//! 5. **Exact duplicates** (`exact_duplicate`): same SHA-256 of the cleaned text; the first in
//!    path order is kept.
//! 6. **Near duplicates** (`near_duplicate`): MinHash + LSH over word shingles (see
//!    [`crate::minhash`]) proposes candidate pairs; to them are added all pairs when there are at
//!    most `similarity_sample_pairs` of them, else that many random pairs (the background
//!    distribution of the report). Each is compared exactly. A pair whose shingle Jaccard reaches
//!    `near_dup_threshold` is a near-duplicate; such pairs are joined into clusters and one document
//!    per cluster is kept by [`KeepPolicy`] (default: the modern-spelling edition, then the
//!    longest). Then a document with at least `containment_threshold` of its shingles inside a
//!    larger one (an anthology holding a smaller collection) is removed and the larger kept.
//!    LSH is tuned for the Jaccard rule; a small document inside a much larger one has a low
//!    Jaccard index and is found by LSH only by chance, so on a large corpus (random pairs) the
//!    containment rule is best-effort.
//!
//! Kept documents are split into train and validation **by document**, by a seeded hash of the
//! source path, so the split is deterministic and stable when other documents come or go; if
//! there are at least two documents each split gets at least one.
//!
//! # Output (in `out`, each file written atomically)
//! `train.jsonl`, `val.jsonl` (`{"id", "source", "text"}` per document, `id` = the first 16 hex
//! digits of the SHA-256 of the text), `near_dups.jsonl` (one line per near-duplicate pair),
//! `data_report.json` ([`DataReport`]) and `data_report.md` (the same for people, with the
//! similarity distribution as text histograms).
//!
//! # Layout
//! This file holds the settings ([`CleanConfig`]) and every type the report is made of, then
//! [`bundled_corpus_dir`] and [`load_split`]. The stage's steps live in submodules, in the order a
//! document meets them: `read` (files to raw documents), `cleaning` (stages 1–4), `near_dup`
//! (stage 6), `write` (atomic output files), `stage` ([`run`], which drives them and does the
//! exact duplicates and the split) and `report` ([`render_markdown`]).

mod cleaning;
mod near_dup;
mod read;
mod report;
mod stage;
mod write;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use cleaning::{archaic_rate, repeated_line_fraction, symbol_ratio};
pub use report::render_markdown;
pub use stage::run;

/// Which document of a near-duplicate cluster is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepPolicy {
    /// Prefer documents in modern spelling (an archaic-spelling rate at most
    /// [`CleanConfig::archaic_cutoff`], see [`archaic_rate`]); among those the longest (bytes),
    /// then the first in path order.
    ModernSpelling,
    /// The longest document (bytes), then the first in path order.
    Longest,
    /// The first in path order.
    First,
}

/// Settings of the data stage. Every field has a default (`CleanConfig::default()`); they are
/// recorded in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanConfig {
    /// Words per shingle for near-duplicate detection.
    pub shingle_size: usize,
    /// Map words to their spelling skeleton before shingling ([`minhash::normalize_word`](crate::minhash::normalize_word)).
    pub spelling_normalization: bool,
    /// MinHash permutations; `bands * rows` of them are used by LSH.
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    /// Shingle Jaccard index at or above which two documents are near-duplicates.
    pub near_dup_threshold: f64,
    pub keep_policy: KeepPolicy,
    /// A document whose shingles lie at least this much (fraction of its own) inside a larger
    /// document is removed as contained in it (`None`: no containment rule).
    pub containment_threshold: Option<f64>,
    /// Archaic-spelling rate above which [`KeepPolicy::ModernSpelling`] passes a document over.
    pub archaic_cutoff: f64,
    /// Documents with fewer words are removed (`too_short`).
    pub min_words: usize,
    /// Maximum fraction of non-space characters that are symbols (`symbol_ratio`).
    pub max_symbol_ratio: f64,
    /// Maximum fraction of characters in lines that repeat an earlier line (`repeated_lines`).
    pub max_repeated_line_fraction: f64,
    /// A file of blocked terms, one per line (`blocklist`).
    pub blocklist: Option<PathBuf>,
    /// Cut Gutenberg headers/footers, leading licence paragraphs and scan markers.
    pub strip_boilerplate: bool,
    /// Expected fraction of documents in the validation split.
    pub val_fraction: f64,
    /// Seeds MinHash, the train/val split and the random-pair sample.
    pub seed: u64,
    /// Random pairs whose similarity forms the background distribution (all pairs when there are
    /// no more than this).
    pub similarity_sample_pairs: usize,
    /// Stop with an error at the first unreadable file instead of counting it as removed.
    pub fail_on_unreadable: bool,
    /// Show progress bars (on a terminal).
    #[serde(skip, default = "yes")]
    pub progress: bool,
}

fn yes() -> bool {
    true
}

impl Default for CleanConfig {
    fn default() -> Self {
        CleanConfig {
            shingle_size: 4,
            spelling_normalization: true,
            num_perm: 256,
            bands: 128,
            rows: 2,
            near_dup_threshold: 0.3,
            keep_policy: KeepPolicy::ModernSpelling,
            containment_threshold: Some(0.8),
            archaic_cutoff: 0.01,
            min_words: 50,
            max_symbol_ratio: 0.1,
            max_repeated_line_fraction: 0.2,
            blocklist: None,
            strip_boilerplate: true,
            val_fraction: 0.05,
            seed: 1234,
            similarity_sample_pairs: 5000,
            fail_on_unreadable: false,
            progress: true,
        }
    }
}

impl CleanConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.shingle_size == 0 {
            return bad("shingle_size must be at least 1".into());
        }
        if self.bands == 0 || self.rows == 0 || self.bands * self.rows > self.num_perm {
            return bad(format!(
                "LSH needs 1 <= bands * rows <= num_perm (bands {}, rows {}, num_perm {})",
                self.bands, self.rows, self.num_perm
            ));
        }
        if !(self.near_dup_threshold > 0.0 && self.near_dup_threshold <= 1.0) {
            return bad(format!("near_dup_threshold must be in (0, 1], got {}", self.near_dup_threshold));
        }
        if let Some(c) = self.containment_threshold {
            if !(c > 0.0 && c <= 1.0) {
                return bad(format!("containment_threshold must be in (0, 1], got {c}"));
            }
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!("val_fraction must be in [0, 1), got {}", self.val_fraction));
        }
        Ok(())
    }
}

/// Why a document was removed. Serialised in snake case; ordered as the pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Unreadable,
    Empty,
    Blocklist,
    TooShort,
    SymbolRatio,
    RepeatedLines,
    ExactDuplicate,
    NearDuplicate,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Unreadable,
        Reason::Empty,
        Reason::Blocklist,
        Reason::TooShort,
        Reason::SymbolRatio,
        Reason::RepeatedLines,
        Reason::ExactDuplicate,
        Reason::NearDuplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable",
            Reason::Empty => "empty",
            Reason::Blocklist => "blocklist",
            Reason::TooShort => "too_short",
            Reason::SymbolRatio => "symbol_ratio",
            Reason::RepeatedLines => "repeated_lines",
            Reason::ExactDuplicate => "exact_duplicate",
            Reason::NearDuplicate => "near_duplicate",
        }
    }
}

/// A document of the cleaned corpus, as `train.jsonl` / `val.jsonl` hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub id: String,
    /// Path relative to the input folder; `path:LINE` for a JSONL line.
    pub source: String,
    pub text: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub docs: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.docs += 1;
        self.bytes += bytes;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemovedDoc {
    pub source: String,
    pub reason: Reason,
    /// Bytes of the document when it was removed (after normalisation and boilerplate stripping;
    /// as read, for `unreadable`).
    pub bytes: u64,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactDuplicate {
    pub source: String,
    pub duplicate_of: String,
}

/// Which rule made a pair near-duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DupRule {
    /// Jaccard index at or above `near_dup_threshold`.
    Jaccard,
    /// The smaller document's shingles lie in the larger one at or above `containment_threshold`.
    Containment,
}

/// A near-duplicate pair, as `near_dups.jsonl` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NearDupPair {
    pub a: String,
    pub b: String,
    pub rule: DupRule,
    /// Exact Jaccard index of the two shingle sets.
    pub jaccard: f64,
    /// Exact fraction of the smaller shingle set inside the larger.
    pub containment: f64,
    /// The MinHash estimate of the Jaccard index.
    pub minhash_estimate: f64,
    /// Whether LSH proposed the pair (otherwise it was found among the all-pairs / random pairs).
    pub lsh_candidate: bool,
    /// The Jaccard cluster (rule `jaccard`).
    pub cluster: Option<usize>,
    /// The document kept: the cluster's choice (rule `jaccard`) or the larger (rule `containment`).
    pub kept: String,
}

/// Two documents and the exact similarity of their shingle sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairSim {
    pub a: String,
    pub b: String,
    pub jaccard: f64,
    pub containment: f64,
}

/// Counts of similarities in bins of width `bin_width` from 0 to 1 (1.0 falls in the last bin).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bin_width: f64,
    pub counts: Vec<u64>,
    pub n: u64,
    pub mean: f64,
    pub max: f64,
}

impl Histogram {
    const BINS: usize = 20;

    fn of(values: &[f64]) -> Self {
        let mut counts = vec![0; Self::BINS];
        for &v in values {
            counts[((v * Self::BINS as f64) as usize).min(Self::BINS - 1)] += 1;
        }
        let n = values.len() as u64;
        Histogram {
            bin_width: 1.0 / Self::BINS as f64,
            counts,
            n,
            mean: if n == 0 { 0.0 } else { values.iter().sum::<f64>() / n as f64 },
            max: values.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// The near-duplicate stage in numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimilarityReport {
    /// Documents that reached the stage.
    pub docs: usize,
    /// Probability that LSH proposes a pair whose Jaccard is exactly the threshold.
    pub lsh_recall_at_threshold: f64,
    /// Pairs proposed by LSH and the distribution of their exact Jaccard.
    pub candidate_pairs: usize,
    pub candidate_histogram: Histogram,
    /// Mean |MinHash estimate − exact Jaccard| over the candidate pairs.
    pub minhash_mean_abs_error: f64,
    /// Random pairs (all pairs when `all_pairs`) and the distribution of their exact Jaccard: the
    /// background against which near-duplicates stand out. They are judged like the candidates,
    /// so a small corpus (all pairs) does not depend on LSH at all.
    pub random_pairs: usize,
    pub all_pairs: bool,
    pub random_histogram: Histogram,
    /// The most similar pairs of documents that ended in different clusters (at most 10; from the
    /// candidates and the random pairs): the margin under the threshold.
    pub closest_not_merged: Vec<PairSim>,
    /// The least similar pair merged by the Jaccard rule: the margin over the threshold.
    pub min_merged: Option<PairSim>,
    /// Near-duplicate pairs that LSH did not propose (found among the all/random pairs).
    pub merged_not_lsh_candidates: usize,
}

/// What `run` did: written to `data_report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    pub input: String,
    pub config: CleanConfig,
    pub files_read: usize,
    /// Files not read: not a recognised document type, or a licence file.
    pub files_skipped: Vec<String>,
    pub docs_in: u64,
    /// Bytes of the documents as read (decompressed).
    pub bytes_in: u64,
    pub docs_out: u64,
    pub bytes_out: u64,
    pub train: Count,
    pub val: Count,
    /// Documents removed, by reason (every reason listed, in pipeline order).
    pub removed: BTreeMap<Reason, Count>,
    /// Boilerplate cut out of documents that stay, by kind: documents touched and bytes cut.
    pub boilerplate: BTreeMap<String, Count>,
    /// Bytes removed by normalisation (NFC, line endings, whitespace); negative if it added some.
    /// `bytes_in = bytes_out + Σ removed + Σ boilerplate + normalization_bytes`.
    pub normalization_bytes: i64,
    pub removed_docs: Vec<RemovedDoc>,
    pub exact_duplicates: Vec<ExactDuplicate>,
    pub near_duplicates: Vec<NearDupPair>,
    pub similarity: SimilarityReport,
    pub elapsed_s: f64,
}

/// The bundled corpus (`data/corpus` of the repository), looked for under the current directory,
/// above the running executable, and at the path this crate was built from.
pub fn bundled_corpus_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|a| a.join("data").join("corpus")));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join("data").join("corpus")));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/corpus"));
    candidates.into_iter().find(|p| p.join("ATTRIBUTION.md").is_file())
}

/// Reads a split (`"train"` or `"val"`) written by [`run`] to `out`.
pub fn load_split(out: &Path, split: &str) -> Result<Vec<Doc>> {
    let path = out.join(format!("{split}.jsonl"));
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut docs = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(&path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: Doc = serde_json::from_str(&line).map_err(|e| Error::Format(format!("{}:{}: {e}", path.display(), i + 1)))?;
        docs.push(doc);
    }
    Ok(docs)
}
