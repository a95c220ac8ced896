//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! decoded into the JSON objects the rest of the server handles.
//!
//! client-go's generated clients, and so kubectl's imperative commands (`create secret`,
//! `create configmap`, `create namespace`, `create job`, `auth can-i`, ...), always send built-in
//! kinds as protobuf and never fall back to JSON: client-go retries in JSON after a 415 only for
//! CBOR. So a server that wants those commands to work must read protobuf. Responses stay JSON,
//! which those clients accept too (`Accept: application/vnd.kubernetes.protobuf,application/json`).
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` {typeMeta, raw, contentEncoding,
//! contentType} whose `raw` is the object's message. The messages are decoded by a small wire
//! reader driven by field tables ([`messages`]) for exactly the kinds served here and written by
//! clients, rather than by generated code for all of Kubernetes (`k8s-pb` and prost): that would
//! add a code generator's output for hundreds of kinds and a second set of types beside
//! k8s-openapi's, to decode a dozen. A field the tables do not know is refused (415) rather than
//! dropped, so nothing a client sent is silently lost; such an object can always be sent as JSON.
//!
//! The review and token requests are read a few fields at a time by number ([`fields`]), over the
//! same wire reader.

pub mod fields;
mod messages;
mod wire;

use base64::Engine as _;
use serde_json::{Map, Value};

use messages::{Field, Message, Ty};
use wire::{Reader, WireType};

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf body.
const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    /// The bytes are not valid protobuf (or not the Kubernetes envelope).
    #[error("the request body is not valid protobuf: {0}")]
    Malformed(String),
    /// A kind this server does not decode from protobuf.
    #[error("{api_version}, Kind={kind} cannot be decoded from protobuf by this server")]
    UnknownKind { api_version: String, kind: String },
    /// A field of a known message that the tables do not have.
    #[error("field number {number} of protobuf message {message} cannot be decoded by this server")]
    UnknownField { message: &'static str, number: u32 },
    /// A `runtime.Unknown` with a content encoding (none is defined).
    #[error("protobuf content encoding {0:?} is not supported")]
    ContentEncoding(String),
}

impl ProtobufError {
    /// Whether the body was well-formed but in a form this server does not read (415), as
    /// opposed to broken (400).
    pub fn is_unsupported(&self) -> bool {
        !matches!(self, ProtobufError::Malformed(_))
    }
}

/// Whether objects of `api_version`/`kind` can be decoded from protobuf.
pub fn decodes(api_version: &str, kind: &str) -> bool {
    messages::kind(api_version, kind).is_some()
}

/// Decodes a Kubernetes protobuf body into the JSON form of its object, `apiVersion` and `kind`
/// first.
///
/// # Errors
/// [`ProtobufError`] for a body that is malformed or that this server does not decode.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        ProtobufError::Malformed("the body does not start with \"k8s\\0\"".into())
    })?;
    let unknown = Envelope::read(envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(unknown.content_encoding));
    }
    let message = messages::kind(&unknown.api_version, &unknown.kind).ok_or_else(|| {
        ProtobufError::UnknownKind {
            api_version: unknown.api_version.clone(),
            kind: unknown.kind.clone(),
        }
    })?;
    let fields = decode_message(unknown.raw, message)?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), unknown.api_version.into());
    object.insert("kind".into(), unknown.kind.into());
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}

/// `runtime.Unknown`: {typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2, contentEncoding = 3,
/// contentType = 4}.
#[derive(Default)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn read(buf: &'a [u8]) -> Result<Envelope<'a>, ProtobufError> {
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec())
                .map_err(|_| ProtobufError::Malformed("the type meta is not valid UTF-8".into()))
        };
        let mut env = Envelope::default();
        let mut r = Reader::new(buf);
        while let Some((number, wire)) = r.tag()? {
            match (number, wire) {
                (1, WireType::Len) => {
                    let mut tm = Reader::new(r.len_delimited()?);
                    while let Some((n, w)) = tm.tag()? {
                        match (n, w) {
                            (1, WireType::Len) => env.api_version = text(tm.len_delimited()?)?,
                            (2, WireType::Len) => env.kind = text(tm.len_delimited()?)?,
                            _ => tm.skip(w)?,
                        }
                    }
                }
                (2, WireType::Len) => env.raw = r.len_delimited()?,
                (3, WireType::Len) => env.content_encoding = text(r.len_delimited()?)?,
                _ => r.skip(wire)?,
            }
        }
        Ok(env)
    }
}

fn malformed(message: &Message, field: &Field, why: &str) -> ProtobufError {
    ProtobufError::Malformed(format!("{}.{}: {why}", message.name, field.name))
}

/// Decodes one message into a JSON object per its table.
fn decode_message(buf: &[u8], message: &Message) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.tag()? {
        let field = message
            .fields
            .iter()
            .find(|f| f.number == number)
            .ok_or(ProtobufError::UnknownField { message: message.name, number })?;
        if field.repeated && wire == WireType::Len && field.ty.is_varint() {
            // A packed list of numbers.
            let mut packed = Reader::new(r.len_delimited()?);
            while !packed.is_empty() {
                let v = scalar(&mut packed, WireType::Varint, message, field)?;
                push(&mut out, field.name, v);
            }
            continue;
        }
        let value = match &field.ty {
            Ty::Message(m) => {
                let bytes = len_field(&mut r, wire, message, field)?;
                decode_message(bytes, m)?
            }
            Ty::Inline(m) => {
                // An embedded struct: its members are the parent's members in JSON.
                let bytes = len_field(&mut r, wire, message, field)?;
                if let Value::Object(members) = decode_message(bytes, m)? {
                    out.extend(members);
                }
                continue;
            }
            Ty::StringMap | Ty::BytesMap | Ty::QuantityMap => {
                let bytes = len_field(&mut r, wire, message, field)?;
                let (key, value) = map_entry(bytes, &field.ty, message, field)?;
                let map = out.entry(field.name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
                continue;
            }
            _ => scalar(&mut r, wire, message, field)?,
        };
        if field.repeated {
            push(&mut out, field.name, value);
        } else if is_zero(&value) && !field.pointer {
            // gogo-protobuf writes every non-pointer field, zero or not; JSON omits zeros
            // (`omitempty`), and a zero time is JSON `null`.
            out.remove(field.name);
        } else {
            out.insert(field.name.into(), value);
        }
    }
    Ok(Value::Object(out))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn push(out: &mut Map<String, Value>, name: &str, v: Value) {
    let list = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        list.push(v);
    }
}

fn len_field<'a>(
    r: &mut Reader<'a>,
    wire: WireType,
    message: &Message,
    field: &Field,
) -> Result<&'a [u8], ProtobufError> {
    if wire != WireType::Len {
        return Err(malformed(message, field, "expected a length-delimited value"));
    }
    r.len_delimited()
}

/// One scalar (or scalar-like message: time, quantity, managed fields) as JSON.
fn scalar(
    r: &mut Reader<'_>,
    wire: WireType,
    message: &Message,
    field: &Field,
) -> Result<Value, ProtobufError> {
    let utf8 = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| malformed(message, field, "not valid UTF-8"))
    };
    Ok(match field.ty {
        Ty::Int | Ty::Bool => {
            if wire != WireType::Varint {
                return Err(malformed(message, field, "expected a varint"));
            }
            let v = r.varint()?;
            if matches!(field.ty, Ty::Bool) {
                Value::Bool(v != 0)
            } else {
                // int32 and int64 are both two's complement in 64 bits on the wire.
                Value::from(v.cast_signed())
            }
        }
        Ty::String => Value::String(utf8(len_field(r, wire, message, field)?)?),
        Ty::Bytes => Value::String(
            base64::engine::general_purpose::STANDARD.encode(len_field(r, wire, message, field)?),
        ),
        Ty::Time => {
            let bytes = len_field(r, wire, message, field)?;
            if bytes.is_empty() {
                // The zero time (JSON `null`).
                Value::Null
            } else {
                // metav1.Time is whole seconds: its protobuf form drops the nanoseconds too.
                let t = decode_message(bytes, &messages::TIME)?;
                let seconds = t.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                let ts = jiff::Timestamp::from_second(seconds)
                    .map_err(|e| malformed(message, field, &e.to_string()))?;
                Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
        }
        Ty::Quantity => {
            let q = decode_message(len_field(r, wire, message, field)?, &messages::QUANTITY)?;
            q.get("string").cloned().unwrap_or_else(|| Value::String(String::new()))
        }
        Ty::FieldsV1 => {
            let f = decode_message(len_field(r, wire, message, field)?, &messages::FIELDS_V1)?;
            let raw = match f.get("Raw").and_then(Value::as_str) {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| malformed(message, field, &e.to_string()))?,
                None => return Ok(Value::Object(Map::new())),
            };
            serde_json::from_slice(&raw).map_err(|e| malformed(message, field, &e.to_string()))?
        }
        Ty::Message(_) | Ty::Inline(_) | Ty::StringMap | Ty::BytesMap | Ty::QuantityMap => {
            return Err(malformed(message, field, "not a scalar"));
        }
    })
}

/// One `map<string, V>` entry: a message {key = 1, value = 2}.
fn map_entry(
    buf: &[u8],
    ty: &Ty,
    message: &Message,
    field: &Field,
) -> Result<(String, Value), ProtobufError> {
    let value_ty = match ty {
        Ty::StringMap => Ty::String,
        Ty::BytesMap => Ty::Bytes,
        _ => Ty::Quantity,
    };
    let key_field = Field::new(1, "key", Ty::String);
    let value_field = Field::new(2, field.name, value_ty);
    let (mut key, mut value) = (String::new(), None);
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.tag()? {
        match number {
            1 => {
                key = scalar(&mut r, wire, message, &key_field)?.as_str().unwrap_or("").to_string();
            }
            2 => value = Some(scalar(&mut r, wire, message, &value_field)?),
            _ => r.skip(wire)?,
        }
    }
    // A missing value is the type's zero value, as in every protobuf map.
    let value = value.unwrap_or_else(|| Value::String(String::new()));
    Ok((key, value))
}

#[cfg(test)]
mod tests;
