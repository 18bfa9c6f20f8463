//! `chatforge data`: clean, deduplicate and filter a folder of documents, and report what was removed.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chatforge_data::clean::{self, CleanConfig, DupRule, KeepPolicy, Reason};

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Folder (or file) of documents: .txt, .jsonl ({"text": ...} per line), either plain, .gz or
    /// .zst. Default: the bundled corpus (data/corpus).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where to write train.jsonl, val.jsonl, near_dups.jsonl, data_report.{md,json}.
    #[arg(long, default_value = "data/clean")]
    pub out: PathBuf,
    /// Settings as JSON (the `config` object of a data_report.json); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Shingle Jaccard index at or above which two documents are near-duplicates [default: 0.3].
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Remove a document with at least this fraction of its shingles inside a larger one [default: 0.8].
    #[arg(long, conflicts_with = "no_containment")]
    pub containment: Option<f64>,
    /// No containment rule.
    #[arg(long)]
    pub no_containment: bool,
    /// Words per shingle [default: 4].
    #[arg(long)]
    pub shingle_size: Option<usize>,
    /// Shingle the words as written (lowercased) instead of their spelling skeletons.
    #[arg(long)]
    pub no_spelling_normalization: bool,
    /// MinHash permutations [default: 256].
    #[arg(long)]
    pub num_perm: Option<usize>,
    /// LSH bands [default: 128].
    #[arg(long)]
    pub bands: Option<usize>,
    /// LSH rows per band [default: 2].
    #[arg(long)]
    pub rows: Option<usize>,
    /// Which document of a near-duplicate cluster to keep [default: modern-spelling].
    #[arg(long, value_parser = ["modern-spelling", "longest", "first"])]
    pub keep: Option<String>,
    /// Remove documents with fewer words [default: 50].
    #[arg(long)]
    pub min_words: Option<usize>,
    /// Remove documents whose non-space characters are more than this fraction symbols [default: 0.1].
    #[arg(long)]
    pub max_symbol_ratio: Option<f64>,
    /// Remove documents with more than this fraction of characters in repeated lines [default: 0.2].
    #[arg(long)]
    pub max_repeated_lines: Option<f64>,
    /// File of blocked terms or phrases, one per line (# comments); matching documents are removed.
    #[arg(long)]
    pub blocklist: Option<PathBuf>,
    /// Keep Gutenberg headers, licence paragraphs and scan markers.
    #[arg(long)]
    pub no_boilerplate: bool,
    /// Fraction of documents for validation [default: 0.05]; at least one document either way.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Seed of MinHash, the split and the random-pair sample [default: 1234].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pairs compared exactly for the background distribution (all pairs when there are fewer) [default: 5000].
    #[arg(long)]
    pub sample_pairs: Option<usize>,
    /// Stop at the first unreadable file instead of counting it as removed.
    #[arg(long)]
    pub strict: bool,
}

impl DataArgs {
    pub fn config(&self) -> anyhow::Result<CleanConfig> {
        let mut c: CleanConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}: not a data config", p.display()))?
            }
            None => CleanConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $field:ident),*) => { $(if let Some(v) = self.$flag.clone() { c.$field = v; })* };
        }
        set!(threshold => near_dup_threshold, shingle_size => shingle_size, num_perm => num_perm,
             bands => bands, rows => rows, min_words => min_words, max_symbol_ratio => max_symbol_ratio,
             max_repeated_lines => max_repeated_line_fraction, val_fraction => val_fraction, seed => seed,
             sample_pairs => similarity_sample_pairs);
        if let Some(t) = self.containment {
            c.containment_threshold = Some(t);
        }
        if self.no_containment {
            c.containment_threshold = None;
        }
        if self.no_spelling_normalization {
            c.spelling_normalization = false;
        }
        if let Some(k) = &self.keep {
            c.keep_policy = match k.as_str() {
                "longest" => KeepPolicy::Longest,
                "first" => KeepPolicy::First,
                _ => KeepPolicy::ModernSpelling,
            };
        }
        if self.blocklist.is_some() {
            c.blocklist = self.blocklist.clone();
        }
        if self.no_boilerplate {
            c.strip_boilerplate = false;
        }
        if self.strict {
            c.fail_on_unreadable = true;
        }
        Ok(c)
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let input = match &args.input {
        Some(p) => p.clone(),
        None => match clean::bundled_corpus_dir() {
            Some(p) => p,
            None => {
                bail!("no --input given and the bundled corpus (data/corpus) was not found; run from the repository or pass --input DIR")
            }
        },
    };
    let r = clean::run(&input, &args.out, &cfg).with_context(|| format!("cleaning {} into {}", input.display(), args.out.display()))?;

    // The summary, written at once; a closed pipe (`| head`) is not an error.
    let mut o = String::new();
    let row = |o: &mut String, name: &str, docs: &str, bytes: &str| o.push_str(&format!("  {name:<28} {docs:>8} {bytes:>14}\n"));
    let count = |o: &mut String, name: &str, docs: u64, bytes: u64| row(o, name, &docs.to_string(), &thousands(bytes));
    o += &format!("chatforge data: {} -> {} ({:.1} s)\n", input.display(), args.out.display(), r.elapsed_s);
    row(&mut o, "", "docs", "bytes");
    count(&mut o, "in", r.docs_in, r.bytes_in);
    for (reason, c) in &r.removed {
        if c.docs > 0 {
            count(&mut o, &format!("removed: {}", reason.as_str()), c.docs, c.bytes);
        }
    }
    for (kind, c) in &r.boilerplate {
        let docs = format!("({})", c.docs);
        row(&mut o, &format!("cut: {kind}"), &docs, &thousands(c.bytes));
    }
    let sign = if r.normalization_bytes < 0 { "-" } else { "" };
    let norm = format!("{sign}{}", thousands(r.normalization_bytes.unsigned_abs()));
    row(&mut o, "cut: normalisation", "", &norm);
    count(&mut o, "out", r.docs_out, r.bytes_out);
    count(&mut o, "  train", r.train.docs, r.train.bytes);
    count(&mut o, "  val", r.val.docs, r.val.bytes);

    let sim = &r.similarity;
    let by_jaccard = r.near_duplicates.iter().filter(|p| p.rule == DupRule::Jaccard).count();
    o += &format!(
        "near-duplicate pairs: {} by Jaccard >= {}, {} by containment; exact duplicates: {}\n",
        by_jaccard,
        cfg.near_dup_threshold,
        r.near_duplicates.len() - by_jaccard,
        r.exact_duplicates.len()
    );
    if let Some(m) = &sim.min_merged {
        o += &format!("  least similar pair merged:    {:.3}  {} ~ {}\n", m.jaccard, m.a, m.b);
    }
    if let Some(m) = sim.closest_not_merged.first() {
        o += &format!("  most similar pair not merged: {:.3}  {} ~ {}\n", m.jaccard, m.a, m.b);
    }
    o += &format!("report: {}\n", args.out.join("data_report.md").display());
    let unreadable: Vec<_> = r.removed_docs.iter().filter(|d| d.reason == Reason::Unreadable).collect();
    for d in unreadable.iter().take(5) {
        eprintln!("warning: unreadable: {}: {}", d.source, d.detail);
    }
    if unreadable.len() > 5 {
        eprintln!("warning: … and {} more unreadable (see the report)", unreadable.len() - 5);
    }
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(o.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    if r.docs_in == 0 {
        bail!("{}: no documents found (expected .txt, .txt.gz, .zst or .jsonl files)", input.display());
    }
    if r.docs_out == 0 {
        bail!("every document was removed; {} says why", args.out.join("data_report.md").display());
    }
    Ok(())
}
