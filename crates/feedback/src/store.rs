//! The preference store: `R/feedback.sqlite`.
//!
//! Prompts, the model samples shown for them (checkpoint, sampling settings, seed), pairwise
//! comparisons (A / B / tie / both bad), rankings of K = 2..9 samples, and thumbs up/down on chat
//! answers, each with its rater (human or simulated) and time.
//!
//! Durability: WAL journal with `synchronous=FULL`, so every `add_*` has reached the disk when it
//! returns; a process killed right after that loses nothing. Several processes may share the file
//! (a 5 s busy timeout). The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] runs
//! the missing steps in order, each in one transaction.
//!
//! Pairs for the reward model ([`Store::pairs`]): a comparison A or B is one pair; a tie is a
//! pair with label 0.5 (both equally good: the Bradley–Terry loss pulls their rewards together);
//! "both bad" says nothing about which is better and gives no pair (it is counted, and stays in
//! the table for whoever wants it); a ranking of K samples gives its K·(K−1)/2 pairs, as in
//! InstructGPT.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chatforge_data::chat::{Conversation, Message, Role};
use chatforge_rundir::fs::sha256_hex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Schema steps; `user_version` = how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of the feedback issue.
    "CREATE TABLE raters (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        simulated INTEGER NOT NULL CHECK (simulated IN (0, 1)),
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        messages TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        model TEXT NOT NULL,
        text TEXT NOT NULL,
        params TEXT NOT NULL,
        seed INTEGER NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE INDEX samples_prompt ON samples(prompt_id);
    CREATE TABLE comparisons (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        sample_a INTEGER NOT NULL REFERENCES samples(id),
        sample_b INTEGER NOT NULL REFERENCES samples(id),
        choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
        rater_id INTEGER NOT NULL REFERENCES raters(id),
        reason TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        CHECK (sample_a != sample_b)
    );
    CREATE TABLE rankings (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        rater_id INTEGER NOT NULL REFERENCES raters(id),
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE ranking_items (
        ranking_id INTEGER NOT NULL REFERENCES rankings(id) ON DELETE CASCADE,
        rank INTEGER NOT NULL,
        sample_id INTEGER NOT NULL REFERENCES samples(id),
        PRIMARY KEY (ranking_id, rank),
        UNIQUE (ranking_id, sample_id)
    );
    CREATE TABLE chat_feedback (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        messages TEXT NOT NULL,
        rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
        rater_id INTEGER NOT NULL REFERENCES raters(id),
        comment TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );",
];

/// A sample to store: one model answer to a stored prompt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewSample {
    pub prompt_id: i64,
    /// Which checkpoint, e.g. `speedrun/sft`.
    pub model: String,
    pub text: String,
    /// Sampling settings: temperature, top_p, max_tokens.
    pub params: serde_json::Value,
    pub seed: u64,
}

/// A stored sample.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleRow {
    pub id: i64,
    pub prompt_id: i64,
    pub model: String,
    pub text: String,
    pub params: serde_json::Value,
    pub seed: u64,
}

/// A rater's verdict on two samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    A,
    B,
    Tie,
    BothBad,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::A => "a",
            Choice::B => "b",
            Choice::Tie => "tie",
            Choice::BothBad => "both_bad",
        }
    }

    pub fn parse(s: &str) -> Result<Choice> {
        match s {
            "a" => Ok(Choice::A),
            "b" => Ok(Choice::B),
            "tie" => Ok(Choice::Tie),
            "both_bad" => Ok(Choice::BothBad),
            _ => Err(Error::Input(format!("unknown choice {s:?}: expected a, b, tie or both_bad"))),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewComparison {
    pub prompt_id: i64,
    pub sample_a: i64,
    pub sample_b: i64,
    pub choice: Choice,
    pub rater: String,
    pub simulated: bool,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewRanking {
    pub prompt_id: i64,
    /// Sample ids, best first; 2 to 9 of them.
    pub ranked: Vec<i64>,
    pub rater: String,
    pub simulated: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewChatFeedback {
    pub model: String,
    /// The conversation, ending with the rated assistant answer.
    pub conversation: Conversation,
    /// +1 thumbs up, −1 thumbs down.
    pub rating: i8,
    pub rater: String,
    pub comment: Option<String>,
}

/// Rows per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounts {
    pub raters: usize,
    pub prompts: usize,
    pub samples: usize,
    pub comparisons: usize,
    pub comparisons_simulated: usize,
    pub ties: usize,
    pub both_bad: usize,
    pub rankings: usize,
    pub chat_feedback: usize,
}

/// One preference pair for the reward model or DPO.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pair {
    pub prompt_id: i64,
    pub prompt: Conversation,
    pub chosen: String,
    pub rejected: String,
    /// 1: `chosen` is better; 0.5: a tie.
    pub label: f32,
    pub rater: String,
    pub simulated: bool,
}

/// Which pairs [`Store::pairs`] returns.
#[derive(Clone, Debug, Default)]
pub struct PairFilter {
    /// Ties as label-0.5 pairs (otherwise left out).
    pub ties: bool,
    /// Only simulated (`Some(true)`) or only human (`Some(false)`) raters.
    pub simulated: Option<bool>,
}

/// The preference store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = Connection::open(path).map_err(|source| Error::Sql { path: path.to_path_buf(), source })?;
        let mut store = Store { conn, path: path.to_path_buf() };
        store.setup()?;
        Ok(store)
    }

    fn sql(&self, source: rusqlite::Error) -> Error {
        Error::Sql { path: self.path.clone(), source }
    }

    fn setup(&mut self) -> Result<()> {
        self.conn.busy_timeout(Duration::from_secs(5)).map_err(|e| self.sql(e))?;
        // Detects a file that is not a database before anything is written to it.
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.sql(e))?;
        let mode: String = self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| self.sql(e))?;
        if mode != "wal" {
            return Err(Error::Input(format!("{}: could not switch to WAL (journal_mode {mode})", self.path.display())));
        }
        self.conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;").map_err(|e| self.sql(e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(Error::Schema { path: self.path.clone(), found: version, known });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(|e| Error::Sql { path: self.path.clone(), source: e })?;
            tx.execute_batch(step).map_err(|e| Error::Sql { path: self.path.clone(), source: e })?;
            tx.pragma_update(None, "user_version", i as i64 + 1).map_err(|e| Error::Sql { path: self.path.clone(), source: e })?;
            tx.commit().map_err(|e| Error::Sql { path: self.path.clone(), source: e })?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.sql(e))
    }

    fn rater_id(&self, name: &str, simulated: bool) -> Result<i64> {
        if name.trim().is_empty() {
            return Err(Error::Input("the rater's name is empty".into()));
        }
        let found: Option<(i64, bool)> = self
            .conn
            .query_row("SELECT id, simulated FROM raters WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.sql(e))?;
        match found {
            Some((id, sim)) if sim == simulated => Ok(id),
            Some(_) => {
                Err(Error::Input(format!("rater {name:?} is already recorded as {}", if simulated { "a human" } else { "simulated" })))
            }
            None => {
                self.conn
                    .execute("INSERT INTO raters (name, simulated) VALUES (?1, ?2)", params![name, simulated])
                    .map_err(|e| self.sql(e))?;
                Ok(self.conn.last_insert_rowid())
            }
        }
    }

    /// Stores a prompt (the messages up to the last user turn); the same messages give the same id.
    pub fn add_prompt(&self, prompt: &Conversation, source: &str) -> Result<i64> {
        prompt.validate_for_prompt().map_err(|e| Error::Input(format!("prompt: {e}")))?;
        let json = serde_json::to_string(&prompt.messages).expect("messages serialize");
        let hash = sha256_hex(json.as_bytes());
        self.conn
            .execute(
                "INSERT INTO prompts (hash, messages, source) VALUES (?1, ?2, ?3) ON CONFLICT(hash) DO NOTHING",
                params![hash, json, source],
            )
            .map_err(|e| self.sql(e))?;
        self.conn.query_row("SELECT id FROM prompts WHERE hash = ?1", [hash], |r| r.get(0)).map_err(|e| self.sql(e))
    }

    pub fn add_sample(&self, s: &NewSample) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO samples (prompt_id, model, text, params, seed) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.prompt_id, s.model, s.text, s.params.to_string(), s.seed as i64],
            )
            .map_err(|e| self.sql(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Several samples in one transaction (one fsync): for simulated labeling.
    pub fn add_samples(&mut self, samples: &[NewSample]) -> Result<Vec<i64>> {
        let path = self.path.clone();
        let sql = |source| Error::Sql { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut ids = Vec::with_capacity(samples.len());
        {
            let mut st =
                tx.prepare("INSERT INTO samples (prompt_id, model, text, params, seed) VALUES (?1, ?2, ?3, ?4, ?5)").map_err(sql)?;
            for s in samples {
                ids.push(st.insert(params![s.prompt_id, s.model, s.text, s.params.to_string(), s.seed as i64]).map_err(sql)?);
            }
        }
        tx.commit().map_err(sql)?;
        Ok(ids)
    }

    fn check_samples(&self, prompt_id: i64, ids: &[i64]) -> Result<()> {
        for &id in ids {
            let p: Option<i64> = self
                .conn
                .query_row("SELECT prompt_id FROM samples WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(|e| self.sql(e))?;
            match p {
                None => return Err(Error::Input(format!("no sample {id}"))),
                Some(p) if p != prompt_id => return Err(Error::Input(format!("sample {id} answers prompt {p}, not {prompt_id}"))),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn add_comparison(&self, c: &NewComparison) -> Result<i64> {
        if c.sample_a == c.sample_b {
            return Err(Error::Input("a comparison needs two different samples".into()));
        }
        self.check_samples(c.prompt_id, &[c.sample_a, c.sample_b])?;
        let rater = self.rater_id(&c.rater, c.simulated)?;
        self.conn
            .execute(
                "INSERT INTO comparisons (prompt_id, sample_a, sample_b, choice, rater_id, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![c.prompt_id, c.sample_a, c.sample_b, c.choice.as_str(), rater, c.reason],
            )
            .map_err(|e| self.sql(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Several comparisons in one transaction (one fsync).
    pub fn add_comparisons(&mut self, cs: &[NewComparison]) -> Result<Vec<i64>> {
        let path = self.path.clone();
        let sql = |source| Error::Sql { path: path.clone(), source };
        let mut raters = std::collections::HashMap::new();
        for c in cs {
            if c.sample_a == c.sample_b {
                return Err(Error::Input("a comparison needs two different samples".into()));
            }
            if !raters.contains_key(&c.rater) {
                raters.insert(c.rater.clone(), self.rater_id(&c.rater, c.simulated)?);
            }
        }
        let tx = self.conn.transaction().map_err(sql)?;
        let mut ids = Vec::with_capacity(cs.len());
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO comparisons (prompt_id, sample_a, sample_b, choice, rater_id, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for c in cs {
                ids.push(
                    st.insert(params![c.prompt_id, c.sample_a, c.sample_b, c.choice.as_str(), raters[&c.rater], c.reason]).map_err(sql)?,
                );
            }
        }
        tx.commit().map_err(sql)?;
        Ok(ids)
    }

    pub fn add_ranking(&mut self, r: &NewRanking) -> Result<i64> {
        if !(2..=9).contains(&r.ranked.len()) {
            return Err(Error::Input(format!("a ranking orders 2 to 9 samples, not {}", r.ranked.len())));
        }
        let mut uniq = r.ranked.clone();
        uniq.sort_unstable();
        uniq.dedup();
        if uniq.len() != r.ranked.len() {
            return Err(Error::Input("a ranking lists a sample twice".into()));
        }
        self.check_samples(r.prompt_id, &r.ranked)?;
        let rater = self.rater_id(&r.rater, r.simulated)?;
        let path = self.path.clone();
        let sql = |source| Error::Sql { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute("INSERT INTO rankings (prompt_id, rater_id) VALUES (?1, ?2)", params![r.prompt_id, rater]).map_err(sql)?;
        let id = tx.last_insert_rowid();
        for (rank, s) in r.ranked.iter().enumerate() {
            tx.execute("INSERT INTO ranking_items (ranking_id, rank, sample_id) VALUES (?1, ?2, ?3)", params![id, rank as i64, s])
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(id)
    }

    pub fn add_chat_feedback(&self, f: &NewChatFeedback) -> Result<i64> {
        if f.rating != 1 && f.rating != -1 {
            return Err(Error::Input(format!("rating must be +1 or -1, not {}", f.rating)));
        }
        if f.conversation.messages.last().map(|m| m.role) != Some(Role::Assistant) {
            return Err(Error::Input("chat feedback rates an assistant answer: the conversation must end with one".into()));
        }
        f.conversation.validate().map_err(|e| Error::Input(format!("conversation: {e}")))?;
        let rater = self.rater_id(&f.rater, false)?;
        let json = serde_json::to_string(&f.conversation.messages).expect("messages serialize");
        self.conn
            .execute(
                "INSERT INTO chat_feedback (model, messages, rating, rater_id, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![f.model, json, f.rating, rater, f.comment],
            )
            .map_err(|e| self.sql(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn prompt(&self, id: i64) -> Result<Conversation> {
        let json: Option<String> =
            self.conn.query_row("SELECT messages FROM prompts WHERE id = ?1", [id], |r| r.get(0)).optional().map_err(|e| self.sql(e))?;
        let json = json.ok_or_else(|| Error::Input(format!("no prompt {id}")))?;
        self.parse_messages(&json).map(Conversation::new)
    }

    fn parse_messages(&self, json: &str) -> Result<Vec<Message>> {
        serde_json::from_str(json).map_err(|e| Error::Input(format!("{}: stored messages do not parse: {e}", self.path.display())))
    }

    pub fn sample(&self, id: i64) -> Result<SampleRow> {
        let row: Option<(i64, String, String, String, i64)> = self
            .conn
            .query_row("SELECT prompt_id, model, text, params, seed FROM samples WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        let (prompt_id, model, text, params, seed) = row.ok_or_else(|| Error::Input(format!("no sample {id}")))?;
        let params = serde_json::from_str(&params).unwrap_or(serde_json::Value::Null);
        Ok(SampleRow { id, prompt_id, model, text, params, seed: seed as u64 })
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        let n =
            |q: &str| -> Result<usize> { self.conn.query_row(q, [], |r| r.get::<_, i64>(0)).map(|v| v as usize).map_err(|e| self.sql(e)) };
        Ok(StoreCounts {
            raters: n("SELECT count(*) FROM raters")?,
            prompts: n("SELECT count(*) FROM prompts")?,
            samples: n("SELECT count(*) FROM samples")?,
            comparisons: n("SELECT count(*) FROM comparisons")?,
            comparisons_simulated: n("SELECT count(*) FROM comparisons c JOIN raters r ON r.id = c.rater_id WHERE r.simulated = 1")?,
            ties: n("SELECT count(*) FROM comparisons WHERE choice = 'tie'")?,
            both_bad: n("SELECT count(*) FROM comparisons WHERE choice = 'both_bad'")?,
            rankings: n("SELECT count(*) FROM rankings")?,
            chat_feedback: n("SELECT count(*) FROM chat_feedback")?,
        })
    }

    /// The preference pairs of every comparison and ranking, oldest first (see the module docs
    /// for how ties, "both bad" and rankings become pairs).
    pub fn pairs(&self, filter: &PairFilter) -> Result<Vec<Pair>> {
        let mut prompts = std::collections::HashMap::<i64, Conversation>::new();
        let mut out = Vec::new();
        let sim_ok = |s: bool| filter.simulated.is_none_or(|f| f == s);
        let mut st = self
            .conn
            .prepare(
                "SELECT c.prompt_id, a.text, b.text, c.choice, r.name, r.simulated FROM comparisons c
                 JOIN samples a ON a.id = c.sample_a JOIN samples b ON b.id = c.sample_b JOIN raters r ON r.id = c.rater_id
                 ORDER BY c.id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        for row in rows {
            let (pid, a, b, choice, rater, simulated): (i64, String, String, String, String, bool) = row.map_err(|e| self.sql(e))?;
            if !sim_ok(simulated) {
                continue;
            }
            let (chosen, rejected, label) = match Choice::parse(&choice)? {
                Choice::A => (a, b, 1.0),
                Choice::B => (b, a, 1.0),
                Choice::Tie if filter.ties => (a, b, 0.5),
                Choice::Tie | Choice::BothBad => continue,
            };
            let prompt = self.cached_prompt(&mut prompts, pid)?;
            out.push(Pair { prompt_id: pid, prompt, chosen, rejected, label, rater, simulated });
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT k.id, k.prompt_id, s.text, r.name, r.simulated FROM rankings k JOIN ranking_items i ON i.ranking_id = k.id
                 JOIN samples s ON s.id = i.sample_id JOIN raters r ON r.id = k.rater_id ORDER BY k.id, i.rank",
            )
            .map_err(|e| self.sql(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get(4)?)))
            .map_err(|e| self.sql(e))?;
        let mut group: Vec<String> = Vec::new();
        let mut cur: Option<(i64, i64, String, bool)> = None;
        let mut flush = |cur: &Option<(i64, i64, String, bool)>, group: &mut Vec<String>, out: &mut Vec<Pair>| -> Result<()> {
            if let Some((_, pid, rater, simulated)) = cur {
                if sim_ok(*simulated) {
                    let prompt = self.cached_prompt(&mut prompts, *pid)?;
                    for i in 0..group.len() {
                        for j in i + 1..group.len() {
                            out.push(Pair {
                                prompt_id: *pid,
                                prompt: prompt.clone(),
                                chosen: group[i].clone(),
                                rejected: group[j].clone(),
                                label: 1.0,
                                rater: rater.clone(),
                                simulated: *simulated,
                            });
                        }
                    }
                }
            }
            group.clear();
            Ok(())
        };
        for row in rows {
            let (kid, pid, text, rater, simulated): (i64, i64, String, String, bool) = row.map_err(|e| self.sql(e))?;
            if cur.as_ref().map(|c| c.0) != Some(kid) {
                flush(&cur, &mut group, &mut out)?;
                cur = Some((kid, pid, rater, simulated));
            }
            group.push(text);
        }
        flush(&cur, &mut group, &mut out)?;
        Ok(out)
    }

    fn cached_prompt(&self, cache: &mut std::collections::HashMap<i64, Conversation>, id: i64) -> Result<Conversation> {
        if let Some(c) = cache.get(&id) {
            return Ok(c.clone());
        }
        let c = self.prompt(id)?;
        cache.insert(id, c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(q: &str) -> Conversation {
        Conversation::new(vec![Message::system("Answer only in JSON."), Message::user(q)])
    }

    fn sample(pid: i64, text: &str) -> NewSample {
        NewSample { prompt_id: pid, model: "t/sft".into(), text: text.into(), params: serde_json::json!({"temperature": 1.0}), seed: 7 }
    }

    #[test]
    fn roundtrip_pairs_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("feedback.sqlite")).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let p = s.add_prompt(&prompt("2+2?"), "test").unwrap();
        assert_eq!(s.add_prompt(&prompt("2+2?"), "test").unwrap(), p, "same prompt, same id");
        assert_eq!(s.prompt(p).unwrap(), prompt("2+2?"));
        let ids: Vec<i64> = ["{\"a\": 4}", "4", "five", "{}"].iter().map(|t| s.add_sample(&sample(p, t)).unwrap()).collect();
        assert_eq!(s.sample(ids[1]).unwrap().text, "4");
        let cmp = |a, b, choice| NewComparison {
            prompt_id: p,
            sample_a: a,
            sample_b: b,
            choice,
            rater: "ann".into(),
            simulated: false,
            reason: None,
        };
        s.add_comparison(&cmp(ids[0], ids[1], Choice::A)).unwrap();
        s.add_comparison(&cmp(ids[2], ids[1], Choice::B)).unwrap();
        s.add_comparison(&cmp(ids[2], ids[3], Choice::Tie)).unwrap();
        s.add_comparison(&cmp(ids[2], ids[3], Choice::BothBad)).unwrap();
        s.add_ranking(&NewRanking { prompt_id: p, ranked: vec![ids[0], ids[1], ids[2]], rater: "sim-1".into(), simulated: true }).unwrap();
        let pairs = s.pairs(&PairFilter::default()).unwrap();
        let texts: Vec<(&str, &str)> = pairs.iter().map(|p| (p.chosen.as_str(), p.rejected.as_str())).collect();
        assert_eq!(texts, [("{\"a\": 4}", "4"), ("4", "five"), ("{\"a\": 4}", "4"), ("{\"a\": 4}", "five"), ("4", "five")]);
        let with_ties = s.pairs(&PairFilter { ties: true, simulated: Some(false) }).unwrap();
        assert_eq!(with_ties.len(), 3);
        assert_eq!(with_ties[2].label, 0.5);
        let c = s.counts().unwrap();
        assert_eq!((c.prompts, c.samples, c.comparisons, c.ties, c.both_bad, c.rankings, c.comparisons_simulated), (1, 4, 4, 1, 1, 1, 0));
    }

    #[test]
    fn bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("f.sqlite")).unwrap();
        let p = s.add_prompt(&prompt("hi"), "t").unwrap();
        let q = s.add_prompt(&prompt("other"), "t").unwrap();
        let a = s.add_sample(&sample(p, "x")).unwrap();
        let b = s.add_sample(&sample(q, "y")).unwrap();
        let c =
            NewComparison { prompt_id: p, sample_a: a, sample_b: b, choice: Choice::A, rater: "r".into(), simulated: false, reason: None };
        assert!(s.add_comparison(&c).unwrap_err().to_string().contains("answers prompt"));
        assert!(s.add_comparison(&NewComparison { sample_b: a, ..c.clone() }).is_err());
        assert!(s.add_comparison(&NewComparison { sample_b: 999, ..c.clone() }).unwrap_err().to_string().contains("no sample 999"));
        assert!(s.add_ranking(&NewRanking { prompt_id: p, ranked: vec![a], rater: "r".into(), simulated: false }).is_err());
        assert!(s.add_sample(&sample(12345, "z")).is_err(), "foreign key on prompt_id");
        let w = s.add_sample(&sample(p, "w")).unwrap();
        s.add_comparison(&NewComparison { sample_b: w, ..c.clone() }).unwrap();
        let sim = NewComparison { simulated: true, sample_b: w, ..c };
        assert!(s.add_comparison(&sim).unwrap_err().to_string().contains("already recorded"));
        let fb = NewChatFeedback { model: "m".into(), conversation: prompt("hi"), rating: 1, rater: "r".into(), comment: None };
        assert!(s.add_chat_feedback(&fb).is_err(), "must end with an assistant answer");
        let mut conv = prompt("hi");
        conv.messages.push(Message::assistant("{}"));
        assert!(s.add_chat_feedback(&NewChatFeedback { rating: 3, conversation: conv.clone(), ..fb.clone() }).is_err());
        s.add_chat_feedback(&NewChatFeedback { conversation: conv, ..fb }).unwrap();
        assert_eq!(s.counts().unwrap().chat_feedback, 1);
    }

    #[test]
    fn not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feedback.sqlite");
        std::fs::write(&path, b"this is not a database, just text that is long enough to fill a header..................").unwrap();
        let err = Store::open(&path).err().expect("garbage must not open");
        assert!(err.to_string().contains("feedback.sqlite"), "{err}");
    }

    #[test]
    fn reopen_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sqlite");
        {
            let s = Store::open(&path).unwrap();
            s.add_prompt(&prompt("hi"), "t").unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.counts().unwrap().prompts, 1);
    }
}
