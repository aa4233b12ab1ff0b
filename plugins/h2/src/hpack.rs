//! HPACK (RFC 7541) header block decoding, one decoder per connection and
//! direction. Pure and bounded: integers are capped, strings are at most
//! the block's size, the dynamic table is bounded by its own size limit and
//! `MAX_TABLE_SIZE`, and a block decodes to at most `MAX_HEADERS` fields.

use crate::tables::{HUFFMAN_CODES, STATIC_TABLE};
use std::collections::VecDeque;
use std::sync::OnceLock;

/// Largest dynamic table a peer may ask for (SETTINGS_HEADER_TABLE_SIZE is
/// rarely above 64 KiB).
pub const MAX_TABLE_SIZE: usize = 1 << 20;
/// Fields one header block may decode to.
pub const MAX_HEADERS: usize = 1024;
/// Largest integer accepted (well above any real index or length).
const MAX_INT: u64 = 1 << 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a representation.
    Truncated,
    /// An index that is in neither table, which after a mid-connection join
    /// means the dynamic table is unknown.
    UnknownIndex(u64),
    Huffman,
    Integer,
    TableSizeUpdate,
    TooManyHeaders,
}

/// Decoded header fields, in order.
pub type Fields = Vec<(String, String)>;

/// A per-direction HPACK decoder with its dynamic table.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { table: VecDeque::new(), size: 0, max_size: 4096 }
    }
}

fn entry_size(name: &str, value: &str) -> usize {
    32 + name.len() + value.len()
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }

    fn insert(&mut self, name: String, value: String) {
        let size = entry_size(&name, &value);
        self.size += size;
        self.table.push_front((name, value));
        self.evict();
    }

    fn get(&self, index: u64) -> Result<(String, String), Error> {
        let i = usize::try_from(index).map_err(|_| Error::UnknownIndex(index))?;
        if i == 0 {
            return Err(Error::UnknownIndex(index));
        }
        if i <= STATIC_TABLE.len() {
            let (n, v) = STATIC_TABLE[i - 1];
            return Ok((n.to_string(), v.to_string()));
        }
        self.table.get(i - STATIC_TABLE.len() - 1).cloned().ok_or(Error::UnknownIndex(index))
    }

    /// Decodes one complete header block; an unknown index is an error.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let (fields, unknown) = self.decode_lenient(block)?;
        match unknown {
            Some(index) => Err(Error::UnknownIndex(index)),
            None => Ok(fields),
        }
    }

    /// Decodes what can be decoded after a mid-connection join: fields that
    /// name an unknown dynamic entry are left out (their literals still
    /// enter the table, so later indices stay aligned), and the first
    /// unknown index is returned alongside.
    pub fn decode_lenient(&mut self, block: &[u8]) -> Result<(Fields, Option<u64>), Error> {
        let mut unknown = None;
        let fields = self.decode_inner(block, &mut unknown)?;
        Ok((fields, unknown))
    }

    fn decode_inner(&mut self, block: &[u8], unknown: &mut Option<u64>) -> Result<Vec<(String, String)>, Error> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < block.len() {
            if out.len() >= MAX_HEADERS {
                return Err(Error::TooManyHeaders);
            }
            let b = block[at];
            if b & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                match self.get(index) {
                    Ok(field) => out.push(field),
                    Err(Error::UnknownIndex(i)) => {
                        unknown.get_or_insert(i);
                    }
                    Err(e) => return Err(e),
                }
            } else if b & 0x40 != 0 {
                let (name, value, known) = self.literal(block, &mut at, 6, unknown)?;
                self.insert(name.clone(), value.clone());
                if known {
                    out.push((name, value));
                }
            } else if b & 0x20 != 0 {
                let size = integer(block, &mut at, 5)?;
                let size = usize::try_from(size).map_err(|_| Error::TableSizeUpdate)?;
                if size > MAX_TABLE_SIZE {
                    return Err(Error::TableSizeUpdate);
                }
                self.max_size = size;
                self.evict();
            } else {
                // Without indexing (0000) or never indexed (0001).
                let (name, value, known) = self.literal(block, &mut at, 4, unknown)?;
                if known {
                    out.push((name, value));
                }
            }
        }
        Ok(out)
    }

    /// A literal field; `false` when its name is an unknown dynamic entry.
    fn literal(
        &self,
        block: &[u8],
        at: &mut usize,
        prefix: u8,
        unknown: &mut Option<u64>,
    ) -> Result<(String, String, bool), Error> {
        let index = integer(block, at, prefix)?;
        let (name, known) = if index == 0 {
            (string(block, at)?, true)
        } else {
            match self.get(index) {
                Ok((n, _)) => (n, true),
                Err(Error::UnknownIndex(i)) => {
                    unknown.get_or_insert(i);
                    (String::from("?"), false)
                }
                Err(e) => return Err(e),
            }
        };
        Ok((name, string(block, at)?, known))
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn integer(block: &[u8], at: &mut usize, n: u8) -> Result<u64, Error> {
    let first = *block.get(*at).ok_or(Error::Truncated)?;
    *at += 1;
    let max = (1u64 << n) - 1;
    let mut v = u64::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*at).ok_or(Error::Truncated)?;
        *at += 1;
        // Zero-valued continuation bytes do not grow `v`, so the shift
        // itself needs a bound (found by fuzzing).
        if shift > 28 {
            return Err(Error::Integer);
        }
        v += u64::from(b & 0x7f) << shift;
        if v > MAX_INT {
            return Err(Error::Integer);
        }
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

/// A string literal, Huffman-coded or not (RFC 7541 §5.2).
fn string(block: &[u8], at: &mut usize) -> Result<String, Error> {
    let huffman = block.get(*at).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = usize::try_from(integer(block, at, 7)?).map_err(|_| Error::Integer)?;
    let end = at.checked_add(len).ok_or(Error::Truncated)?;
    let raw = block.get(*at..end).ok_or(Error::Truncated)?;
    *at = end;
    let bytes = if huffman { huffman_decode(raw)? } else { raw.to_vec() };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A binary decoding tree: `nodes[i] = [child for 0, child for 1]`, where a
/// child is another node (`< LEAF`) or a symbol (`LEAF + symbol`).
struct Tree {
    nodes: Vec<[u16; 2]>,
}

const LEAF: u16 = 0x8000;
const EMPTY: u16 = u16::MAX;

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut nodes = vec![[EMPTY, EMPTY]];
        for (symbol, &(code, bits)) in HUFFMAN_CODES.iter().enumerate() {
            let mut node = 0usize;
            for i in (0..bits).rev() {
                let bit = ((code >> i) & 1) as usize;
                if i == 0 {
                    nodes[node][bit] = LEAF + symbol as u16;
                } else {
                    if nodes[node][bit] == EMPTY {
                        nodes.push([EMPTY, EMPTY]);
                        nodes[node][bit] = (nodes.len() - 1) as u16;
                    }
                    node = usize::from(nodes[node][bit]);
                }
            }
        }
        Tree { nodes }
    })
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2, Appendix B). Padding must
/// be fewer than 8 bits, all ones; EOS inside the string is an error.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let tree = tree();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let mut node = 0usize;
    let mut depth = 0u32;
    let mut all_ones = true;
    for &byte in input {
        for i in (0..8).rev() {
            let bit = usize::from((byte >> i) & 1);
            all_ones &= bit == 1;
            depth += 1;
            let next = tree.nodes[node][bit];
            if next == EMPTY {
                return Err(Error::Huffman);
            }
            if next >= LEAF {
                let symbol = next - LEAF;
                if symbol == 256 {
                    return Err(Error::Huffman);
                }
                out.push(symbol as u8);
                node = 0;
                depth = 0;
                all_ones = true;
            } else {
                node = usize::from(next);
            }
        }
    }
    if depth >= 8 || !all_ones {
        return Err(Error::Huffman);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        let mut d = Decoder::new();
        let first = d.decode(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")).unwrap();
        assert_eq!(
            first,
            pairs(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
        );
        let second = d.decode(&hex("8286 84be 5808 6e6f 2d63 6163 6865")).unwrap();
        assert_eq!(second.last().unwrap(), &("cache-control".to_string(), "no-cache".to_string()));
        assert_eq!(second[3].1, "www.example.com");
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = Decoder::new();
        let first = d.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(first[3], (":authority".to_string(), "www.example.com".to_string()));
        let second = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[4], ("cache-control".to_string(), "no-cache".to_string()));
        let third = d.decode(&hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")).unwrap();
        assert_eq!(
            third,
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.table_len(), 3);
    }

    #[test]
    fn unknown_dynamic_index_after_a_mid_stream_join() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&hex("82be")), Err(Error::UnknownIndex(62)));
        let (fields, unknown) = Decoder::new().decode_lenient(&hex("82be 84")).unwrap();
        assert_eq!(fields, pairs(&[(":method", "GET"), (":path", "/")]));
        assert_eq!(unknown, Some(62));
    }

    #[test]
    fn hostile_blocks_never_panic() {
        let mut seed = 1u32;
        for len in 0..400 {
            let block: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = Decoder::new().decode(&block);
            let _ = huffman_decode(&block);
        }
        assert_eq!(integer(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut 0, 7), Err(Error::Integer));
        let mut padded = vec![0x7f];
        padded.extend_from_slice(&[0x80; 20]);
        padded.push(0x01);
        assert_eq!(integer(&padded, &mut 0, 7), Err(Error::Integer));
    }
}
