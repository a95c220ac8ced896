//! The values a template works on, printed and compared the way Go's `text/template` does.

use std::collections::BTreeMap;
use std::fmt;

/// A value in a template: the data passed in, literals, and function results.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Go's invalid value: a missing map entry reached through a field (`.Parameters.absent`).
    /// Prints as `<no value>`, is false, and is nil when passed to a function.
    Missing,
    /// Go's `nil`.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<Value>),
    /// A `map[string]interface{}` (e.g. from `dict`): a missing key indexes to nil.
    Map(BTreeMap<String, Value>),
    /// A `map[string]string` (e.g. `.Parameters`): a missing key indexes to `""`.
    StringMap(BTreeMap<String, String>),
}

impl Value {
    /// Go's notion of truth used by `if`, `with`, `and`, `or` and `not`.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Missing | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::StringMap(m) => !m.is_empty(),
        }
    }

    /// Whether the value is nil or invalid.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Missing | Value::Nil)
    }

    /// The Go type name used in error messages and `%!verb(type=value)` output.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Missing | Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::String(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::StringMap(_) => "map[string]string",
        }
    }

    /// A field of a map (`.name`). A missing entry is [`Value::Missing`], as in Go.
    pub(crate) fn field(&self, name: &str) -> Result<Value, String> {
        match self {
            Value::Map(m) => Ok(m.get(name).cloned().unwrap_or(Value::Missing)),
            Value::StringMap(m) => {
                Ok(m.get(name).map_or(Value::Missing, |s| Value::String(s.clone())))
            }
            // Go returns the zero value for a field of an invalid receiver.
            Value::Missing => Ok(Value::Missing),
            Value::Nil => Err(format!("nil pointer evaluating interface {{}}.{name}")),
            other => Err(format!("can't evaluate field {name} in type {}", other.type_name())),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<BTreeMap<String, String>> for Value {
    fn from(m: BTreeMap<String, String>) -> Self {
        Value::StringMap(m)
    }
}

/// JSON data as a template sees it after Go's `encoding/json` decodes it into `interface{}`:
/// objects are `map[string]interface{}`, arrays `[]interface{}`, `null` is nil. Integers stay
/// integers (Go would make every number a float64) so that `printf "%d"` and `range 3` work on
/// them as template authors expect.
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                n.as_i64().map_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Int)
            }
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from).collect()),
            serde_json::Value::Object(m) => {
                Value::Map(m.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect())
            }
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::from(&v)
    }
}

/// Formats a float like Go's `%v` (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() };
    }
    let exp = if f == 0.0 { 0 } else { f.abs().log10().floor() as i64 };
    if !(-4..21).contains(&exp) {
        // Rust gives `1e21`, Go `1e+21`; mantissa digits are the shortest round-trip in both.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        format!("{f}")
    }
}

impl fmt::Display for Value {
    /// Prints like Go's `fmt.Print`, which is what `{{ }}` does with a value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Missing => f.write_str("<no value>"),
            Value::Nil => f.write_str("<nil>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&format_float(*x)),
            Value::String(s) => f.write_str(s),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    match item {
                        // Inside a composite, nil prints as `<nil>` even when invalid.
                        Value::Missing => f.write_str("<nil>")?,
                        other => write!(f, "{other}")?,
                    }
                }
                f.write_str("]")
            }
            Value::Map(m) => write_map(f, m),
            Value::StringMap(m) => write_map(f, m),
        }
    }
}

/// A map as Go's `fmt` prints one: `map[k1:v1 k2:v2]`, keys in order.
fn write_map(f: &mut fmt::Formatter<'_>, m: &BTreeMap<String, impl fmt::Display>) -> fmt::Result {
    f.write_str("map[")?;
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{k}:{v}")?;
    }
    f.write_str("]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_float(3.5), "3.5");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(1.5e-7), "1.5e-07");
        assert_eq!(format_float(100.0), "100");
    }

    #[test]
    fn composites_print_like_go() {
        let list = Value::List(vec![Value::Int(1), "a".into(), Value::Nil]);
        assert_eq!(list.to_string(), "[1 a <nil>]");
        let map: BTreeMap<String, String> =
            [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        assert_eq!(Value::from(map).to_string(), "map[a:1 b:2]");
    }

    #[test]
    fn json_becomes_go_interface_values() {
        let v = Value::from(serde_json::json!({
            "n": 3, "f": 1.5, "big": u64::MAX, "s": "x", "b": true, "z": null, "l": [1, "a"]
        }));
        let Value::Map(m) = v else { panic!("not a map: {v:?}") };
        assert_eq!(m["n"], Value::Int(3));
        assert_eq!(m["f"], Value::Float(1.5));
        assert_eq!(m["big"], Value::Float(u64::MAX as f64));
        assert_eq!(m["s"], Value::from("x"));
        assert_eq!(m["b"], Value::Bool(true));
        assert_eq!(m["z"], Value::Nil);
        assert_eq!(m["l"], Value::List(vec![Value::Int(1), Value::from("a")]));
    }
}
