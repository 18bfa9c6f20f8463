//! Preference files in TRL's conversational format, one JSON object a line:
//! `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`, where `chosen` and
//! `rejected` hold the assistant answer. Export expands rankings to K·(K−1)/2 pairs; ties and
//! "both bad" have no place in the format and are left out.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use chatforge_data::chat::{Conversation, Message, Role};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{Choice, NewComparison, NewSample, PairFilter, Store};

#[derive(Debug, Serialize, Deserialize)]
pub struct PrefLine {
    pub prompt: Vec<Message>,
    pub chosen: Vec<Message>,
    pub rejected: Vec<Message>,
}

/// Writes every strict preference pair of the store to `path`; returns how many.
pub fn export(store: &Store, path: &Path, simulated: Option<bool>) -> Result<usize> {
    let pairs = store.pairs(&PairFilter { ties: false, simulated })?;
    let tmp = path.with_extension("jsonl.tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::new(f);
    for p in &pairs {
        let line = PrefLine {
            prompt: p.prompt.messages.clone(),
            chosen: vec![Message::assistant(&p.chosen)],
            rejected: vec![Message::assistant(&p.rejected)],
        };
        serde_json::to_writer(&mut w, &line).expect("serializes");
        w.write_all(b"\n").map_err(|e| Error::io(&tmp, e))?;
    }
    let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(pairs.len())
}

/// Reads a TRL preference file into the store as comparisons by `rater`; all lines are checked
/// before anything is written. Returns how many pairs were imported.
pub fn import(store: &mut Store, path: &Path, rater: &str, simulated: bool) -> Result<usize> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut lines = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::BadLine { path: path.to_path_buf(), line: i + 1, msg };
        let p: PrefLine = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let answer = |m: &[Message], which: &str| -> Result<String> {
            match m {
                [a] if a.role == Role::Assistant => Ok(a.content.clone()),
                _ => Err(bad(format!("{which} must hold exactly one assistant message"))),
            }
        };
        let (chosen, rejected) = (answer(&p.chosen, "chosen")?, answer(&p.rejected, "rejected")?);
        let prompt = Conversation::new(p.prompt);
        prompt.validate_for_prompt().map_err(|e| bad(format!("prompt: {e}")))?;
        lines.push((prompt, chosen, rejected));
    }
    let source = format!("import:{}", path.display());
    let mut cmps = Vec::with_capacity(lines.len());
    for (prompt, chosen, rejected) in &lines {
        let pid = store.add_prompt(prompt, &source)?;
        let params = serde_json::json!({});
        let ids = store.add_samples(&[
            NewSample { prompt_id: pid, model: source.clone(), text: chosen.clone(), params: params.clone(), seed: 0 },
            NewSample { prompt_id: pid, model: source.clone(), text: rejected.clone(), params, seed: 0 },
        ])?;
        cmps.push(NewComparison {
            prompt_id: pid,
            sample_a: ids[0],
            sample_b: ids[1],
            choice: Choice::A,
            rater: rater.into(),
            simulated,
            reason: None,
        });
    }
    store.add_comparisons(&cmps)?;
    Ok(cmps.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewRanking;

    #[test]
    fn export_import_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let prompt = Conversation::new(vec![Message::user("Spell cat.")]);
        let pid = s.add_prompt(&prompt, "t").unwrap();
        let ids: Vec<i64> = ["c-a-t", "cat", "k-a-t"]
            .iter()
            .map(|t| {
                s.add_sample(&NewSample { prompt_id: pid, model: "m".into(), text: t.to_string(), params: serde_json::json!({}), seed: 1 })
                    .unwrap()
            })
            .collect();
        s.add_ranking(&NewRanking { prompt_id: pid, ranked: ids.clone(), rater: "r".into(), simulated: false }).unwrap();
        let file = dir.path().join("prefs.jsonl");
        assert_eq!(export(&s, &file, None).unwrap(), 3);
        let text = std::fs::read_to_string(&file).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["chosen"][0]["content"], "c-a-t");
        assert_eq!(first["rejected"][0]["role"], "assistant");
        let mut t = Store::open(&dir.path().join("b.sqlite")).unwrap();
        assert_eq!(import(&mut t, &file, "imported", false).unwrap(), 3);
        let a: Vec<(String, String)> = s.pairs(&PairFilter::default()).unwrap().into_iter().map(|p| (p.chosen, p.rejected)).collect();
        let b: Vec<(String, String)> = t.pairs(&PairFilter::default()).unwrap().into_iter().map(|p| (p.chosen, p.rejected)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_line_is_named_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.jsonl");
        let good = r#"{"prompt":[{"role":"user","content":"hi"}],"chosen":[{"role":"assistant","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]}"#;
        let bad = r#"{"prompt":[{"role":"user","content":"hi"}],"chosen":[],"rejected":[{"role":"assistant","content":"b"}]}"#;
        std::fs::write(&file, format!("{good}\n{bad}\n")).unwrap();
        let mut s = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let err = import(&mut s, &file, "r", false).unwrap_err().to_string();
        assert!(err.contains("p.jsonl:2") && err.contains("chosen"), "{err}");
        assert_eq!(s.counts().unwrap().comparisons, 0);
    }
}
