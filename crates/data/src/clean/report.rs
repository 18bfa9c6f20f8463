//! The human-readable report, `data_report.md`: the counts table, the near-duplicate pairs and the
//! similarity distribution (text histograms), exact duplicates, other removals, skipped files,
//! and the rules as configured, in that order.

use super::{DataReport, DupRule, Histogram, KeepPolicy, Reason, RemovedDoc};

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
