//! Structural schema processing of custom kinds, in the order a Kubernetes API server runs it:
//! prune unknown fields, apply `default`s, then validate. Built-in kinds are checked by their typed
//! round trip instead; [`removed_paths`] reports what that round trip dropped.
//!
//! Schemas are the `openAPIV3Schema` kube's `CustomResource` derive generates from schemars.
//! Validation itself is [`holdfast_api::schema`], shared with the controllers; what only a
//! server does lives here: pruning (honouring `x-kubernetes-preserve-unknown-fields` and
//! `x-kubernetes-embedded-resource`), defaulting, the envelope fields, and ObjectMeta's rules.

mod meta;

use holdfast_api::FieldError;
use holdfast_api::field::path as join;
use holdfast_api::schema::{check_required, flag, type_error, validate_into};
use serde_json::{Map, Value};

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
                    validate_into(s, v, k, &mut errs);
                }
            }
        }
    }
    check_required(schema, root, "", &mut errs);
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

#[cfg(test)]
mod tests;
