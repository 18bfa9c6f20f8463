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

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::minhash::{self, MinHasher};
use crate::{Error, Result};

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
    /// Map words to their spelling skeleton before shingling ([`minhash::normalize_word`]).
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

// ---------------------------------------------------------------------------------------------
// Reading

#[derive(Clone, Copy, PartialEq)]
enum Codec {
    Plain,
    Gz,
    Zst,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Jsonl,
}

/// How to read a file, from its name; `None` for files that are not documents.
fn classify(name: &str) -> Option<(Kind, Codec)> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.split('.').next().unwrap_or("");
    if ["copying", "license", "licence", "notice", "attribution"].contains(&stem) {
        return None;
    }
    let (inner, codec) = if let Some(s) = lower.strip_suffix(".gz") {
        (s, Codec::Gz)
    } else if let Some(s) = lower.strip_suffix(".zst") {
        (s, Codec::Zst)
    } else {
        (lower.as_str(), Codec::Plain)
    };
    if inner.ends_with(".txt") {
        Some((Kind::Text, codec))
    } else if inner.ends_with(".jsonl") {
        Some((Kind::Jsonl, codec))
    } else {
        None
    }
}

/// A document as read, before cleaning: its text or why it could not be read.
struct RawDoc {
    source: String,
    bytes: u64,
    text: std::result::Result<String, String>,
}

fn decompress(path: &Path, codec: Codec) -> std::result::Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut reader: Box<dyn Read> = match codec {
        Codec::Plain => Box::new(file),
        Codec::Gz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Codec::Zst => Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| format!("zstd: {e}"))?),
    };
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).map_err(|e| match codec {
        Codec::Plain => e.to_string(),
        Codec::Gz => format!("gzip: {e}"),
        Codec::Zst => format!("zstd: {e}"),
    })?;
    Ok(buf)
}

fn utf8(bytes: Vec<u8>) -> std::result::Result<String, String> {
    String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

fn read_file(path: &Path, rel: &str, kind: Kind, codec: Codec) -> Vec<RawDoc> {
    let on_disk = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bytes = match decompress(path, codec) {
        Ok(b) => b,
        Err(msg) => return vec![RawDoc { source: rel.to_string(), bytes: on_disk, text: Err(msg) }],
    };
    match kind {
        Kind::Text => {
            let n = bytes.len() as u64;
            vec![RawDoc { source: rel.to_string(), bytes: n, text: utf8(bytes) }]
        }
        Kind::Jsonl => bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(i, line)| {
                let text = std::str::from_utf8(line)
                    .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))
                    .and_then(|l| serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("bad JSON: {e}")))
                    .and_then(|v| match v.get("text") {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        _ => Err("no string field \"text\"".to_string()),
                    });
                let bytes = match &text {
                    Ok(t) => t.len() as u64,
                    Err(_) => line.len() as u64,
                };
                RawDoc { source: format!("{rel}:{}", i + 1), bytes, text }
            })
            .collect(),
    }
}

/// A file to read: its path, its path relative to the input (the documents' `source`), and how.
type InputFile = (PathBuf, String, Kind, Codec);

/// The files under `input` in path order: those to read, and the relative paths of those skipped.
/// Files under `exclude` (the output folder, should it lie inside the input) are passed over.
fn list_files(input: &Path, exclude: &Path) -> Result<(Vec<InputFile>, Vec<String>)> {
    let exclude = exclude.canonicalize().ok();
    let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut consider = |path: PathBuf, rel: String| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match classify(&name) {
            Some((kind, codec)) => files.push((path, rel, kind, codec)),
            None => skipped.push(rel),
        }
    };
    if meta.is_file() {
        let rel = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        consider(input.to_path_buf(), rel);
    } else {
        let walk = walkdir::WalkDir::new(input).sort_by_file_name().into_iter().filter_entry(|e| {
            let own = exclude.as_ref().zip(e.path().canonicalize().ok());
            !own.is_some_and(|(out, p)| p.starts_with(out))
        });
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(input).to_path_buf();
                Error::io(&path, e.into())
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(input).unwrap_or(entry.path());
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            consider(entry.path().to_path_buf(), rel);
        }
    }
    Ok((files, skipped))
}

// ---------------------------------------------------------------------------------------------
// Cleaning

/// Normalisation: BOM, line endings, control characters, NFC, trailing whitespace.
fn normalize(raw: &str) -> String {
    let s = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let nfc: String = s.nfc().filter(|&c| c == '\n' || c == '\t' || !c.is_control()).collect();
    let mut out = String::with_capacity(nfc.len());
    for line in nfc.split('\n') {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Cuts runs of blank lines to two, and blank lines at the start and end.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blanks = 0;
    for line in text.split('\n') {
        if line.trim().is_empty() {
            blanks += 1;
            continue;
        }
        if !out.is_empty() {
            for _ in 0..(blanks.min(2) + 1) {
                out.push('\n');
            }
        }
        blanks = 0;
        out.push_str(line);
    }
    out
}

static SCAN_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:#{3} (?:START|END): \S+ #{3}|#{4} Source: \S+|p\.\d+:\d+|\[(?:Pg|Page) ?[0-9ivxlcIVXLC]+\])\s*$")
        .expect("valid regex")
});

const LICENSE_MARKERS: [&str; 10] = [
    "spdx-license-identifier",
    "all rights reserved",
    "copyright (c)",
    "copyright ©",
    "(c) copyright",
    "permission is hereby granted",
    "licensed under the",
    "this program is free software",
    "this work is licensed under",
    "this file is distributed under",
];

/// Cuts boilerplate lines; returns the text and the bytes cut by kind.
fn strip_boilerplate(text: &str) -> (String, Vec<(&'static str, u64)>) {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut keep = vec![true; lines.len()];
    let mut cut: Vec<(&'static str, u64)> = Vec::new();
    let mut drop = |keep: &mut [bool], range: std::ops::Range<usize>, kind: &'static str| {
        let mut bytes = 0;
        for i in range {
            if keep[i] {
                keep[i] = false;
                bytes += lines[i].len() as u64 + 1;
            }
        }
        if bytes > 0 {
            match cut.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, b)) => *b += bytes,
                None => cut.push((kind, bytes)),
            }
        }
    };

    // Project Gutenberg header and footer.
    let upper = |l: &str| l.trim().to_ascii_uppercase();
    let start = lines.iter().take(600).position(|l| {
        let u = upper(l);
        (u.starts_with("***") && u.contains("START OF") && u.contains("GUTENBERG")) || u.starts_with("*END*THE SMALL PRINT")
    });
    if let Some(s) = start {
        drop(&mut keep, 0..s + 1, "gutenberg_header");
    }
    let from = start.map_or(0, |s| s + 1);
    let end = lines.iter().enumerate().skip(from).find_map(|(i, l)| {
        let u = upper(l);
        let hit = (u.starts_with("***") && u.contains("END OF") && u.contains("GUTENBERG"))
            || u.starts_with("END OF THE PROJECT GUTENBERG")
            || u.starts_with("END OF THIS PROJECT GUTENBERG")
            || u.starts_with("END OF PROJECT GUTENBERG");
        hit.then_some(i)
    });
    if let Some(e) = end {
        drop(&mut keep, e..lines.len(), "gutenberg_footer");
    }

    // Licence paragraphs among the first five paragraphs (within the first 80 lines).
    let mut i = from;
    let mut paragraphs = 0;
    while i < lines.len().min(from + 80) && paragraphs < 5 {
        if lines[i].trim().is_empty() || !keep[i] {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < lines.len() && !lines[j].trim().is_empty() {
            j += 1;
        }
        paragraphs += 1;
        let para = lines[i..j].join("\n").to_lowercase();
        if j - i <= 40 && LICENSE_MARKERS.iter().any(|m| para.contains(m)) {
            drop(&mut keep, i..j, "license_header");
        }
        i = j;
    }

    // Scan and page markers, anywhere.
    for (i, l) in lines.iter().enumerate() {
        if keep[i] && SCAN_MARKER.is_match(l) {
            drop(&mut keep, i..i + 1, "scan_markers");
        }
    }

    let mut out = String::with_capacity(text.len());
    for (l, k) in lines.iter().zip(&keep) {
        if *k {
            out.push_str(l);
            out.push('\n');
        }
    }
    (out, cut)
}

/// Characters that ordinary prose uses besides letters, digits and spaces.
fn is_prose_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | '\''
            | '"'
            | '('
            | ')'
            | '['
            | ']'
            | '-'
            | '&'
            | '_'
            | '*'
            | '/'
            | '\u{2013}'
            | '\u{2014}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
    )
}

/// Fraction of non-space characters that are symbols (not letters, digits or prose punctuation).
pub fn symbol_ratio(text: &str) -> f64 {
    let (mut total, mut sym) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        total += 1;
        if !c.is_alphanumeric() && !is_prose_punct(c) {
            sym += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        sym as f64 / total as f64
    }
}

/// Fraction of the characters of non-blank lines that sit in lines repeating an earlier line
/// (lines compared after trimming).
pub fn repeated_line_fraction(text: &str) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut dup) = (0usize, 0usize);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        total += line.len();
        if !seen.insert(line) {
            dup += line.len();
        }
    }
    if total == 0 {
        0.0
    } else {
        dup as f64 / total as f64
    }
}

/// Fraction of words spelt the early-modern way: a word-initial `v` before a consonant (`vnto`,
/// `vs`, `vpon`) or a `u` written for `v` between vowels (`haue`, `loue`, `euer`). About 3–4 % of
/// the words of a First Folio text, under 0.2 % of modern English.
pub fn archaic_rate(text: &str) -> f64 {
    let words = minhash::words(text, false);
    if words.is_empty() {
        return 0.0;
    }
    let vowel = |c: u8| matches!(c, b'a' | b'e' | b'i' | b'o' | b'u' | b'y');
    let archaic = words
        .iter()
        .filter(|w| {
            let b = w.as_bytes();
            (b.len() >= 2 && b[0] == b'v' && b[1].is_ascii_alphabetic() && !vowel(b[1]))
                || b.windows(3).any(|t| matches!(t[0], b'a' | b'e' | b'i' | b'o') && t[1] == b'u' && vowel(t[2]) && t[2] != b'y')
        })
        .count();
    archaic as f64 / words.len() as f64
}

/// The user's blocklist as one case-insensitive regex of whole terms.
fn load_blocklist(path: &Path) -> Result<Option<Regex>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let terms: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|t| {
            let words: Vec<String> = t.split_whitespace().map(regex::escape).collect();
            let body = words.join(r"\s+");
            let word_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            let pre = if word_char(t.chars().next()) { r"\b" } else { "" };
            let post = if word_char(t.chars().last()) { r"\b" } else { "" };
            format!("{pre}{body}{post}")
        })
        .collect();
    if terms.is_empty() {
        return Ok(None);
    }
    let re = Regex::new(&format!("(?i)(?:{})", terms.join("|")))
        .map_err(|e| Error::Config(format!("{}: bad blocklist: {e}", path.display())))?;
    Ok(Some(re))
}

/// One document through stages 1–4.
struct Item {
    source: String,
    bytes_in: u64,
    text: String,
    cut: Vec<(&'static str, u64)>,
    verdict: Option<(Reason, String)>,
    hash: [u8; 32],
    archaic: f64,
}

fn clean_one(raw: RawDoc, cfg: &CleanConfig, blocklist: Option<&Regex>) -> Item {
    let mut item =
        Item { source: raw.source, bytes_in: raw.bytes, text: String::new(), cut: Vec::new(), verdict: None, hash: [0; 32], archaic: 0.0 };
    let text = match raw.text {
        Ok(t) => t,
        Err(msg) => {
            item.verdict = Some((Reason::Unreadable, msg));
            return item;
        }
    };
    let mut text = normalize(&text);
    if cfg.strip_boilerplate {
        let (t, cut) = strip_boilerplate(&text);
        text = t;
        item.cut = cut;
    }
    item.text = collapse_blank_lines(&text);
    let t = &item.text;
    item.verdict = if t.trim().is_empty() {
        Some((Reason::Empty, "no text left after normalisation and boilerplate stripping".into()))
    } else if let Some(m) = blocklist.and_then(|re| re.find(t)) {
        Some((Reason::Blocklist, format!("matched {:?}", m.as_str())))
    } else {
        let n = t.split_whitespace().count();
        let sym = symbol_ratio(t);
        let rep = repeated_line_fraction(t);
        if n < cfg.min_words {
            Some((Reason::TooShort, format!("{n} words < {}", cfg.min_words)))
        } else if sym > cfg.max_symbol_ratio {
            Some((Reason::SymbolRatio, format!("symbol ratio {sym:.3} > {}", cfg.max_symbol_ratio)))
        } else if rep > cfg.max_repeated_line_fraction {
            Some((Reason::RepeatedLines, format!("repeated-line fraction {rep:.3} > {}", cfg.max_repeated_line_fraction)))
        } else {
            None
        }
    };
    if item.verdict.is_none() {
        item.hash = Sha256::digest(item.text.as_bytes()).into();
        item.archaic = archaic_rate(&item.text);
    }
    item
}

fn bar(show: bool, len: u64, template: &str, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    pb.set_message(msg);
    pb
}

// ---------------------------------------------------------------------------------------------
// Near duplicates

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
}

struct NearDupOutcome {
    /// Index (into the stage's documents) of removed documents, with the detail.
    removed: Vec<(usize, String)>,
    pairs: Vec<NearDupPair>,
    report: SimilarityReport,
}

fn near_duplicates(items: &[&Item], cfg: &CleanConfig) -> NearDupOutcome {
    let n = items.len();
    let pb = bar(cfg.progress, n as u64, "{msg:12} [{bar:30}] {pos}/{len} docs {elapsed}/{eta}", "minhash");
    let hasher = MinHasher::new(cfg.num_perm, cfg.seed);
    let sets: Vec<(Vec<u64>, Option<Vec<u64>>)> = items
        .par_iter()
        .map(|it| {
            let sh = minhash::shingles(&it.text, cfg.shingle_size, cfg.spelling_normalization);
            let sig = (!sh.is_empty()).then(|| hasher.signature(&sh));
            pb.inc(1);
            (sh, sig)
        })
        .collect();
    pb.finish_and_clear();
    let (shingles, sigs): (Vec<Vec<u64>>, Vec<Option<Vec<u64>>>) = sets.into_iter().unzip();

    // Pairs to evaluate exactly: the LSH candidates, plus all pairs (small corpora) or a seeded
    // sample of random pairs, which give the background distribution.
    let candidates = minhash::candidate_pairs(&sigs, cfg.bands, cfg.rows);
    let total_pairs = n * n.saturating_sub(1) / 2;
    let all_pairs = total_pairs <= cfg.similarity_sample_pairs;
    let random: Vec<(usize, usize)> = if all_pairs {
        (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect()
    } else {
        (0..cfg.similarity_sample_pairs as u64)
            .map(|t| {
                let h = xxh3_64_with_seed(&t.to_le_bytes(), cfg.seed);
                let a = (h % n as u64) as usize;
                let mut b = ((h >> 32) % (n as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                (a.min(b), a.max(b))
            })
            .collect()
    };
    let mut pairs: Vec<(usize, usize)> = candidates.iter().chain(&random).copied().collect();
    pairs.sort_unstable();
    pairs.dedup();
    let is_candidate = |p: &(usize, usize)| candidates.binary_search(p).is_ok();
    let pb = bar(cfg.progress, pairs.len() as u64, "{msg:12} [{bar:30}] {pos}/{len} pairs {elapsed}/{eta}", "comparing");
    let evals: HashMap<(usize, usize), Eval> = pairs
        .par_iter()
        .map(|&(a, b)| {
            let (sa, sb) = (&shingles[a], &shingles[b]);
            let inter = minhash::intersection(sa, sb);
            let union = sa.len() + sb.len() - inter;
            let jaccard = if union == 0 { 1.0 } else { inter as f64 / union as f64 };
            let smaller = sa.len().min(sb.len());
            let containment = if smaller == 0 { 0.0 } else { inter as f64 / smaller as f64 };
            let estimate = minhash::estimate(sigs[a].as_deref().unwrap_or(&[]), sigs[b].as_deref().unwrap_or(&[]));
            pb.inc(1);
            ((a, b), Eval { jaccard, containment, estimate })
        })
        .collect();
    pb.finish_and_clear();
    let mut sorted: Vec<(&(usize, usize), &Eval)> = evals.iter().collect();
    sorted.sort_by(|x, y| y.1.jaccard.total_cmp(&x.1.jaccard).then(x.0.cmp(y.0)));

    // Rule 1: clusters of pairs with Jaccard >= threshold; one document kept per cluster.
    let mut uf = UnionFind((0..n).collect());
    for (&(a, b), e) in &sorted {
        if e.jaccard >= cfg.near_dup_threshold {
            uf.union(a, b);
        }
    }
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        members.entry(uf.find(i)).or_default().push(i);
    }
    let rank = |i: usize| {
        let it = items[i];
        let len = std::cmp::Reverse(it.text.len());
        match cfg.keep_policy {
            KeepPolicy::ModernSpelling => (it.archaic > cfg.archaic_cutoff, len, i),
            KeepPolicy::Longest => (false, len, i),
            KeepPolicy::First => (false, std::cmp::Reverse(0), i),
        }
    };
    let mut cluster_of = vec![usize::MAX; n];
    let mut kept_of = vec![usize::MAX; n];
    let mut removed: Vec<(usize, String)> = Vec::new();
    let mut gone = vec![false; n];
    for (cluster, docs) in members.values().filter(|d| d.len() > 1).enumerate() {
        let keep = *docs.iter().min_by_key(|&&i| rank(i)).expect("non-empty cluster");
        for &i in docs {
            cluster_of[i] = cluster;
            kept_of[i] = keep;
        }
        for &i in docs.iter().filter(|&&i| i != keep) {
            // the most similar merged partner, for the record
            let (partner, e) = sorted
                .iter()
                .filter(|(p, e)| (p.0 == i || p.1 == i) && e.jaccard >= cfg.near_dup_threshold)
                .map(|(p, e)| (if p.0 == i { p.1 } else { p.0 }, e))
                .next()
                .expect("a merged document has a merged pair");
            gone[i] = true;
            removed
                .push((i, format!("near-duplicate of {} (Jaccard {:.3}); kept {}", items[partner].source, e.jaccard, items[keep].source)));
        }
    }
    let mut out_pairs: Vec<NearDupPair> = Vec::new();
    let mut merged = std::collections::HashSet::new();
    for (&(a, b), e) in &sorted {
        if e.jaccard >= cfg.near_dup_threshold {
            merged.insert((a, b));
            out_pairs.push(NearDupPair {
                a: items[a].source.clone(),
                b: items[b].source.clone(),
                rule: DupRule::Jaccard,
                jaccard: e.jaccard,
                containment: e.containment,
                minhash_estimate: e.estimate,
                lsh_candidate: is_candidate(&(a, b)),
                cluster: Some(cluster_of[a]),
                kept: items[kept_of[a]].source.clone(),
            });
        }
    }

    // Rule 2: a document whose shingles lie mostly inside a larger one is removed.
    if let Some(ct) = cfg.containment_threshold {
        let mut by_containment: Vec<&(&(usize, usize), &Eval)> = sorted
            .iter()
            .filter(|(p, e)| e.containment >= ct && (cluster_of[p.0] == usize::MAX || cluster_of[p.0] != cluster_of[p.1]))
            .collect();
        by_containment.sort_by(|x, y| y.1.containment.total_cmp(&x.1.containment).then(x.0.cmp(y.0)));
        for &&(&(a, b), e) in &by_containment {
            if gone[a] || gone[b] {
                continue;
            }
            let (small, big) = if shingles[a].len() < shingles[b].len() { (a, b) } else { (b, a) };
            gone[small] = true;
            merged.insert((a, b));
            removed.push((
                small,
                format!("contained in {} ({:.0} % of its shingles; Jaccard {:.3})", items[big].source, 100.0 * e.containment, e.jaccard),
            ));
            out_pairs.push(NearDupPair {
                a: items[a].source.clone(),
                b: items[b].source.clone(),
                rule: DupRule::Containment,
                jaccard: e.jaccard,
                containment: e.containment,
                minhash_estimate: e.estimate,
                lsh_candidate: is_candidate(&(a, b)),
                cluster: None,
                kept: items[big].source.clone(),
            });
        }
    }
    removed.sort_by_key(|r| r.0);

    let pair_sim = |(a, b): (usize, usize), e: &Eval| PairSim {
        a: items[a].source.clone(),
        b: items[b].source.clone(),
        jaccard: e.jaccard,
        containment: e.containment,
    };
    let cand_j: Vec<f64> = candidates.iter().map(|p| evals[p].jaccard).collect();
    let mae = if candidates.is_empty() {
        0.0
    } else {
        candidates.iter().map(|p| (evals[p].estimate - evals[p].jaccard).abs()).sum::<f64>() / candidates.len() as f64
    };
    let report = SimilarityReport {
        docs: n,
        lsh_recall_at_threshold: minhash::lsh_probability(cfg.near_dup_threshold, cfg.bands, cfg.rows),
        candidate_pairs: candidates.len(),
        candidate_histogram: Histogram::of(&cand_j),
        minhash_mean_abs_error: mae,
        random_pairs: random.len(),
        all_pairs,
        random_histogram: Histogram::of(&random.iter().map(|p| evals[p].jaccard).collect::<Vec<_>>()),
        closest_not_merged: sorted
            .iter()
            .filter(|(p, _)| !merged.contains(*p) && (cluster_of[p.0] == usize::MAX || cluster_of[p.0] != cluster_of[p.1]))
            .take(10)
            .map(|(p, e)| pair_sim(**p, e))
            .collect(),
        min_merged: sorted.iter().rev().find(|(_, e)| e.jaccard >= cfg.near_dup_threshold).map(|(p, e)| pair_sim(**p, e)),
        merged_not_lsh_candidates: out_pairs.iter().filter(|p| !p.lsh_candidate).count(),
    };
    NearDupOutcome { removed, pairs: out_pairs, report }
}

/// The exact similarity of an evaluated pair, and its MinHash estimate.
struct Eval {
    jaccard: f64,
    containment: f64,
    estimate: f64,
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes a file atomically: a temporary file in the same folder, fsync, rename, fsync the folder.
fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |e| Error::io(path, e);
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // a temporary file is private (0600); the output is an ordinary file
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        write(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    write_atomic(path, |w| {
        for r in rows {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The stage

/// Cleans the documents under `input` (a folder, or one file) and writes the corpus and the
/// report to `out` (created if missing). See the module documentation for what it does.
pub fn run(input: &Path, out: &Path, cfg: &CleanConfig) -> Result<DataReport> {
    let started = Instant::now();
    cfg.validate()?;
    let blocklist = match &cfg.blocklist {
        Some(p) => load_blocklist(p)?,
        None => None,
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;

    // Read and clean, in parallel; results stay in path order.
    let (files, files_skipped) = list_files(input, out)?;
    let total: u64 = files.iter().map(|f| std::fs::metadata(&f.0).map(|m| m.len()).unwrap_or(0)).sum();
    let pb = bar(cfg.progress, total, "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}/{eta}", "reading");
    let per_file: Vec<Vec<Item>> = files
        .par_iter()
        .map(|(path, rel, kind, codec)| {
            let raws = read_file(path, rel, *kind, *codec);
            pb.inc(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
            raws.into_iter().map(|raw| clean_one(raw, cfg, blocklist.as_ref())).collect()
        })
        .collect();
    pb.finish_and_clear();
    let items: Vec<Item> = per_file.into_iter().flatten().collect();
    if cfg.fail_on_unreadable {
        if let Some(it) = items.iter().find(|it| matches!(it.verdict, Some((Reason::Unreadable, _)))) {
            let msg = it.verdict.as_ref().map(|v| v.1.clone()).unwrap_or_default();
            return Err(Error::Unreadable { path: input.join(&it.source), msg });
        }
    }

    let mut removed: BTreeMap<Reason, Count> = Reason::ALL.iter().map(|&r| (r, Count::default())).collect();
    let mut removed_docs = Vec::new();
    let mut remove = |it: &Item, reason: Reason, detail: String| {
        let bytes = if reason == Reason::Unreadable { it.bytes_in } else { it.text.len() as u64 };
        removed.get_mut(&reason).expect("every reason").add(bytes);
        removed_docs.push(RemovedDoc { source: it.source.clone(), reason, bytes, detail });
    };

    // Stages 1-4 verdicts, then exact duplicates.
    let mut exact_duplicates = Vec::new();
    let mut first_of: HashMap<[u8; 32], usize> = HashMap::new();
    let mut alive: Vec<usize> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if let Some((reason, detail)) = &it.verdict {
            remove(it, *reason, detail.clone());
            continue;
        }
        match first_of.get(&it.hash) {
            Some(&f) => {
                exact_duplicates.push(ExactDuplicate { source: it.source.clone(), duplicate_of: items[f].source.clone() });
                remove(it, Reason::ExactDuplicate, format!("same text as {}", items[f].source));
            }
            None => {
                first_of.insert(it.hash, i);
                alive.push(i);
            }
        }
    }

    // Near duplicates.
    let stage: Vec<&Item> = alive.iter().map(|&i| &items[i]).collect();
    let nd = near_duplicates(&stage, cfg);
    let mut gone = vec![false; stage.len()];
    for (k, detail) in nd.removed {
        gone[k] = true;
        remove(stage[k], Reason::NearDuplicate, detail);
    }
    let kept: Vec<&Item> = stage.iter().zip(&gone).filter(|(_, g)| !**g).map(|(it, _)| *it).collect();

    // Boilerplate counts (of documents that stay).
    let mut boilerplate: BTreeMap<String, Count> = BTreeMap::new();
    for it in &kept {
        for &(kind, bytes) in &it.cut {
            boilerplate.entry(kind.to_string()).or_default().add(bytes);
        }
    }

    // Train / validation split by document.
    let us: Vec<f64> = kept.iter().map(|it| xxh3_64_with_seed(it.source.as_bytes(), cfg.seed) as f64 / 2f64.powi(64)).collect();
    let mut in_val: Vec<bool> = us.iter().map(|&u| u < cfg.val_fraction).collect();
    if kept.len() >= 2 {
        let by_u = |a: &usize, b: &usize| us[*a].total_cmp(&us[*b]);
        if !in_val.iter().any(|&v| v) {
            in_val[(0..kept.len()).min_by(by_u).expect("documents")] = true;
        }
        if in_val.iter().all(|&v| v) {
            in_val[(0..kept.len()).max_by(by_u).expect("documents")] = false;
        }
    }
    let to_doc = |it: &Item| Doc { id: hex(&it.hash[..8]), source: it.source.clone(), text: it.text.clone() };
    let train: Vec<Doc> = kept.iter().zip(&in_val).filter(|(_, v)| !**v).map(|(it, _)| to_doc(it)).collect();
    let val: Vec<Doc> = kept.iter().zip(&in_val).filter(|(_, v)| **v).map(|(it, _)| to_doc(it)).collect();
    let count = |docs: &[Doc]| Count { docs: docs.len() as u64, bytes: docs.iter().map(|d| d.text.len() as u64).sum() };
    let (train_c, val_c) = (count(&train), count(&val));

    let bytes_in: u64 = items.iter().map(|it| it.bytes_in).sum();
    let bytes_out = train_c.bytes + val_c.bytes;
    let accounted: u64 = removed.values().map(|c| c.bytes).sum::<u64>() + boilerplate.values().map(|c| c.bytes).sum::<u64>() + bytes_out;
    let report = DataReport {
        input: input.display().to_string(),
        config: cfg.clone(),
        files_read: files.len(),
        files_skipped,
        docs_in: items.len() as u64,
        bytes_in,
        docs_out: kept.len() as u64,
        bytes_out,
        train: train_c,
        val: val_c,
        removed,
        boilerplate,
        normalization_bytes: bytes_in as i64 - accounted as i64,
        removed_docs,
        exact_duplicates,
        near_duplicates: nd.pairs,
        similarity: nd.report,
        elapsed_s: started.elapsed().as_secs_f64(),
    };

    write_jsonl(&out.join("train.jsonl"), &train)?;
    write_jsonl(&out.join("val.jsonl"), &val)?;
    write_jsonl(&out.join("near_dups.jsonl"), &report.near_duplicates)?;
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Format(e.to_string()))?;
    write_atomic(&out.join("data_report.json"), |w| w.write_all(&json))?;
    let md = render_markdown(&report);
    write_atomic(&out.join("data_report.md"), |w| w.write_all(md.as_bytes()))?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The human-readable report

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

/// Two histograms side by side as text, with log-scaled bars (counts differ by orders of magnitude).
fn text_histograms(left: (&str, &Histogram), right: (&str, &Histogram), threshold: f64) -> String {
    let width = 28usize;
    let peak = left.1.counts.iter().chain(&right.1.counts).copied().max().unwrap_or(0);
    let barlen = |c: u64| {
        if c == 0 || peak == 0 {
            0
        } else {
            (((c as f64 + 1.0).ln() / (peak as f64 + 1.0).ln()) * width as f64).ceil() as usize
        }
    };
    let (lt, rt) = (format!("{} (n={})", left.0, left.1.n), format!("{} (n={})", right.0, right.1.n));
    let mut s = format!("Jaccard      {:>7} {lt:<width$}  {:>7} {rt}\n", "n", "n");
    let w = left.1.bin_width.max(right.1.bin_width);
    for i in 0..left.1.counts.len().max(right.1.counts.len()) {
        let (lc, rc) = (left.1.counts.get(i).copied().unwrap_or(0), right.1.counts.get(i).copied().unwrap_or(0));
        let (lo, hi) = (i as f64 * w, (i + 1) as f64 * w);
        let mark = if ((threshold / w) + 1e-9).floor() as usize == i { "  <- threshold" } else { "" };
        let right_bar = format!("{}{mark}", "#".repeat(barlen(rc)));
        s += &format!("{lo:.2}-{hi:.2}  {lc:>7} {:<width$}  {rc:>7} {right_bar}\n", "#".repeat(barlen(lc)));
    }
    s
}

/// Renders the report as Markdown (`data_report.md`).
pub fn render_markdown(r: &DataReport) -> String {
    let c = &r.config;
    let sim = &r.similarity;
    let mut s = String::new();
    s += "# Data report\n\n";
    s += &format!(
        "Input `{}`: {} files read ({} skipped), {} documents, {}. Run time {:.1} s.\n\n",
        r.input,
        r.files_read,
        r.files_skipped.len(),
        r.docs_in,
        human_bytes(r.bytes_in),
        r.elapsed_s
    );
    s += "| | documents | bytes |\n|---|---:|---:|\n";
    s += &format!("| in | {} | {} |\n", r.docs_in, r.bytes_in);
    for (reason, n) in &r.removed {
        s += &format!("| removed: {} | {} | {} |\n", reason.as_str(), n.docs, n.bytes);
    }
    for (kind, n) in &r.boilerplate {
        s += &format!("| cut from kept documents: {kind} | ({} docs) | {} |\n", n.docs, n.bytes);
    }
    s += &format!("| changed by normalisation (NFC, line endings, whitespace) | | {} |\n", r.normalization_bytes);
    s += &format!("| **out** | **{}** | **{}** |\n", r.docs_out, r.bytes_out);
    s += &format!("| train | {} | {} |\n| val | {} | {} |\n\n", r.train.docs, r.train.bytes, r.val.docs, r.val.bytes);

    s += "## Near-duplicates\n\n";
    s += &format!(
        "Shingles of {} words{}; MinHash with {} permutations; LSH {} bands × {} rows (a pair at the \
         threshold becomes a candidate with probability {:.6}). A pair, proposed by LSH or among the \
         all/random pairs, whose exact shingle Jaccard is ≥ **{}** is a near-duplicate. Kept per \
         cluster: {}.{}\n\n",
        c.shingle_size,
        if c.spelling_normalization {
            " after spelling normalisation (lowercase, apostrophes joined, v→u, j→i, vowels after the \
             first letter dropped, doubled letters collapsed)"
        } else {
            " (lowercase)"
        },
        c.num_perm,
        c.bands,
        c.rows,
        sim.lsh_recall_at_threshold,
        c.near_dup_threshold,
        match c.keep_policy {
            KeepPolicy::ModernSpelling => format!(
                "the document in modern spelling (archaic-spelling rate ≤ {}), then the longest, then the first by path",
                c.archaic_cutoff
            ),
            KeepPolicy::Longest => "the longest, then the first by path".into(),
            KeepPolicy::First => "the first by path".into(),
        },
        match c.containment_threshold {
            Some(t) =>
                format!(" A document with ≥ {:.0} % of its shingles inside a larger document is removed, the larger kept.", 100.0 * t),
            None => String::new(),
        }
    );
    if r.near_duplicates.is_empty() {
        s += "No near-duplicate pairs.\n\n";
    } else {
        s += "| rule | Jaccard | MinHash est. | containment | a | b | kept |\n|---|---:|---:|---:|---|---|---|\n";
        for p in &r.near_duplicates {
            s += &format!(
                "| {} | {:.3} | {:.3} | {:.3} | `{}` | `{}` | `{}` |\n",
                match p.rule {
                    DupRule::Jaccard => "Jaccard",
                    DupRule::Containment => "containment",
                },
                p.jaccard,
                p.minhash_estimate,
                p.containment,
                p.a,
                p.b,
                p.kept
            );
        }
        s += "\n";
    }
    if let Some(m) = &sim.min_merged {
        s += &format!("Least similar pair merged by Jaccard: {:.3} (`{}` ~ `{}`).\n", m.jaccard, m.a, m.b);
    }
    if let Some(m) = sim.closest_not_merged.first() {
        s += &format!("Most similar pair not merged: {:.3} (`{}` ~ `{}`).\n", m.jaccard, m.a, m.b);
    }
    s += &format!(
        "Near-duplicate pairs that LSH did not propose (found by the exact all/random-pair pass): {}.\n",
        sim.merged_not_lsh_candidates
    );
    s += &format!(
        "\n### Similarity distribution\n\n{} documents; {} candidate pairs from LSH; {} {}. \
         MinHash estimates were off the exact Jaccard by {:.3} on average. Bars are log-scaled.\n\n```\n{}```\n\n",
        sim.docs,
        sim.candidate_pairs,
        sim.random_pairs,
        if sim.all_pairs { "pairs (all of them)" } else { "random pairs" },
        sim.minhash_mean_abs_error,
        text_histograms(
            (if sim.all_pairs { "all pairs" } else { "random pairs" }, &sim.random_histogram),
            ("LSH candidates", &sim.candidate_histogram),
            c.near_dup_threshold
        )
    );
    if !sim.closest_not_merged.is_empty() {
        s += "Closest pairs not merged:\n\n| Jaccard | containment | a | b |\n|---:|---:|---|---|\n";
        for p in &sim.closest_not_merged {
            s += &format!("| {:.3} | {:.3} | `{}` | `{}` |\n", p.jaccard, p.containment, p.a, p.b);
        }
        s += "\n";
    }

    if !r.exact_duplicates.is_empty() {
        s += "## Exact duplicates\n\n| removed | same text as (kept) |\n|---|---|\n";
        for d in &r.exact_duplicates {
            s += &format!("| `{}` | `{}` |\n", d.source, d.duplicate_of);
        }
        s += "\n";
    }
    let others: Vec<&RemovedDoc> =
        r.removed_docs.iter().filter(|d| !matches!(d.reason, Reason::ExactDuplicate | Reason::NearDuplicate)).collect();
    if !others.is_empty() {
        s += "## Other removals\n\n| document | reason | bytes | detail |\n|---|---|---:|---|\n";
        for d in others.iter().take(200) {
            s += &format!("| `{}` | {} | {} | {} |\n", d.source, d.reason.as_str(), d.bytes, d.detail.replace('|', "\\|"));
        }
        if others.len() > 200 {
            s += &format!("\n… and {} more (see data_report.json).\n", others.len() - 200);
        }
        s += "\n";
    }
    if !r.files_skipped.is_empty() {
        s += &format!("## Files skipped\n\n{}\n\n", r.files_skipped.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "));
    }
    s += &format!(
        "## Rules\n\nIn order; a document is removed by the first it fails. Unreadable files are \
         counted, not fatal. Normalisation: NFC, LF line endings, no control characters or trailing \
         whitespace. Boilerplate: Gutenberg headers/footers, leading licence paragraphs, scan/page \
         markers. Blocklist: {}. Quality: at least {} words; symbol ratio ≤ {}; fraction of \
         characters in repeated lines ≤ {}. Exact duplicates: SHA-256 of the cleaned text, the first \
         by path kept. Near-duplicates: as above. Split: by document, seeded hash of the source path \
         (seed {}), validation fraction {}.\n",
        c.blocklist.as_ref().map_or("none".to_string(), |p| format!("`{}`", p.display())),
        c.min_words,
        c.max_symbol_ratio,
        c.max_repeated_line_fraction,
        c.seed,
        c.val_fraction
    );
    s
}
