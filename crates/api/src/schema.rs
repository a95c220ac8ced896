//! Validation of JSON against a structural OpenAPI v3 schema, with the errors the Kubernetes API
//! server reports: each names the field (`spec.schedules[0].name`, map entries as
//! `spec.tags[key]`) and why it is wrong, as a [`FieldError`].
//!
//! This is the one validator of the project: the API server checks every custom object with it
//! (after pruning and defaulting, which stay there), and the BackupRepo controller checks a
//! repo's parameters against its StorageProvider's `parametersSchema`. It only reads; it never
//! prunes, defaults or looks at `metadata` rules.
//!
//! Understood: `type`, `nullable`, `properties`, `required`, `additionalProperties` (maps),
//! `items`, `enum`, `format` (`date-time`, `date`, `byte`, `int32`, `int64`), `pattern`,
//! `minLength`/`maxLength`, `minimum`/`maximum` (and their `exclusive` flags),
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, `uniqueItems`, `anyOf`/`oneOf`/`allOf`,
//! `x-kubernetes-int-or-string` and `x-kubernetes-list-type` (`set`, `map` with its keys).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::{Map, Value};

use crate::field::{FieldError, path as join};

/// Checks `value`, which sits at `path` (`""` for a whole object), against `schema`. Every
/// problem is reported, in document order; none means the value conforms.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    validate_into(schema, value, path, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// [`validate`], appending to `errs`: for callers that check a value field by field.
pub fn validate_into(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            let want = schema.get("type").and_then(Value::as_str).unwrap_or("object");
            errs.push(type_error(path, v, want));
        }
        return;
    }
    let before = errs.len();
    check_type(schema, v, path, errs);
    if errs.len() > before {
        // A value of the wrong type makes every further check noise.
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map(str::to_string).unwrap_or_else(|| a.to_string()))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, v, &refs));
    }
    match v {
        Value::String(s) => check_string(schema, s, path, errs),
        Value::Number(_) => check_number(schema, v, path, errs),
        Value::Array(items) => check_array(schema, items, path, errs),
        Value::Object(m) => {
            bounds(schema, "minProperties", "maxProperties", m.len(), path, "properties", errs);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if let Some(s) = schema.get("properties").and_then(|p| p.get(k)) {
                    validate_into(s, child, &join(path, k), errs);
                } else if let Some(s) = additional {
                    validate_into(s, child, &format!("{path}[{k}]"), errs);
                }
            }
            check_required(schema, m, path, errs);
        }
        _ => {}
    }
    check_branches(schema, v, path, errs);
}

/// Reports each property `schema` lists as `required` that the object `m` at `path` lacks.
pub fn check_required(
    schema: &Value,
    m: &Map<String, Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                errs.push(FieldError::required(join(path, r), ""));
            }
        }
    }
}

/// Whether the boolean keyword `name` (`nullable`, `x-kubernetes-preserve-unknown-fields`, …)
/// is set on `schema`.
pub fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// The JSON type name of a value, as Kubernetes reports it in type errors.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `spec.x: Invalid value: "string": spec.x in body must be of type boolean: "string"`.
pub fn type_error(path: &str, v: &Value, want: &str) -> FieldError {
    let got = type_name(v);
    FieldError::invalid(path, got, format!("{path} in body must be of type {want}: \"{got}\""))
}

fn check_type(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(FieldError::invalid(
                path,
                type_name(v),
                format!("{path} in body must be of type integer or string: \"{}\"", type_name(v)),
            ));
        }
        return;
    }
    let Some(want) = schema.get("type").and_then(Value::as_str) else { return };
    let ok = match want {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    };
    if !ok {
        errs.push(type_error(path, v, want));
    }
}
fn check_string(schema: &Value, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let chars = s.chars().count();
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && (chars as u64) < min
    {
        errs.push(FieldError::invalid(
            path,
            s,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && (chars as u64) > max
    {
        errs.push(FieldError::invalid(
            path,
            s,
            format!("{path} in body should be at most {max} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match matches_pattern(pattern, s) {
            Some(true) => {}
            Some(false) => {
                errs.push(FieldError::invalid(
                    path,
                    s,
                    format!("{path} in body should match '{pattern}'"),
                ));
            }
            None => errs.push(FieldError::invalid(
                path,
                s,
                format!("the schema's pattern '{pattern}' is not a valid regular expression"),
            )),
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let ok = match format {
            "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
            "date" => s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok(),
            "byte" => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(s).is_ok()
            }
            // int32/int64 on a string (int-or-string) and unknown formats: nothing to check.
            _ => true,
        };
        if !ok {
            errs.push(FieldError::invalid(
                path,
                s,
                format!("{path} in body must be of type {format}: \"{s}\""),
            ));
        }
    }
}

/// Whether `s` matches `pattern` (unanchored, like Go's `regexp.MatchString`); None if the pattern
/// does not compile. Compiled patterns are cached: the same few schemas are checked on every write.
fn matches_pattern(pattern: &str, s: &str) -> Option<bool> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let re = cache.entry(pattern.to_string()).or_insert_with(|| Regex::new(pattern).ok());
    re.as_ref().map(|r| r.is_match(s))
}

fn check_number(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(x) = v.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if flag(schema, "exclusiveMinimum") && x <= min {
            errs.push(FieldError::invalid(
                path,
                v,
                format!("{path} in body should be greater than {min}"),
            ));
        } else if x < min {
            errs.push(FieldError::invalid(
                path,
                v,
                format!("{path} in body should be greater than or equal to {min}"),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if flag(schema, "exclusiveMaximum") && x >= max {
            errs.push(FieldError::invalid(
                path,
                v,
                format!("{path} in body should be less than {max}"),
            ));
        } else if x > max {
            errs.push(FieldError::invalid(
                path,
                v,
                format!("{path} in body should be less than or equal to {max}"),
            ));
        }
    }
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
        Some("int64") => Some((i64::MIN, i64::MAX)),
        _ => None,
    };
    if let Some((lo, hi)) = range {
        let fits = v.as_i64().is_some_and(|n| n >= lo && n <= hi);
        if !fits {
            let f = schema.get("format").and_then(Value::as_str).unwrap_or_default();
            errs.push(FieldError::invalid(
                path,
                v,
                format!("{path} in body must be of type {f}: \"{v}\""),
            ));
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    bounds(schema, "minItems", "maxItems", items.len(), path, "items", errs);
    if let Some(s) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate_into(s, item, &format!("{path}[{i}]"), errs);
        }
    }
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    if list_type == Some("set") || flag(schema, "uniqueItems") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), item));
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |item: &Value| -> Vec<Value> {
            keys.iter().map(|k| item.get(*k).cloned().unwrap_or(Value::Null)).collect()
        };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items[..i].iter().any(|o| key_of(o) == k) {
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), Value::Array(k)));
            }
        }
    }
}

fn bounds(
    schema: &Value,
    min_key: &str,
    max_key: &str,
    n: usize,
    path: &str,
    what: &str,
    errs: &mut Vec<FieldError>,
) {
    let n = n as u64;
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && n < min
    {
        errs.push(FieldError::invalid(
            path,
            n,
            format!("{path} in body should have at least {min} {what}"),
        ));
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && n > max
    {
        errs.push(FieldError::invalid(
            path,
            n,
            format!("{path} in body should have at most {max} {what}"),
        ));
    }
}

/// `anyOf` (at least one branch), `oneOf` (exactly one) and `allOf` (every branch).
fn check_branches(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let passes = |b: &Value| {
        let mut e = Vec::new();
        validate_into(b, v, path, &mut e);
        e.is_empty()
    };
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
        && !any.iter().any(passes)
    {
        errs.push(FieldError::invalid(
            path,
            v,
            format!("{path} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|b| passes(b)).count();
        if !one.is_empty() && n != 1 {
            errs.push(FieldError::invalid(
                path,
                v,
                format!(
                    "{path} in body must validate one and only one schema (oneOf), but {n} matched"
                ),
            ));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for b in all {
            validate_into(b, v, path, errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::FieldErrorKind;

    fn messages(schema: &Value, value: &Value, path: &str) -> Vec<String> {
        match validate(schema, value, path) {
            Ok(()) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn paths_start_where_the_value_sits() {
        let schema = json!({"type": "object", "required": ["bucket"], "properties": {
            "size": {"type": "integer"},
            "nested": {"type": "object", "properties": {"list": {"type": "array", "items": {"type": "string"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}});
        let value = json!({"size": "12x", "nested": {"list": ["a", 1]}, "labels": {"k": false}});
        assert_eq!(
            messages(&schema, &value, "parameters"),
            [
                "parameters.size: Invalid value: \"string\": parameters.size in body must be of type integer: \"string\"",
                "parameters.nested.list[1]: Invalid value: \"integer\": parameters.nested.list[1] in body must be of type string: \"integer\"",
                "parameters.labels[k]: Invalid value: \"boolean\": parameters.labels[k] in body must be of type string: \"boolean\"",
                "parameters.bucket: Required value",
            ]
        );
        let errs = validate(&schema, &json!({}), "").unwrap_err();
        assert_eq!((errs[0].field.as_str(), errs[0].kind), ("bucket", FieldErrorKind::Required));
        assert_eq!(errs[0].kind.reason(), "FieldValueRequired");
    }

    #[test]
    fn a_conforming_value_passes_and_unknown_fields_are_not_its_concern() {
        let schema = json!({"type": "object", "properties": {
            "size": {"x-kubernetes-int-or-string": true},
            "when": {"type": "string", "format": "date", "nullable": true}}});
        for size in [json!(5), json!("5Gi")] {
            let value = json!({"size": size, "when": "2026-11-21", "other": {"any": 1}});
            assert_eq!(validate(&schema, &value, "spec"), Ok(()));
        }
        assert_eq!(validate(&schema, &json!({"when": null}), "spec"), Ok(()));
        assert_eq!(
            messages(&schema, &json!({"when": "21.11.2026"}), "spec"),
            [
                "spec.when: Invalid value: \"21.11.2026\": spec.when in body must be of type date: \"21.11.2026\""
            ]
        );
    }

    #[test]
    fn bounds_and_uniqueness() {
        let schema = json!({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 1, "exclusiveMinimum": true},
            "tags": {"type": "array", "uniqueItems": true, "minItems": 3},
            "m": {"type": "object", "maxProperties": 1}}});
        assert_eq!(
            messages(&schema, &json!({"n": 1, "tags": ["a", "a"], "m": {"a": 1, "b": 2}}), ""),
            [
                "n: Invalid value: 1: n in body should be greater than 1",
                "tags: Invalid value: 2: tags in body should have at least 3 items",
                "tags[1]: Duplicate value: \"a\"",
                "m: Invalid value: 2: m in body should have at most 1 properties",
            ]
        );
    }

    #[test]
    fn a_broken_pattern_is_reported_not_panicked_on() {
        let schema = json!({"type": "string", "pattern": "(unclosed"});
        assert_eq!(
            messages(&schema, &json!("x"), "spec.name"),
            [
                "spec.name: Invalid value: \"x\": the schema's pattern '(unclosed' is not a valid regular expression"
            ]
        );
    }

    #[test]
    fn type_names_follow_kubernetes() {
        let names: Vec<&str> =
            [json!(null), json!(true), json!(1), json!(1.5), json!("s"), json!([]), json!({})]
                .iter()
                .map(type_name)
                .collect();
        assert_eq!(names, ["null", "boolean", "integer", "number", "string", "array", "object"]);
        assert!(flag(&json!({"nullable": true}), "nullable"));
        assert!(!flag(&json!({"nullable": "yes"}), "nullable"));
    }
}
