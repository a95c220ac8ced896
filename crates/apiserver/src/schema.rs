//! Structural schema processing of custom kinds, in the order the apiserver runs it:
//! prune unknown fields, apply `default`s, then validate. Built-in kinds are checked by their typed
//! round trip instead; [`removed_paths`] reports what that round trip dropped.
//!
//! Schemas are the `openAPIV3Schema` kube's `CustomResource` derive generates from schemars:
//! `type`, `properties`, `required`, `nullable`, `additionalProperties` (maps),
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`, `enum`, `format`,
//! `pattern`, min/max bounds, `anyOf`/`oneOf`/`allOf`, `x-kubernetes-list-type`.

mod meta;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use holdfast_api::FieldError;
use regex::Regex;
use serde_json::{Map, Value};

use meta::type_error;

/// What processing changed in an accepted object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Dotted paths of unknown fields, already removed (e.g. `spec.foo`, `spec.items[0].bar`,
    /// `metadata.foo`), in document order. The engine turns them into `Warning` headers or, with
    /// `fieldValidation=Strict`, into a 400.
    pub unknown_fields: Vec<String>,
}

/// Prunes unknown fields (except under `x-kubernetes-preserve-unknown-fields`, and always inside
/// `metadata` beyond ObjectMeta's own fields), applies `default`s, and checks
/// type/required/enum/format/pattern/min/max/nullable. `metadata` is checked as ObjectMeta (name
/// is a DNS-1123 subdomain, labels/annotations are string maps with valid keys).
///
/// `apiVersion`, `kind`, `metadata` and `status` are always allowed at the top level. On error the
/// object may be half-processed; the caller discards it.
pub fn process(schema: &Value, obj: &mut Value) -> Result<SchemaReport, Vec<FieldError>> {
    let mut report = SchemaReport::default();
    let mut errs = Vec::new();
    let Value::Object(root) = obj else {
        return Err(vec![type_error("<root>", obj, "object")]);
    };
    // Top level: the envelope fields are not in a CRD's schema but always belong.
    let keep_unknown = keeps_unknown(schema);
    for (k, v) in root.iter_mut() {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => meta::prune(v, "metadata", &mut report.unknown_fields),
            _ => match property(schema, k) {
                Some(s) => prune(s, v, k, &mut report.unknown_fields),
                None if k == "status" || keep_unknown => {}
                None => report.unknown_fields.push(k.clone()),
            },
        }
    }
    if !keep_unknown {
        root.retain(|k, _| {
            matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                || property(schema, k).is_some()
        });
    }
    default_object(schema, root);
    for (k, v) in root.iter() {
        match k.as_str() {
            "apiVersion" | "kind" => {
                if !v.is_string() {
                    errs.push(type_error(k, v, "string"));
                }
            }
            "metadata" => meta::validate(v, &mut errs),
            _ => {
                if let Some(s) = property(schema, k) {
                    validate(s, v, k, &mut errs);
                }
            }
        }
    }
    required(schema, root, "", &mut errs);
    if errs.is_empty() { Ok(report) } else { Err(errs) }
}

/// For built-in kinds: paths present in `before` but missing in `after` (after = the typed round
/// trip), e.g. `spec.foo` or `spec.containers[0].bogus`. `null`s are not reported: the round trip
/// drops them without anything being lost.
pub fn removed_paths(before: &Value, after: &Value) -> Vec<String> {
    fn walk(b: &Value, a: &Value, path: &str, out: &mut Vec<String>) {
        match (b, a) {
            (Value::Object(bm), Value::Object(am)) => {
                for (k, bv) in bm {
                    let p = join(path, k);
                    match am.get(k) {
                        _ if bv.is_null() => {}
                        Some(av) => walk(bv, av, &p, out),
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(bi), Value::Array(ai)) => {
                for (i, bv) in bi.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    match ai.get(i) {
                        _ if bv.is_null() => {}
                        Some(av) => walk(bv, av, &p, out),
                        None => out.push(p),
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(before, after, "", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn preserves(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

/// Whether unknown fields of an object under `schema` stay: preserved explicitly, a map allowing
/// anything, or no structure at all to prune against (keep rather than guess).
fn keeps_unknown(schema: &Value) -> bool {
    let additional = schema.get("additionalProperties");
    let declares_fields = schema.get("properties").is_some()
        || additional.is_some()
        || schema.get("type").and_then(Value::as_str) == Some("object");
    preserves(schema) || !declares_fields || additional == Some(&Value::Bool(true))
}

/// Sub-schemas of `anyOf`/`oneOf`/`allOf`; their properties count as declared for pruning, so a
/// field a branch names is never dropped.
fn branches(schema: &Value) -> impl Iterator<Item = &Value> {
    ["anyOf", "oneOf", "allOf"]
        .into_iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten()
}

/// The schema of property `name` of the object schema `schema`.
fn property<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    branches(schema).find_map(|b| b.get("properties").and_then(|p| p.get(name)))
}

/// Removes fields the schema does not declare, recording their paths.
fn prune(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let additional = schema.get("additionalProperties");
            let keep_unknown = keeps_unknown(schema);
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let mut doomed = Vec::new();
            for (k, child) in m.iter_mut() {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if embedded && k == "metadata" && property(schema, k).is_none() {
                    meta::prune(child, &join(path, k), unknown);
                    continue;
                }
                if let Some(s) = property(schema, k) {
                    prune(s, child, &join(path, k), unknown);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    prune(s, child, &format!("{path}[{k}]"), unknown);
                } else if !keep_unknown {
                    unknown.push(join(path, k));
                    doomed.push(k.clone());
                }
            }
            for k in doomed {
                m.shift_remove(&k);
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(s, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills in defaults for absent properties and replaces `null`s of non-nullable fields by their
/// default (or drops them), as apiextensions' structural defaulting does.
fn default_object(schema: &Value, m: &mut Map<String, Value>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            match m.get(k) {
                None => {
                    if let Some(d) = s.get("default") {
                        m.insert(k.clone(), d.clone());
                    }
                }
                Some(Value::Null) if !flag(s, "nullable") => match s.get("default") {
                    Some(d) => {
                        m.insert(k.clone(), d.clone());
                    }
                    None => {
                        m.shift_remove(k);
                    }
                },
                Some(_) => {}
            }
        }
    }
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in m.iter_mut() {
        let sub = schema.get("properties").and_then(|p| p.get(k)).or(additional);
        if let Some(s) = sub {
            default_value(s, v);
        }
    }
}

fn default_value(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => default_object(schema, m),
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| default_value(s, i));
            }
        }
        _ => {}
    }
}

fn required(schema: &Value, m: &Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                errs.push(FieldError::required(join(path, r), ""));
            }
        }
    }
}

/// Validates `v` against `schema`, appending errors.
fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
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
                    validate(s, child, &join(path, k), errs);
                } else if let Some(s) = additional {
                    validate(s, child, &format!("{path}[{k}]"), errs);
                }
            }
            required(schema, m, path, errs);
        }
        _ => {}
    }
    check_branches(schema, v, path, errs);
}

fn check_type(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(FieldError::invalid(
                path,
                meta::type_name(v),
                format!(
                    "{path} in body must be of type integer or string: \"{}\"",
                    meta::type_name(v)
                ),
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
            validate(s, item, &format!("{path}[{i}]"), errs);
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
        validate(b, v, path, &mut e);
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
            validate(b, v, path, errs);
        }
    }
}

#[cfg(test)]
mod tests;
