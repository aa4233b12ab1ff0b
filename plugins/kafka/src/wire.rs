//! Kafka wire primitives: big-endian integers, (compact) strings and
//! arrays, unsigned varints and tagged fields. Every read is bounds-checked;
//! a short read is `None`.

#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pub at: usize,
}

/// Elements an array may claim before it is not believed.
const MAX_ARRAY: usize = 100_000;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.buf.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    pub fn i8(&mut self) -> Option<i8> {
        Some(self.bytes(1)?[0] as i8)
    }
    pub fn i16(&mut self) -> Option<i16> {
        let b = self.bytes(2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        let b = self.bytes(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i64(&mut self) -> Option<i64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_be_bytes(a))
    }

    pub fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bytes(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// `STRING` / `NULLABLE_STRING` (i16 length, -1 = null).
    pub fn string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8_lossy(self.bytes(len as usize)?).into_owned()))
    }

    /// `COMPACT_STRING` / `COMPACT_NULLABLE_STRING` (uvarint length + 1).
    pub fn compact_string(&mut self) -> Option<Option<String>> {
        let len = self.uvarint()?;
        if len == 0 {
            return Some(None);
        }
        let b = self.bytes(usize::try_from(len - 1).ok()?)?;
        Some(Some(String::from_utf8_lossy(b).into_owned()))
    }

    pub fn str(&mut self, flexible: bool) -> Option<Option<String>> {
        if flexible { self.compact_string() } else { self.string() }
    }

    /// Array length; `None` inside means a null array.
    pub fn array(&mut self, flexible: bool) -> Option<Option<usize>> {
        let n = if flexible {
            let n = self.uvarint()?;
            if n == 0 {
                return Some(None);
            }
            n - 1
        } else {
            let n = self.i32()?;
            if n < 0 {
                return Some(None);
            }
            n as u64
        };
        let n = usize::try_from(n).ok()?;
        (n <= MAX_ARRAY).then_some(Some(n))
    }

    /// `BYTES` / `COMPACT_BYTES` / `RECORDS`: skipped.
    pub fn skip_bytes(&mut self, flexible: bool) -> Option<()> {
        if flexible {
            let n = self.uvarint()?;
            if n > 0 {
                self.bytes(usize::try_from(n - 1).ok()?)?;
            }
        } else {
            let n = self.i32()?;
            if n > 0 {
                self.bytes(n as usize)?;
            }
        }
        Some(())
    }

    /// Tagged fields of a flexible structure: skipped.
    pub fn tagged(&mut self, flexible: bool) -> Option<()> {
        if !flexible {
            return Some(());
        }
        let n = self.uvarint()?;
        for _ in 0..n.min(MAX_ARRAY as u64) {
            self.uvarint()?;
            let len = self.uvarint()?;
            self.bytes(usize::try_from(len).ok()?)?;
        }
        Some(())
    }
}
