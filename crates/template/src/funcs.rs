//! The functions a template can call: Go's builtins and the sprig functions StorageProvider
//! templates use, each with the argument order and edge cases of the original.
//! `and`/`or` are evaluated lazily by the executor and only listed here.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::format::{go_quote, sprintf};
use crate::value::Value;

const NAMES: &[&str] = &[
    // Go text/template builtins.
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge", // sprig
    "default",
    "empty",
    "coalesce",
    "ternary",
    "required",
    "fail",
    "quote",
    "squote",
    "toString",
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "lower",
    "upper",
    "title",
    "replace",
    "hasPrefix",
    "hasSuffix",
    "contains",
    "b64enc",
    "b64dec",
    "indent",
    "nindent",
    "trunc",
    "repeat",
    "cat",
    "join",
    "splitList",
    "split",
    "list",
    "dict",
    "int",
    "int64",
    "atoi",
    "toJson",
];

pub(crate) fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

type Result<T> = std::result::Result<T, String>;

/// A `string` parameter: Go refuses any other type.
fn string(v: &Value) -> Result<&str> {
    match v {
        Value::String(s) => Ok(s),
        v if v.is_nil() => Err("invalid value; expected string".to_owned()),
        v => Err(format!("wrong type for value; expected string; got {}", v.type_name())),
    }
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        v if v.is_nil() => Err("invalid value; expected int".to_owned()),
        v => Err(format!("wrong type for value; expected int; got {}", v.type_name())),
    }
}

/// sprig's `strval`: strings as they are, anything else as `%v` prints it.
fn strval(v: &Value) -> String {
    match v {
        Value::Missing | Value::Nil => "<nil>".to_owned(),
        other => other.to_string(),
    }
}

/// sprig's `empty`.
fn empty(v: &Value) -> bool {
    !v.is_true()
}

fn arity(args: &[Value], n: usize) -> Result<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("wrong number of args: got {} want {n}", args.len()))
    }
}

pub(crate) fn call(name: &str, args: Vec<Value>) -> Result<Value> {
    let a = args.as_slice();
    let s = |v: String| Ok(Value::String(v));
    match name {
        "not" => {
            arity(a, 1)?;
            Ok(Value::Bool(!a[0].is_true()))
        }
        "len" => {
            arity(a, 1)?;
            let n = match &a[0] {
                Value::String(s) => s.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                Value::StringMap(m) => m.len(),
                v if v.is_nil() => return Err("len of nil pointer".to_owned()),
                v => return Err(format!("len of type {}", v.type_name())),
            };
            Ok(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        "index" => {
            let Some((item, keys)) = a.split_first() else {
                return Err("wrong number of args: got 0 want at least 1".to_owned());
            };
            keys.iter().try_fold(item.clone(), |item, key| index(&item, key))
        }
        "print" => {
            // fmt.Sprint puts spaces between operands when neither side is a string.
            let mut out = String::new();
            for (i, v) in a.iter().enumerate() {
                let is_str = |v: &Value| matches!(v, Value::String(_));
                if i > 0 && !is_str(v) && !is_str(&a[i - 1]) {
                    out.push(' ');
                }
                out.push_str(&strval(v));
            }
            s(out)
        }
        "println" => s(a.iter().map(strval).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let (format, rest) =
                a.split_first().ok_or("wrong number of args: got 0 want at least 1")?;
            s(sprintf(string(format)?, rest))
        }
        "eq" => {
            let (first, rest) = a.split_first().ok_or("missing argument for comparison")?;
            if rest.is_empty() {
                return Err("missing argument for comparison".to_owned());
            }
            for other in rest {
                if equal(first, other)? {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        "ne" => {
            arity(a, 2)?;
            Ok(Value::Bool(!equal(&a[0], &a[1])?))
        }
        "lt" | "le" | "gt" | "ge" => {
            arity(a, 2)?;
            let ord = order(&a[0], &a[1])?;
            Ok(Value::Bool(match name {
                "lt" => ord.is_lt(),
                "le" => ord.is_le(),
                "gt" => ord.is_gt(),
                _ => ord.is_ge(),
            }))
        }
        "default" => match a {
            [d] => Ok(d.clone()),
            [d, given] => Ok(if empty(given) { d.clone() } else { given.clone() }),
            _ => Err(format!("wrong number of args: got {} want 1 or 2", a.len())),
        },
        "empty" => {
            arity(a, 1)?;
            Ok(Value::Bool(empty(&a[0])))
        }
        "coalesce" => Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil)),
        "ternary" => {
            arity(a, 3)?;
            match &a[2] {
                Value::Bool(b) => Ok(if *b { a[0].clone() } else { a[1].clone() }),
                v => Err(format!("wrong type for value; expected bool; got {}", v.type_name())),
            }
        }
        "required" => {
            arity(a, 2)?;
            let warn = string(&a[0])?;
            match &a[1] {
                v if v.is_nil() => Err(warn.to_owned()),
                Value::String(v) if v.is_empty() => Err(warn.to_owned()),
                v => Ok(v.clone()),
            }
        }
        "fail" => {
            arity(a, 1)?;
            Err(string(&a[0])?.to_owned())
        }
        "quote" | "squote" => {
            let quoted: Vec<String> = a
                .iter()
                .filter(|v| !v.is_nil())
                .map(|v| {
                    if name == "quote" { go_quote(&strval(v)) } else { format!("'{}'", strval(v)) }
                })
                .collect();
            s(quoted.join(" "))
        }
        "toString" => {
            arity(a, 1)?;
            s(strval(&a[0]))
        }
        "trim" | "lower" | "upper" | "title" | "b64enc" | "b64dec" => {
            arity(a, 1)?;
            let v = string(&a[0])?;
            s(match name {
                "trim" => v.trim_matches(|c: char| c.is_whitespace()).to_owned(),
                "lower" => v.to_lowercase(),
                "upper" => v.to_uppercase(),
                "title" => title(v),
                "b64enc" => STANDARD.encode(v),
                // sprig returns the decoding error as the result rather than failing.
                _ => match STANDARD.decode(v) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => format!("illegal base64 data: {e}"),
                },
            })
        }
        "trimAll" | "trimPrefix" | "trimSuffix" | "hasPrefix" | "hasSuffix" | "contains" => {
            arity(a, 2)?;
            let (what, v) = (string(&a[0])?, string(&a[1])?);
            match name {
                "trimAll" => s(v.trim_matches(|c| what.contains(c)).to_owned()),
                "trimPrefix" => s(v.strip_prefix(what).unwrap_or(v).to_owned()),
                "trimSuffix" => s(v.strip_suffix(what).unwrap_or(v).to_owned()),
                "hasPrefix" => Ok(Value::Bool(v.starts_with(what))),
                "hasSuffix" => Ok(Value::Bool(v.ends_with(what))),
                _ => Ok(Value::Bool(v.contains(what))),
            }
        }
        "replace" => {
            arity(a, 3)?;
            s(string(&a[2])?.replace(string(&a[0])?, string(&a[1])?))
        }
        "indent" | "nindent" => {
            arity(a, 2)?;
            let pad = " ".repeat(usize::try_from(int(&a[0])?).unwrap_or(0));
            let text = format!("{pad}{}", string(&a[1])?.replace('\n', &format!("\n{pad}")));
            s(if name == "nindent" { format!("\n{text}") } else { text })
        }
        "trunc" => {
            arity(a, 2)?;
            let (n, v) = (int(&a[0])?, string(&a[1])?);
            let chars: Vec<char> = v.chars().collect();
            let len = i64::try_from(chars.len()).unwrap_or(i64::MAX);
            let kept: String = if n < 0 && len + n > 0 {
                chars[usize::try_from(len + n).unwrap_or(0)..].iter().collect()
            } else if n >= 0 && len > n {
                chars[..usize::try_from(n).unwrap_or(0)].iter().collect()
            } else {
                v.to_owned()
            };
            s(kept)
        }
        "repeat" => {
            arity(a, 2)?;
            s(string(&a[1])?.repeat(usize::try_from(int(&a[0])?).unwrap_or(0)))
        }
        "cat" => s(a.iter().filter(|v| !v.is_nil()).map(strval).collect::<Vec<_>>().join(" ")),
        "join" => {
            arity(a, 2)?;
            let sep = string(&a[0])?;
            let parts: Vec<String> = match &a[1] {
                Value::List(items) => items.iter().filter(|v| !v.is_nil()).map(strval).collect(),
                v if v.is_nil() => Vec::new(),
                v => vec![strval(v)],
            };
            s(parts.join(sep))
        }
        "splitList" | "split" => {
            arity(a, 2)?;
            let parts = string(&a[1])?.split(string(&a[0])?).map(Value::from);
            Ok(if name == "splitList" {
                Value::List(parts.collect())
            } else {
                Value::Map(parts.enumerate().map(|(i, p)| (format!("_{i}"), p)).collect())
            })
        }
        "list" => Ok(Value::List(args)),
        "dict" => {
            let mut map = BTreeMap::new();
            for pair in a.chunks(2) {
                let value = pair.get(1).cloned().unwrap_or_else(|| Value::from(""));
                map.insert(strval(&pair[0]), value);
            }
            Ok(Value::Map(map))
        }
        "int" | "int64" => {
            arity(a, 1)?;
            Ok(Value::Int(match &a[0] {
                Value::Int(i) => *i,
                Value::Float(f) => *f as i64,
                Value::Bool(b) => i64::from(*b),
                Value::String(v) => parse_go_int(v).unwrap_or(0),
                _ => 0,
            }))
        }
        "atoi" => {
            arity(a, 1)?;
            Ok(Value::Int(string(&a[0])?.parse().unwrap_or(0)))
        }
        "toJson" => {
            arity(a, 1)?;
            s(serde_json::to_string(&to_json(&a[0])).unwrap_or_default())
        }
        other => Err(format!("function \"{other}\" not defined")),
    }
}

fn index(item: &Value, key: &Value) -> Result<Value> {
    match (item, key) {
        (Value::Map(m), Value::String(k)) => Ok(m.get(k).cloned().unwrap_or(Value::Missing)),
        // A map[string]string yields its zero value, "", for a missing key.
        (Value::StringMap(m), Value::String(k)) => {
            Ok(Value::String(m.get(k).cloned().unwrap_or_default()))
        }
        (Value::List(l), Value::Int(i)) => usize::try_from(*i)
            .ok()
            .and_then(|i| l.get(i))
            .cloned()
            .ok_or_else(|| format!("index out of range: {i}")),
        (Value::String(s), Value::Int(i)) => usize::try_from(*i)
            .ok()
            .and_then(|i| s.as_bytes().get(i))
            .map(|b| Value::Int(i64::from(*b)))
            .ok_or_else(|| format!("index out of range: {i}")),
        (item, _) if item.is_nil() => Err("index of untyped nil".to_owned()),
        (Value::Map(_) | Value::StringMap(_), key) => {
            Err(format!("value has type {}; should be string", key.type_name()))
        }
        (Value::List(_) | Value::String(_), key) => {
            Err(format!("cannot index slice/array with type {}", key.type_name()))
        }
        (item, _) => Err(format!("can't index item of type {}", item.type_name())),
    }
}

/// Go's `eq` for two values: basic kinds compare by value; nil equals only nil.
fn equal(a: &Value, b: &Value) -> Result<bool> {
    Ok(match (a, b) {
        (x, y) if x.is_nil() || y.is_nil() => x.is_nil() && y.is_nil(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::List(_) | Value::Map(_) | Value::StringMap(_), _)
        | (_, Value::List(_) | Value::Map(_) | Value::StringMap(_)) => {
            return Err("non-comparable type".to_owned());
        }
        _ => return Err("incompatible types for comparison".to_owned()),
    })
}

fn order(a: &Value, b: &Value) -> Result<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => {
            x.partial_cmp(y).ok_or_else(|| "invalid type for comparison".to_owned())
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (
            Value::Int(_) | Value::Float(_) | Value::String(_),
            Value::Int(_) | Value::Float(_) | Value::String(_),
        ) => Err("incompatible types for comparison".to_owned()),
        _ => Err("invalid type for comparison".to_owned()),
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        if at_word_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

/// `strconv.ParseInt(s, 0, 64)` as spf13/cast uses it for sprig's `int`.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, d) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    let v = if let Some(h) = d.strip_prefix("0x").or_else(|| d.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if d.len() > 1 && d.starts_with('0') {
        i64::from_str_radix(&d[1..], 8).ok()?
    } else {
        d.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Missing | Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::String(s) => s.clone().into(),
        Value::List(l) => l.iter().map(to_json).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
        Value::StringMap(m) => {
            m.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, args: &[Value]) -> Result<Value> {
        call(name, args.to_vec())
    }

    fn st(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn sprig_argument_order_is_kept() {
        assert_eq!(c("default", &[st("d"), st("")]).unwrap(), st("d"));
        assert_eq!(c("default", &[st("d"), st("x")]).unwrap(), st("x"));
        assert_eq!(c("default", &[st("d"), Value::Missing]).unwrap(), st("d"));
        assert_eq!(c("replace", &[st("-"), st("_"), st("a-b-c")]).unwrap(), st("a_b_c"));
        assert_eq!(c("hasPrefix", &[st("cn-"), st("cn-north-1")]).unwrap(), Value::Bool(true));
        assert_eq!(c("trimSuffix", &[st("/"), st("a/")]).unwrap(), st("a"));
        assert_eq!(c("ternary", &[st("y"), st("n"), Value::Bool(false)]).unwrap(), st("n"));
        assert_eq!(c("contains", &[st("b"), st("abc")]).unwrap(), Value::Bool(true));
        assert_eq!(c("nindent", &[Value::Int(2), st("a\nb")]).unwrap(), st("\n  a\n  b"));
        assert_eq!(c("trunc", &[Value::Int(-2), st("abcd")]).unwrap(), st("cd"));
    }

    #[test]
    fn quoting_and_encoding() {
        assert_eq!(
            c("quote", &[st("a\"b"), Value::Nil, Value::Int(1)]).unwrap(),
            st("\"a\\\"b\" \"1\"")
        );
        assert_eq!(c("squote", &[st("x")]).unwrap(), st("'x'"));
        assert_eq!(c("b64enc", &[st("hi")]).unwrap(), st("aGk="));
        assert_eq!(c("b64dec", &[st("aGk=")]).unwrap(), st("hi"));
        assert!(
            matches!(c("b64dec", &[st("!")]).unwrap(), Value::String(s) if s.starts_with("illegal base64"))
        );
        assert_eq!(c("toString", &[Value::Int(3)]).unwrap(), st("3"));
    }

    #[test]
    fn required_empty_and_type_errors() {
        assert_eq!(
            c("required", &[st("bucket is required"), st("")]).unwrap_err(),
            "bucket is required"
        );
        assert_eq!(c("required", &[st("m"), st("v")]).unwrap(), st("v"));
        assert_eq!(c("empty", &[Value::Int(0)]).unwrap(), Value::Bool(true));
        assert_eq!(
            c("upper", &[Value::Int(1)]).unwrap_err(),
            "wrong type for value; expected string; got int"
        );
    }

    #[test]
    fn comparisons_follow_go() {
        assert_eq!(c("eq", &[st("a"), st("b"), st("a")]).unwrap(), Value::Bool(true));
        assert_eq!(c("eq", &[Value::Missing, st("a")]).unwrap(), Value::Bool(false));
        assert_eq!(
            c("eq", &[Value::Int(1), st("1")]).unwrap_err(),
            "incompatible types for comparison"
        );
        assert_eq!(c("lt", &[Value::Int(1), Value::Int(2)]).unwrap(), Value::Bool(true));
        assert_eq!(c("ge", &[st("b"), st("a")]).unwrap(), Value::Bool(true));
    }

    #[test]
    fn index_of_a_string_map_yields_empty_for_missing_keys() {
        let m: BTreeMap<String, String> = [("a".into(), "1".into())].into();
        assert_eq!(c("index", &[Value::from(m.clone()), st("a")]).unwrap(), st("1"));
        assert_eq!(c("index", &[Value::from(m), st("zz")]).unwrap(), st(""));
        assert_eq!(
            c("index", &[Value::List(vec![st("x")]), Value::Int(3)]).unwrap_err(),
            "index out of range: 3"
        );
    }
}
