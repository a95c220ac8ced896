//! The protobuf wire format, read-only: varints, tags and length-delimited fields.
//! (<https://protobuf.dev/programming-guides/encoding/>.)

use super::ProtobufError;

/// How a field's value is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// A cursor over one message's bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

fn malformed(what: &str) -> ProtobufError {
    ProtobufError::Malformed(what.to_string())
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(malformed("a varint is truncated or longer than 10 bytes"))
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    pub fn tag(&mut self) -> Result<Option<(u32, WireType)>, ProtobufError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            other => return Err(malformed(&format!("wire type {other} is not supported"))),
        };
        let number = u32::try_from(tag >> 3)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| malformed("a field number is out of range"))?;
        Ok(Some((number, wire)))
    }

    /// A length-delimited value: bytes, a string, an embedded message or a packed list.
    pub fn len_delimited(&mut self) -> Result<&'a [u8], ProtobufError> {
        let len = usize::try_from(self.varint()?)
            .map_err(|_| malformed("a length does not fit in memory"))?;
        if len > self.buf.len() {
            return Err(malformed("a length-delimited field runs past the end of its message"));
        }
        let (value, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(value)
    }

    /// Skips a value of wire type `wire` (a field the caller does not read).
    pub fn skip(&mut self, wire: WireType) -> Result<(), ProtobufError> {
        let n = match wire {
            WireType::Varint => return self.varint().map(|_| ()),
            WireType::Len => return self.len_delimited().map(|_| ()),
            WireType::Fixed64 => 8,
            WireType::Fixed32 => 4,
        };
        if n > self.buf.len() {
            return Err(malformed("a fixed-width field runs past the end of its message"));
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_tags_and_lengths_read() {
        // 300 as a varint, then field 2 (LEN) with 3 bytes, then field 1 (VARINT) = 1.
        let mut r = Reader::new(&[0xac, 0x02, 0x12, 0x03, b'a', b'b', b'c', 0x08, 0x01]);
        assert_eq!(r.varint().unwrap(), 300);
        assert_eq!(r.tag().unwrap(), Some((2, WireType::Len)));
        assert_eq!(r.len_delimited().unwrap(), b"abc");
        assert_eq!(r.tag().unwrap(), Some((1, WireType::Varint)));
        r.skip(WireType::Varint).unwrap();
        assert_eq!(r.tag().unwrap(), None);
    }

    #[test]
    fn truncated_input_is_malformed() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        let mut r = Reader::new(&[0x12, 0x05, b'a']);
        r.tag().unwrap();
        assert!(r.len_delimited().is_err());
        assert!(Reader::new(&[0x0b]).tag().is_err(), "wire type 3 (groups) is not read");
        assert!(Reader::new(&[0x00]).tag().is_err(), "field number 0 does not exist");
    }
}
