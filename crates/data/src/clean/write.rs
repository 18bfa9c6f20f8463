//! Writing the output: every file goes through [`write_atomic`] (temporary file, fsync, rename), so
//! a crash leaves either the old file or the new one; JSONL rows and the hex of document ids.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::Result;

/// Writes a file atomically (`chatforge_rundir::fs`: temporary file, fsync, rename, fsync the folder).
pub(super) fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    Ok(chatforge_rundir::fs::write_atomic_with(path, write)?)
}

pub(super) fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    write_atomic(path, |w| {
        for r in rows {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

pub(super) use chatforge_rundir::fs::hex;
