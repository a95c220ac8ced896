//! Reading a few fields of a protobuf-encoded Kubernetes object by field number.
//!
//! kubectl sends the review and token requests (`auth can-i`, `auth whoami`, `create token`) as
//! `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a `runtime.Unknown` whose field 2
//! is the object's own message. Those requests carry a handful of strings and numbers, so they are
//! read here field by field rather than through generated types.

use super::MAGIC;
use super::wire::{Reader, WireType};

/// One encoded message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a>(&'a [u8]);

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Message<'a> {
    /// The object inside a `k8s\0` envelope; `None` when the body is not one.
    pub fn from_envelope(body: &'a [u8]) -> Option<Message<'a>> {
        let unknown = Message(body.strip_prefix(MAGIC)?);
        unknown.message(2)
    }

    /// Every (field number, value) in order; `None` when the bytes are not a valid message.
    fn fields(&self) -> Option<Vec<(u64, Wire<'a>)>> {
        let mut reader = Reader::new(self.0);
        let mut out = Vec::new();
        while let Some((number, wire)) = reader.tag().ok()? {
            let value = match wire {
                WireType::Varint => Wire::Varint(reader.varint().ok()?),
                WireType::Len => Wire::Bytes(reader.len_delimited().ok()?),
                WireType::Fixed64 | WireType::Fixed32 => {
                    reader.skip(wire).ok()?;
                    Wire::Other
                }
            };
            out.push((u64::from(number), value));
        }
        Some(out)
    }

    /// Whether the bytes parse as a message.
    pub fn is_valid(&self) -> bool {
        self.fields().is_some()
    }

    /// The last occurrence of embedded message `field`.
    pub fn message(&self, field: u64) -> Option<Message<'a>> {
        self.fields()?.into_iter().rev().find_map(|(n, v)| match v {
            Wire::Bytes(b) if n == field => Some(Message(b)),
            _ => None,
        })
    }

    /// Every occurrence of string `field` (a repeated string), in order.
    pub fn strings(&self, field: u64) -> Vec<String> {
        self.fields()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, v)| match v {
                Wire::Bytes(b) if n == field => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// String `field`, empty when absent.
    pub fn string(&self, field: u64) -> String {
        self.strings(field).pop().unwrap_or_default()
    }

    /// Integer `field` (int64 as a varint).
    pub fn int(&self, field: u64) -> Option<i64> {
        self.fields()?.into_iter().rev().find_map(|(n, v)| match v {
            Wire::Varint(x) if n == field => Some(x as i64),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kubectl_create_token_sends() {
        // `kubectl create token foo --duration=20m --audience=aud1 --audience=aud2` (v1.32).
        let body: &[u8] =
            b"k8s\x00\x0a\x28\x0a\x18authentication.k8s.io/v1\x12\x0cTokenRequest\x12\x29\
            \x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\
            \x12\x0f\x0a\x04aud1\x0a\x04aud2\x20\xb0\x09\x1a\x04\x0a\x00\x12\x00\x1a\x00\x22\x00";
        let request = Message::from_envelope(body).unwrap();
        let spec = request.message(2).unwrap();
        assert_eq!(spec.strings(1), ["aud1", "aud2"]);
        assert_eq!(spec.int(4), Some(1200));
        assert!(spec.message(3).is_none());
    }

    #[test]
    fn refuses_truncated_and_foreign_bodies() {
        assert!(Message::from_envelope(b"{\"kind\":\"x\"}").is_none());
        assert!(!Message(b"\x0a\x05ab").is_valid());
        assert!(Message(b"").is_valid());
    }
}
