//! Byte encodings for what the store writes to its log and its database.
//!
//! Hand-rolled and length-prefixed because the shapes are tiny and fixed; every decoder
//! checks lengths and returns [`StoreError::Corrupt`] instead of panicking on short input.

use super::{Op, Precondition, StoreError};

/// Appends a length-prefixed byte string (ops' keys and values, records, events).
pub(super) fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over bytes being decoded.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let left = self.bytes.len();
        let (head, tail) = self
            .bytes
            .split_at_checked(n)
            .ok_or_else(|| StoreError::Corrupt(format!("wanted {n} bytes, {left} left")))?;
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(buf))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        self.take(u32::from_be_bytes(buf) as usize)
    }

    pub(super) fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| StoreError::Corrupt("key is not UTF-8".into()))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encodes the ops of one write as a Raft entry's data.
pub(super) fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        push_bytes(&mut out, op.key.as_bytes());
        let (tag, rev) = match op.precondition {
            Precondition::None => (0u8, 0),
            Precondition::Absent => (1, 0),
            Precondition::Exists => (2, 0),
            Precondition::Revision(r) => (3, r),
        };
        out.push(tag);
        out.extend_from_slice(&rev.to_be_bytes());
        match &op.value {
            Some(v) => {
                out.push(1);
                push_bytes(&mut out, v);
            }
            None => out.push(0),
        }
    }
    out
}

/// Decodes what [`encode_ops`] wrote.
pub(super) fn decode_ops(data: &[u8]) -> Result<Vec<Op>, StoreError> {
    let mut r = Reader::new(data);
    let mut ops = Vec::new();
    while !r.is_empty() {
        let (key, tag, rev) = (r.string()?, r.u8()?, r.u64()?);
        let precondition = match tag {
            0 => Precondition::None,
            1 => Precondition::Absent,
            2 => Precondition::Exists,
            3 => Precondition::Revision(rev),
            t => return Err(StoreError::Corrupt(format!("unknown precondition tag {t}"))),
        };
        let value = match r.u8()? {
            0 => None,
            _ => Some(r.bytes()?.to_vec()),
        };
        ops.push(Op {
            key,
            value,
            precondition,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = vec![
            Op::put("/a", b"{}".to_vec(), Precondition::Absent),
            Op::put("/b", vec![], Precondition::Revision(7)),
            Op::delete("/c", Precondition::Exists),
            Op::delete("/d", Precondition::None),
        ];
        assert_eq!(decode_ops(&encode_ops(&ops)).expect("decodes"), ops);
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let data = encode_ops(&[Op::put("/a", b"value".to_vec(), Precondition::None)]);
        for cut in 0..data.len() {
            if cut == 0 {
                continue;
            }
            assert!(decode_ops(&data[..cut]).is_err(), "cut at {cut}");
        }
    }
}
