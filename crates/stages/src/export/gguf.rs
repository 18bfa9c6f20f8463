//! GGUF version 3, the file format of llama.cpp (and of Ollama and LM Studio, which run on it),
//! written and read back from the format's specification (ggml's docs/gguf.md).
//!
//! A file is, in order, all little-endian:
//! 1. the header: the magic `GGUF`, the version (u32, 3), the number of tensors (u64), the
//!    number of metadata pairs (u64);
//! 2. the metadata: each a key (string: u64 length, UTF-8 bytes), a value type (u32) and the
//!    value; an array is its element type (u32), its length (u64) and the elements;
//! 3. the tensor infos: each a name (string), the number of dimensions (u32), the dimensions
//!    (u64 each, the fastest-varying first, so an HF `[rows, cols]` matrix is `[cols, rows]`),
//!    the ggml type (u32) and the offset of its data (u64) from the start of the data section,
//!    a multiple of the alignment;
//! 4. zero padding to the alignment (`general.alignment`, 32 by default), then the tensor data,
//!    each tensor padded to the alignment.
//!
//! [`Gguf::to_bytes`] writes one; [`read`] parses one back (the metadata and tensor infos, and
//! each tensor's bytes), for the tests and for checking what an export wrote.

use std::collections::BTreeMap;

use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
/// The default alignment, written explicitly as `general.alignment`.
pub const ALIGNMENT: usize = 32;

// Metadata value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// A metadata value (the types an export writes; [`read`] reads every type).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    /// Any other integer scalar, as read back.
    Int(i64),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    /// Any other array, as read back (numbers as f64).
    NumArray(Vec<f64>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U32(x) => Some(x as u64),
            Value::U64(x) => Some(x),
            Value::I32(x) if x >= 0 => Some(x as u64),
            Value::Int(x) if x >= 0 => Some(x as u64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// ggml tensor types an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    fn ggml(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
        }
    }
    fn from_ggml(t: u32) -> Option<DType> {
        match t {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            _ => None,
        }
    }
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// One tensor: its GGUF name, its dimensions fastest-varying first, and its data in row-major
/// order of the HF shape (which is the same bytes).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

impl Tensor {
    /// From f32 values with the HF (row-major, slowest first) shape.
    pub fn from_f32(name: &str, hf_shape: &[usize], values: &[f32], dtype: DType) -> Tensor {
        let data = match dtype {
            DType::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        };
        Tensor { name: name.into(), dims: hf_shape.iter().rev().map(|&d| d as u64).collect(), dtype, data }
    }

    /// The values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => self.data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        }
    }
}

/// A GGUF file being built: metadata in insertion order, then tensors.
#[derive(Debug, Default)]
pub struct Gguf {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
}

impl Gguf {
    pub fn set(&mut self, key: &str, value: Value) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        for t in &self.tensors {
            let n: u64 = t.dims.iter().product();
            if n as usize * t.dtype.size() != t.data.len() {
                return Err(Error::Input(format!("GGUF tensor {}: {} bytes for dims {:?}", t.name, t.data.len(), t.dims)));
            }
        }
        let mut out = Vec::with_capacity(self.tensors.iter().map(|t| t.data.len() + ALIGNMENT).sum::<usize>() + (1 << 20));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.dtype.ggml().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + t.data.len()).next_multiple_of(ALIGNMENT);
        }
        pad(&mut out);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out);
        }
        Ok(out)
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    let tag = |out: &mut Vec<u8>, t: u32| out.extend_from_slice(&t.to_le_bytes());
    match v {
        Value::U32(x) => {
            tag(out, T_U32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::I32(x) => {
            tag(out, T_I32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::U64(x) => {
            tag(out, T_U64);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Int(x) => {
            tag(out, T_I64);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            tag(out, T_F32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F64(x) => {
            tag(out, T_F64);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(b) => {
            tag(out, T_BOOL);
            out.push(*b as u8);
        }
        Value::Str(s) => {
            tag(out, T_STRING);
            put_str(out, s);
        }
        Value::StrArray(a) => {
            tag(out, T_ARRAY);
            tag(out, T_STRING);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for s in a {
                put_str(out, s);
            }
        }
        Value::I32Array(a) => {
            tag(out, T_ARRAY);
            tag(out, T_I32);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Value::NumArray(a) => {
            tag(out, T_ARRAY);
            tag(out, T_F64);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

/// A cursor over the bytes of a file being read; every read checks the length.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| Error::Input(format!("GGUF: truncated at byte {} (wanted {n} more)", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::Input(format!("GGUF: a string at byte {} is not UTF-8", self.pos)))
    }
    /// A scalar of type `t` as i64 / f64 (for arrays and the generic cases).
    fn number(&mut self, t: u32) -> Result<f64> {
        Ok(match t {
            T_U8 | T_BOOL => self.take(1)?[0] as f64,
            T_I8 => self.take(1)?[0] as i8 as f64,
            T_U16 => u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as f64,
            T_I16 => i16::from_le_bytes(self.take(2)?.try_into().unwrap()) as f64,
            T_U32 => self.u32()? as f64,
            T_I32 => self.u32()? as i32 as f64,
            T_F32 => f32::from_le_bytes(self.take(4)?.try_into().unwrap()) as f64,
            T_U64 => self.u64()? as f64,
            T_I64 => self.u64()? as i64 as f64,
            T_F64 => f64::from_le_bytes(self.take(8)?.try_into().unwrap()),
            other => return Err(Error::Input(format!("GGUF: unknown value type {other}"))),
        })
    }
    fn value(&mut self) -> Result<Value> {
        let t = self.u32()?;
        Ok(match t {
            T_U32 => Value::U32(self.u32()?),
            T_I32 => Value::I32(self.u32()? as i32),
            T_U64 => Value::U64(self.u64()?),
            T_F32 => Value::F32(f32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            T_F64 => Value::F64(self.number(T_F64)?),
            T_BOOL => Value::Bool(self.take(1)?[0] != 0),
            T_STRING => Value::Str(self.string()?),
            T_ARRAY => {
                let et = self.u32()?;
                let n = self.u64()? as usize;
                match et {
                    T_STRING => Value::StrArray((0..n).map(|_| self.string()).collect::<Result<_>>()?),
                    T_I32 => Value::I32Array((0..n).map(|_| Ok(self.u32()? as i32)).collect::<Result<_>>()?),
                    _ => Value::NumArray((0..n).map(|_| self.number(et)).collect::<Result<_>>()?),
                }
            }
            _ => Value::Int(self.number(t)? as i64),
        })
    }
}

/// Parses a GGUF v3 file: its metadata (by key) and its tensors (F32 and F16 only).
pub fn read(bytes: &[u8]) -> Result<(BTreeMap<String, Value>, Vec<Tensor>)> {
    let mut r = Reader { b: bytes, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err(Error::Input("not a GGUF file (no GGUF magic)".into()));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(Error::Input(format!("GGUF version {version}; this reader reads version {VERSION}")));
    }
    let (n_tensors, n_kv) = (r.u64()? as usize, r.u64()? as usize);
    let mut meta = BTreeMap::new();
    for _ in 0..n_kv {
        let k = r.string()?;
        let v = r.value()?;
        meta.insert(k, v);
    }
    let align = meta.get("general.alignment").and_then(Value::as_u64).unwrap_or(ALIGNMENT as u64) as usize;
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.string()?;
        let nd = r.u32()? as usize;
        let dims: Vec<u64> = (0..nd).map(|_| r.u64()).collect::<Result<_>>()?;
        let t = r.u32()?;
        let dtype = DType::from_ggml(t).ok_or_else(|| Error::Input(format!("GGUF tensor {name}: ggml type {t} is not F32 or F16")))?;
        let offset = r.u64()? as usize;
        infos.push((name, dims, dtype, offset));
    }
    let data_start = r.pos.next_multiple_of(align);
    let mut tensors = Vec::with_capacity(n_tensors);
    for (name, dims, dtype, offset) in infos {
        if !offset.is_multiple_of(align) {
            return Err(Error::Input(format!("GGUF tensor {name}: offset {offset} is not a multiple of {align}")));
        }
        let n = dims.iter().product::<u64>() as usize * dtype.size();
        let start = data_start + offset;
        let data = bytes.get(start..start + n).ok_or_else(|| Error::Input(format!("GGUF tensor {name}: data past the end")))?;
        tensors.push(Tensor { name, dims, dtype, data: data.to_vec() });
    }
    Ok((meta, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let mut g = Gguf::default();
        g.set("general.architecture", Value::Str("llama".into()));
        g.set("general.alignment", Value::U32(32));
        g.set("llama.block_count", Value::U32(3));
        g.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        g.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
        g.set("tokenizer.ggml.tokens", Value::StrArray(vec!["a".into(), "Ġb".into(), "<|im_end|>".into()]));
        g.set("tokenizer.ggml.token_type", Value::I32Array(vec![1, 1, 3]));
        g.tensors.push(Tensor::from_f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F32));
        g.tensors.push(Tensor::from_f32("n", &[3], &[0.5, -1.0, 2.0], DType::F16));
        let bytes = g.to_bytes().unwrap();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
        let (meta, tensors) = read(&bytes).unwrap();
        assert_eq!(meta.len(), 7);
        assert_eq!(meta["llama.block_count"], Value::U32(3));
        assert_eq!(meta["tokenizer.ggml.token_type"], Value::I32Array(vec![1, 1, 3]));
        assert_eq!(meta["tokenizer.ggml.tokens"], g.get("tokenizer.ggml.tokens").unwrap().clone());
        assert_eq!(meta["tokenizer.ggml.add_bos_token"], Value::Bool(false));
        assert_eq!(tensors[0].dims, vec![3, 2], "dims are stored fastest-varying first");
        assert_eq!(tensors[0].to_f32(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(tensors[1].to_f32(), vec![0.5, -1.0, 2.0]);
        // The data section and every tensor start on the alignment.
        let second = bytes.len() - 32;
        assert_eq!(second % 32, 0);
        assert_eq!(&bytes[second..second + 6], &tensors[1].data[..]);
        assert!(read(&bytes[..bytes.len() - 40]).is_err(), "a truncated file is an error");
    }
}
