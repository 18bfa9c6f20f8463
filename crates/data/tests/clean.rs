//! The data stage on small synthetic corpora written to a temporary folder, and on the bundled
//! corpus.

use std::io::Write;
use std::path::Path;

use chatforge_data::clean::{self, CleanConfig, DataReport, DupRule, KeepPolicy, Reason};
use chatforge_data::minhash::{self, MinHasher};

const WORDS: &[&str] = &[
    "the",
    "king",
    "queen",
    "castle",
    "night",
    "have",
    "love",
    "give",
    "ever",
    "never",
    "over",
    "unto",
    "upon",
    "us",
    "up",
    "self",
    "star",
    "heaven",
    "majesty",
    "hour",
    "down",
    "speak",
    "sick",
    "thanks",
    "relief",
    "scholar",
    "guard",
    "watch",
    "ghost",
    "sword",
    "honest",
    "soldier",
    "friends",
    "ground",
    "bitter",
    "cold",
    "heart",
    "mouse",
    "stirring",
    "rivals",
    "haste",
    "think",
    "hear",
    "stand",
    "answer",
    "unfold",
    "yourself",
    "strike",
    "twelve",
    "bed",
    "appear",
    "again",
    "seen",
    "nothing",
    "fantasy",
    "belief",
    "dreaded",
    "sight",
    "twice",
    "minutes",
    "apparition",
    "approve",
    "eyes",
    "tush",
    "sit",
    "awhile",
    "assail",
    "ears",
    "fortified",
    "story",
    "west",
    "pole",
    "course",
];

/// A deterministic pseudo-random text of `n` words from `WORDS`, split into lines of 8 words.
fn text(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = String::new();
    for i in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out += WORDS[((x >> 33) % WORDS.len() as u64) as usize];
        out += if i % 8 == 7 { ".\n" } else { " " };
    }
    out
}

/// The same text as a First Folio compositor might have set it: `v`/`u` swapped, final `e` added
/// to some words, doubled consonants, capitals.
fn folio(modern: &str) -> String {
    let mut out = String::new();
    for (i, line) in modern.lines().enumerate() {
        let words: Vec<String> = line
            .split(' ')
            .enumerate()
            .map(|(j, w)| {
                let (w, dot) = w.strip_suffix('.').map_or((w, ""), |s| (s, "."));
                let mut v = match w {
                    "have" => "haue".to_string(),
                    "love" => "loue".into(),
                    "give" => "giue".into(),
                    "ever" => "euer".into(),
                    "never" => "neuer".into(),
                    "over" => "ouer".into(),
                    "unto" => "vnto".into(),
                    "upon" => "vpon".into(),
                    "us" => "vs".into(),
                    "up" => "vp".into(),
                    "unfold" => "vnfold".into(),
                    "star" => "Starre".into(),
                    "majesty" => "Maiesty".into(),
                    "relief" => "releefe".into(),
                    "scholar" => "Scholler".into(),
                    w if (i + j) % 3 == 0 && w.len() > 3 && !w.ends_with('e') => format!("{w}e"),
                    w => w.to_string(),
                };
                v.push_str(dot);
                v
            })
            .collect();
        out += "  ";
        out += &words.join(" ");
        out += "\n";
    }
    out
}

fn write(dir: &Path, rel: &str, contents: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn cfg() -> CleanConfig {
    CleanConfig { progress: false, ..CleanConfig::default() }
}

fn run(input: &Path, cfg: &CleanConfig) -> (DataReport, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let report = clean::run(input, out.path(), cfg).unwrap();
    (report, out)
}

fn reason_of(r: &DataReport, source: &str) -> Option<Reason> {
    r.removed_docs.iter().find(|d| d.source == source).map(|d| d.reason)
}

fn check_accounting(r: &DataReport) {
    let removed: u64 = r.removed.values().map(|c| c.bytes).sum();
    let boiler: u64 = r.boilerplate.values().map(|c| c.bytes).sum();
    assert_eq!(r.bytes_in as i64, (r.bytes_out + removed + boiler) as i64 + r.normalization_bytes);
    let removed_docs: u64 = r.removed.values().map(|c| c.docs).sum();
    assert_eq!(r.docs_in, r.docs_out + removed_docs);
    assert_eq!(r.docs_out, r.train.docs + r.val.docs);
}

#[test]
fn exact_duplicates_are_removed_and_the_first_kept() {
    let dir = tempfile::tempdir().unwrap();
    let a = text(1, 300);
    write(dir.path(), "a.txt", a.as_bytes());
    write(dir.path(), "b.txt.gz", &gz(a.replace('\n', "\r\n").as_bytes())); // same after normalisation
    write(dir.path(), "c.txt", text(2, 300).as_bytes());
    let (r, _out) = run(dir.path(), &cfg());
    assert_eq!(r.docs_in, 3);
    assert_eq!(r.docs_out, 2);
    assert_eq!(reason_of(&r, "b.txt.gz"), Some(Reason::ExactDuplicate));
    assert_eq!(r.exact_duplicates[0].duplicate_of, "a.txt");
    assert_eq!(r.removed[&Reason::ExactDuplicate].docs, 1);
    check_accounting(&r);
}

#[test]
fn near_duplicate_with_spelling_variation_is_found_and_the_modern_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let modern = text(7, 600);
    let old = folio(&modern);
    assert!(old.len() > modern.len(), "the Folio copy is the longer: the policy must not pick it for that");
    write(dir.path(), "play_gut.txt", modern.as_bytes());
    write(dir.path(), "play_gut_f.txt", old.as_bytes());
    write(dir.path(), "other.txt", text(8, 600).as_bytes());
    let (r, out) = run(dir.path(), &cfg());
    assert_eq!(r.near_duplicates.len(), 1, "{:?}", r.near_duplicates);
    let p = &r.near_duplicates[0];
    assert!(p.jaccard >= 0.3 && p.jaccard <= 1.0, "{p:?}");
    assert_eq!(p.kept, "play_gut.txt");
    assert_eq!(reason_of(&r, "play_gut_f.txt"), Some(Reason::NearDuplicate));
    assert_eq!(r.docs_out, 2);
    let lines = std::fs::read_to_string(out.path().join("near_dups.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1);
    assert!(lines.contains("\"jaccard\""));
    // Without spelling normalisation the same pair looks much less alike.
    let plain = minhash::jaccard(&minhash::shingles(&modern, 4, false), &minhash::shingles(&old, 4, false));
    assert!(plain < p.jaccard / 2.0, "plain {plain} vs normalised {}", p.jaccard);
    // The archaic-spelling measure tells the editions apart.
    assert!(clean::archaic_rate(&old) > 0.01 && clean::archaic_rate(&modern) < 0.01);
    // Keeping the longest instead keeps the Folio copy.
    let longest = CleanConfig { keep_policy: KeepPolicy::Longest, ..cfg() };
    let (r2, _o) = run(dir.path(), &longest);
    assert_eq!(r2.near_duplicates[0].kept, "play_gut_f.txt");
    check_accounting(&r);
}

#[test]
fn a_document_inside_a_larger_one_is_removed_as_contained() {
    let dir = tempfile::tempdir().unwrap();
    let small = text(50, 300);
    let anthology = format!("{}\n\n{small}\n\n{}", text(51, 600), text(52, 600));
    write(dir.path(), "anthology.txt", anthology.as_bytes());
    write(dir.path(), "small.txt", small.as_bytes());
    let (r, _out) = run(dir.path(), &cfg());
    assert_eq!(r.near_duplicates.len(), 1, "{:?}", r.near_duplicates);
    let p = &r.near_duplicates[0];
    assert_eq!((p.rule, p.kept.as_str()), (DupRule::Containment, "anthology.txt"));
    assert!(p.jaccard < 0.3 && p.containment > 0.95, "{p:?}");
    assert_eq!(reason_of(&r, "small.txt"), Some(Reason::NearDuplicate));
    // switched off, both stay
    let (r2, _o) = run(dir.path(), &CleanConfig { containment_threshold: None, ..cfg() });
    assert_eq!(r2.docs_out, 2);
}

#[test]
fn different_texts_are_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..12 {
        write(dir.path(), &format!("doc{i:02}.txt"), text(100 + i, 400).as_bytes());
    }
    let (r, _out) = run(dir.path(), &cfg());
    assert!(r.near_duplicates.is_empty(), "{:?}", r.near_duplicates);
    assert_eq!(r.docs_out, 12);
    assert!(r.similarity.all_pairs);
    assert_eq!(r.similarity.random_pairs, 66);
    assert!(r.similarity.random_histogram.max < 0.1, "{:?}", r.similarity.random_histogram);
    // More pairs than the sample: a seeded random sample of them.
    let (r2, _o) = run(dir.path(), &CleanConfig { similarity_sample_pairs: 10, ..cfg() });
    assert!(!r2.similarity.all_pairs);
    assert_eq!(r2.similarity.random_histogram.n, 10);
    assert_eq!(r2.docs_out, 12);
}

#[test]
fn an_output_folder_inside_the_input_is_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", text(60, 100).as_bytes());
    write(dir.path(), "b.txt", text(61, 100).as_bytes());
    let out = dir.path().join("clean");
    let first = clean::run(dir.path(), &out, &cfg()).unwrap();
    let second = clean::run(dir.path(), &out, &cfg()).unwrap();
    assert_eq!((first.docs_in, second.docs_in), (2, 2));
    assert!(second.files_skipped.is_empty(), "{:?}", second.files_skipped);
}

#[test]
fn quality_rules_fire_with_the_right_reason() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.txt", text(3, 200).as_bytes());
    write(dir.path(), "short.txt", b"Just a few words here.");
    let symbols = format!("{}\n{}", text(4, 60), "{<>}|=#$%^~`+@\\ ".repeat(60));
    write(dir.path(), "symbols.txt", symbols.as_bytes());
    let repeated = format!("{}\n{}", text(5, 60), "To be or not to be, that is the question.\n".repeat(40));
    write(dir.path(), "repeated.txt", repeated.as_bytes());
    write(dir.path(), "blank.txt", b" \n\n\t\n### START: ED4A800_0.tif.txt ###\np.772:0\n");
    let (r, _out) = run(dir.path(), &cfg());
    assert_eq!(reason_of(&r, "short.txt"), Some(Reason::TooShort));
    assert_eq!(reason_of(&r, "symbols.txt"), Some(Reason::SymbolRatio));
    assert_eq!(reason_of(&r, "repeated.txt"), Some(Reason::RepeatedLines));
    assert_eq!(reason_of(&r, "blank.txt"), Some(Reason::Empty));
    assert_eq!(reason_of(&r, "good.txt"), None);
    assert_eq!(r.docs_out, 1);
    check_accounting(&r);
}

#[test]
fn blocklist_removes_documents_with_blocked_terms() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "clean.txt", format!("{} forbiddenphrases are fine", text(10, 100)).as_bytes());
    write(dir.path(), "dirty.txt", format!("{} a Forbidden\n  Phrase here", text(11, 100)).as_bytes());
    write(dir.path(), "dirty2.txt", format!("{} visit evil.example.com now", text(12, 100)).as_bytes());
    let list = dir.path().join("blocklist.conf");
    std::fs::write(&list, "# terms\nforbidden phrase\n\nevil.example.com\n").unwrap();
    let (r, _out) = run(dir.path(), &CleanConfig { blocklist: Some(list), ..cfg() });
    assert_eq!(reason_of(&r, "dirty.txt"), Some(Reason::Blocklist));
    assert_eq!(reason_of(&r, "dirty2.txt"), Some(Reason::Blocklist));
    assert_eq!(reason_of(&r, "clean.txt"), None);
    assert_eq!(r.files_skipped, vec!["blocklist.conf".to_string()]);
}

#[test]
fn gzip_zstd_and_jsonl_inputs_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (text(20, 100), text(21, 100), text(22, 100), text(23, 100));
    write(dir.path(), "sub/a.txt.gz", &gz(a.as_bytes()));
    write(dir.path(), "b.txt.zst", &zstd::encode_all(b.as_bytes(), 3).unwrap());
    let jsonl = format!(
        "{}\n{}\nnot json\n{{\"title\": \"no text\"}}\n",
        serde_json::json!({"text": c, "meta": 1}),
        serde_json::json!({"text": d})
    );
    write(dir.path(), "docs.jsonl.gz", &gz(jsonl.as_bytes()));
    write(dir.path(), "LICENSE.txt", b"MIT");
    write(dir.path(), "image.png", b"\x89PNG");
    let (r, out) = run(dir.path(), &cfg());
    assert_eq!(r.files_read, 3);
    assert_eq!(r.files_skipped, vec!["LICENSE.txt".to_string(), "image.png".to_string()]);
    assert_eq!(r.docs_in, 6);
    assert_eq!(r.docs_out, 4);
    assert_eq!(reason_of(&r, "docs.jsonl.gz:3"), Some(Reason::Unreadable));
    assert_eq!(reason_of(&r, "docs.jsonl.gz:4"), Some(Reason::Unreadable));
    let mut all = clean::load_split(out.path(), "train").unwrap();
    all.extend(clean::load_split(out.path(), "val").unwrap());
    let mut sources: Vec<&str> = all.iter().map(|d| d.source.as_str()).collect();
    sources.sort();
    assert_eq!(sources, ["b.txt.zst", "docs.jsonl.gz:1", "docs.jsonl.gz:2", "sub/a.txt.gz"]);
    let a_doc = all.iter().find(|d| d.source == "sub/a.txt.gz").unwrap();
    assert_eq!(a_doc.text, a.trim_end());
    assert_eq!(a_doc.id.len(), 16);
    check_accounting(&r);
}

#[test]
fn corrupt_gzip_is_counted_as_unreadable_or_is_an_error_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.txt", text(30, 100).as_bytes());
    write(dir.path(), "garbage.txt.gz", b"this is not gzip at all");
    let mut truncated = gz(text(31, 3000).as_bytes());
    truncated.truncate(truncated.len() / 2);
    write(dir.path(), "truncated.txt.gz", &truncated);
    write(dir.path(), "latin1.txt", b"caf\xe9 au lait");
    let (r, _out) = run(dir.path(), &cfg());
    for f in ["garbage.txt.gz", "truncated.txt.gz", "latin1.txt"] {
        assert_eq!(reason_of(&r, f), Some(Reason::Unreadable), "{f}");
    }
    let detail = &r.removed_docs.iter().find(|d| d.source == "latin1.txt").unwrap().detail;
    assert!(detail.contains("UTF-8"), "{detail}");
    assert_eq!(r.removed[&Reason::Unreadable].docs, 3);
    assert_eq!(r.docs_out, 1);
    check_accounting(&r);

    let out = tempfile::tempdir().unwrap();
    let strict = CleanConfig { fail_on_unreadable: true, ..cfg() };
    let err = clean::run(dir.path(), out.path(), &strict).unwrap_err().to_string();
    assert!(err.contains("garbage.txt.gz") && err.contains("gzip"), "{err}");
}

#[test]
fn split_is_by_document_deterministic_and_val_is_never_empty() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        write(dir.path(), &format!("d{i:02}.txt"), text(200 + i, 80).as_bytes());
    }
    let c = CleanConfig { val_fraction: 0.2, ..cfg() };
    let (r1, o1) = run(dir.path(), &c);
    let (_r2, o2) = run(dir.path(), &c);
    for split in ["train.jsonl", "val.jsonl", "data_report.md", "near_dups.jsonl"] {
        let (a, b) = (std::fs::read(o1.path().join(split)).unwrap(), std::fs::read(o2.path().join(split)).unwrap());
        if split == "data_report.md" {
            // equal but for the run time
            let strip = |s: Vec<u8>| String::from_utf8(s).unwrap().lines().skip(3).collect::<Vec<_>>().join("\n");
            assert_eq!(strip(a), strip(b));
        } else {
            assert_eq!(a, b, "{split} differs between runs");
        }
    }
    let train = clean::load_split(o1.path(), "train").unwrap();
    let val = clean::load_split(o1.path(), "val").unwrap();
    assert_eq!(train.len() + val.len(), 40);
    assert!(!val.is_empty() && !train.is_empty());
    assert!(val.len() > 2 && val.len() < 16, "val {} of 40 at fraction 0.2", val.len());
    for d in &val {
        assert!(train.iter().all(|t| t.source != d.source && t.id != d.id));
        // whole documents: the text is the source file's
        let src = std::fs::read_to_string(dir.path().join(&d.source)).unwrap();
        assert_eq!(d.text, src.trim_end());
    }
    assert_eq!(r1.val.docs as usize, val.len());

    // val_fraction 0 still gives validation one document.
    let (r0, o0) = run(dir.path(), &CleanConfig { val_fraction: 0.0, ..cfg() });
    assert_eq!(r0.val.docs, 1);
    assert_eq!(clean::load_split(o0.path(), "val").unwrap().len(), 1);
}

#[test]
fn minhash_estimate_is_close_to_the_true_jaccard() {
    let hasher = MinHasher::new(256, 42);
    for (overlap, total) in [(100u64, 1000u64), (500, 1000), (900, 1000), (0, 1000)] {
        // A = [0, 1000), B = [1000 - overlap, 2000 - overlap): |A∩B| = overlap.
        let mix = |x: u64| x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
        let mut a: Vec<u64> = (0..total).map(mix).collect();
        let mut b: Vec<u64> = (total - overlap..2 * total - overlap).map(mix).collect();
        a.sort_unstable();
        b.sort_unstable();
        let truth = overlap as f64 / (2 * total - overlap) as f64;
        assert!((minhash::jaccard(&a, &b) - truth).abs() < 1e-12);
        let est = minhash::estimate(&hasher.signature(&a), &hasher.signature(&b));
        // standard error sqrt(J(1-J)/256) <= 0.031
        assert!((est - truth).abs() < 0.08, "overlap {overlap}: estimate {est} vs {truth}");
    }
    // LSH: 128 bands of 2 rows all but surely proposes a pair at 0.3 and rarely one at 0.01.
    assert!(minhash::lsh_probability(0.3, 128, 2) > 0.9999);
    assert!(minhash::lsh_probability(0.01, 128, 2) < 0.02);
}

#[test]
fn boilerplate_is_stripped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let body = text(40, 200);
    let doc = format!(
        "The Project Gutenberg EBook of Something\n\nsmall print\n\n*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\n\n\
         Copyright (c) 2020 Somebody. All rights reserved.\n\n{body}\n[Pg 12]\n\n{body2}\n\nEnd of the Project Gutenberg EBook of Something\nlicence text\n",
        body2 = text(41, 200)
    );
    write(dir.path(), "g.txt", doc.as_bytes());
    let (r, out) = run(dir.path(), &cfg());
    for kind in ["gutenberg_header", "gutenberg_footer", "license_header", "scan_markers"] {
        assert_eq!(r.boilerplate.get(kind).map(|c| c.docs), Some(1), "{kind}: {:?}", r.boilerplate);
    }
    let mut docs = clean::load_split(out.path(), "train").unwrap();
    docs.extend(clean::load_split(out.path(), "val").unwrap());
    let t = &docs[0].text;
    assert!(t.starts_with(body.lines().next().unwrap()), "{}", &t[..80]);
    assert!(!t.contains("Gutenberg") && !t.contains("Copyright") && !t.contains("[Pg 12]"));
    check_accounting(&r);
}

#[test]
fn bad_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let c = CleanConfig { bands: 200, rows: 2, ..cfg() };
    let err = clean::run(dir.path(), out.path(), &c).unwrap_err().to_string();
    assert!(err.contains("bands"), "{err}");
}

/// The bundled corpus: every two-edition play is found, the modern edition kept, no two different
/// works merged.
#[test]
fn bundled_corpus_editions_are_resolved() {
    let corpus = clean::bundled_corpus_dir().expect("data/corpus");
    let (r, out) = run(&corpus, &cfg());
    eprintln!("{}", std::fs::read_to_string(out.path().join("data_report.md")).unwrap());
    let shakespeare: Vec<String> =
        std::fs::read_dir(corpus.join("shakespeare")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let folio: Vec<&String> = shakespeare.iter().filter(|f| f.ends_with("_gut_f.txt.gz")).collect();
    assert!(folio.len() >= 30);
    // every Folio edition is removed as a near-duplicate of a modern edition, kept in its place
    for f in &folio {
        let src = format!("shakespeare/{f}");
        assert_eq!(reason_of(&r, &src), Some(Reason::NearDuplicate), "{src}");
    }
    let jaccard_pairs: Vec<_> = r.near_duplicates.iter().filter(|p| p.rule == DupRule::Jaccard).collect();
    assert_eq!(jaccard_pairs.len(), folio.len(), "one pair per play, no other pairs");
    assert_eq!(r.similarity.merged_not_lsh_candidates, 0, "LSH proposed every pair");
    for p in jaccard_pairs {
        assert!(p.kept.ends_with("_gut.txt.gz") && p.kept.starts_with("shakespeare/"), "{p:?}");
        let other = if p.a == p.kept { &p.b } else { &p.a };
        assert!(other.ends_with("_gut_f.txt.gz"), "{p:?}");
    }
    // the margin: merged pairs well above the threshold, everything else well below
    let min_merged = r.similarity.min_merged.as_ref().unwrap().jaccard;
    let max_other = r.similarity.closest_not_merged[0].jaccard;
    assert!(r.similarity.closest_not_merged.iter().all(|p| p.containment < 0.8));
    assert!(min_merged > 0.38 && max_other < 0.25, "merged >= {min_merged}, not merged <= {max_other}");
    // Milton's second copies are exact duplicates; "L'Allegro, Il Penseroso, Comus and Lycidas"
    // lies inside the Poetical Works
    assert_eq!(r.exact_duplicates.len(), 7);
    assert!(r.exact_duplicates.iter().all(|d| d.source.starts_with("milton/")));
    let contained: Vec<_> = r.near_duplicates.iter().filter(|p| p.rule == DupRule::Containment).collect();
    assert_eq!(contained.len(), 1, "{contained:?}");
    assert_eq!(reason_of(&r, "milton/allegro.txt.gz"), Some(Reason::NearDuplicate));
    assert_eq!(contained[0].kept, "milton/poems.txt.gz");
    assert!(r.val.docs >= 1 && r.train.docs > r.val.docs);
    check_accounting(&r);
}
