//! Stage 6, near duplicates: MinHash signatures and LSH candidates, the all-pairs or random-pair
//! background, exact comparison of every pair, then the Jaccard clusters (one document kept per
//! cluster by [`KeepPolicy`]) and the containment rule, and the numbers of the
//! [`SimilarityReport`].

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::cleaning::{bar, Item};
use super::{CleanConfig, DupRule, Histogram, KeepPolicy, NearDupPair, PairSim, SimilarityReport};
use crate::minhash::{self, MinHasher};

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

pub(super) struct NearDupOutcome {
    /// Index (into the stage's documents) of removed documents, with the detail.
    pub removed: Vec<(usize, String)>,
    pub pairs: Vec<NearDupPair>,
    pub report: SimilarityReport,
}

pub(super) fn near_duplicates(items: &[&Item], cfg: &CleanConfig) -> NearDupOutcome {
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
