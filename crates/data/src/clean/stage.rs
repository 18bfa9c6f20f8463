//! The stage itself, [`run`]: reading and cleaning in parallel (path order kept), the stage 1–4
//! verdicts, exact duplicates, near duplicates, the boilerplate counts, the train / validation
//! split, and the output files, in that order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::cleaning::{bar, clean_one, load_blocklist, Item};
use super::near_dup::near_duplicates;
use super::read::{list_files, read_file};
use super::report::render_markdown;
use super::write::{hex, write_atomic, write_jsonl};
use super::{CleanConfig, Count, DataReport, Doc, ExactDuplicate, Reason, RemovedDoc};
use crate::{Error, Result};

/// Cleans the documents under `input` (a folder, or one file) and writes the corpus and the
/// report to `out` (created if missing). See the documentation of [`crate::clean`] for what it does.
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
