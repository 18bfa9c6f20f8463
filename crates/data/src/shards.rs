//! Token shards: a small header then little-endian token ids.
//!
//! Layout: magic `b"CFTOKENS"` (8 bytes), version u32 = 1, dtype u32 (2 = u16, 4 = u32),
//! count u64, then `count` ids. u16 is used whenever every id fits.

use std::path::Path;

use crate::{Error, Result};

pub const MAGIC: &[u8; 8] = b"CFTOKENS";
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8;

/// Serialises ids to shard bytes (u16 when the largest id fits, else u32).
pub fn to_bytes(ids: &[u32]) -> Vec<u8> {
    let wide = ids.iter().any(|&x| x > u16::MAX as u32);
    let dtype: u32 = if wide { 4 } else { 2 };
    let mut out = Vec::with_capacity(HEADER + ids.len() * dtype as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&dtype.to_le_bytes());
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for &id in ids {
        if wide {
            out.extend_from_slice(&id.to_le_bytes());
        } else {
            out.extend_from_slice(&(id as u16).to_le_bytes());
        }
    }
    out
}

/// Parses shard bytes; `name` is used in error messages.
pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Vec<u32>> {
    let bad = |m: &str| Error::Format(format!("{name}: {m}"));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("not a token shard (bad magic)"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let version = u32_at(8);
    if version != VERSION {
        return Err(bad(&format!("unsupported shard version {version}")));
    }
    let dtype = u32_at(12) as usize;
    let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    if dtype != 2 && dtype != 4 {
        return Err(bad(&format!("unsupported dtype width {dtype}")));
    }
    let body = &bytes[HEADER..];
    if body.len() != count * dtype {
        return Err(bad(&format!("truncated: header says {count} tokens, file holds {} bytes of data", body.len())));
    }
    Ok(if dtype == 2 {
        body.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect()
    } else {
        body.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
    })
}

pub fn read(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_narrow_and_wide() {
        for ids in [vec![0u32, 1, 65535, 7], vec![0, 70000, 3], vec![]] {
            assert_eq!(from_bytes(&to_bytes(&ids), "t").unwrap(), ids);
        }
        assert_eq!(to_bytes(&[1, 2])[12], 2);
        assert_eq!(to_bytes(&[1, 1 << 20])[12], 4);
    }

    #[test]
    fn truncation_and_bad_magic_are_named() {
        let b = to_bytes(&[1, 2, 3]);
        let e = from_bytes(&b[..b.len() - 1], "x.bin").unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains("truncated"), "{e}");
        let e = from_bytes(b"hello world, not a shard", "y.bin").unwrap_err().to_string();
        assert!(e.contains("y.bin") && e.contains("magic"), "{e}");
    }
}
