//! `metadata` of custom objects, checked as ObjectMeta (apimachinery `ValidateObjectMeta`): the
//! apiserver never lets a CRD schema loosen these rules, and unknown fields inside are pruned.

use holdfast_api::FieldError;
use holdfast_api::schema::type_error;
use serde_json::Value;

/// ObjectMeta's fields; anything else under `metadata` is pruned.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Removes unknown ObjectMeta fields of the metadata at `path`, recording `<path>.<field>`.
pub(super) fn prune(meta: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if let Value::Object(m) = meta {
        m.retain(|k, _| {
            let known = OBJECT_META_FIELDS.contains(&k.as_str());
            if !known {
                unknown.push(format!("{path}.{k}"));
            }
            known
        });
    }
}

/// Validates `metadata` (already pruned).
pub(super) fn validate(meta: &Value, errs: &mut Vec<FieldError>) {
    let Value::Object(m) = meta else {
        errs.push(type_error("metadata", meta, "object"));
        return;
    };
    if let Some(name) = m.get("name") {
        match name {
            Value::String(s) if s.is_empty() => {
                if m.get("generateName").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    ));
                }
            }
            Value::String(s) => {
                if let Some(e) = dns1123_subdomain(s) {
                    errs.push(FieldError::invalid("metadata.name", s, e));
                }
            }
            Value::Null => {}
            other => errs.push(type_error("metadata.name", other, "string")),
        }
    }
    for field in ["generateName", "selfLink", "uid", "resourceVersion"] {
        if let Some(v) = m.get(field).filter(|v| !v.is_null() && !v.is_string()) {
            errs.push(type_error(&format!("metadata.{field}"), v, "string"));
        }
    }
    if let Some(v) = m.get("namespace") {
        match v {
            Value::String(s) if !s.is_empty() => {
                if let Some(e) = dns1123_label(s) {
                    errs.push(FieldError::invalid("metadata.namespace", s, e));
                }
            }
            Value::String(_) | Value::Null => {}
            other => errs.push(type_error("metadata.namespace", other, "string")),
        }
    }
    for field in ["generation", "deletionGracePeriodSeconds"] {
        if let Some(v) = m.get(field).filter(|v| !v.is_null() && !v.is_i64() && !v.is_u64()) {
            errs.push(type_error(&format!("metadata.{field}"), v, "integer"));
        }
    }
    for field in ["creationTimestamp", "deletionTimestamp"] {
        match m.get(field) {
            Some(Value::String(s)) if s.parse::<jiff::Timestamp>().is_err() => {
                errs.push(FieldError::invalid(
                    format!("metadata.{field}"),
                    s,
                    "must be an RFC 3339 timestamp",
                ));
            }
            Some(v) if !v.is_null() && !v.is_string() => {
                errs.push(type_error(&format!("metadata.{field}"), v, "string"))
            }
            _ => {}
        }
    }
    if let Some(labels) = m.get("labels") {
        string_map("metadata.labels", labels, errs, |path, k, v, errs| {
            if let Some(e) = qualified_name(k) {
                errs.push(FieldError::invalid(path.clone(), k, e));
            }
            if let Some(e) = label_value(v) {
                errs.push(FieldError::invalid(path, v, e));
            }
        });
    }
    if let Some(annotations) = m.get("annotations") {
        let mut total = 0usize;
        string_map("metadata.annotations", annotations, errs, |path, k, v, errs| {
            total += k.len() + v.len();
            if let Some(e) = qualified_name(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid(path, k, e));
            }
        });
        if total > 256 * 1024 {
            errs.push(FieldError {
                field: "metadata.annotations".into(),
                kind: holdfast_api::FieldErrorKind::TooLong,
                value: None,
                detail: "must have at most 262144 bytes".into(),
            });
        }
    }
    if let Some(f) = m.get("finalizers") {
        match f {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => {
                            if let Some(e) = qualified_name(s) {
                                errs.push(FieldError::invalid(
                                    format!("metadata.finalizers[{i}]"),
                                    s,
                                    e,
                                ));
                            }
                        }
                        other => errs.push(type_error(
                            &format!("metadata.finalizers[{i}]"),
                            other,
                            "string",
                        )),
                    }
                }
            }
            Value::Null => {}
            other => errs.push(type_error("metadata.finalizers", other, "array")),
        }
    }
    if let Some(refs) = m.get("ownerReferences") {
        match refs {
            Value::Array(items) => {
                for (i, r) in items.iter().enumerate() {
                    let path = format!("metadata.ownerReferences[{i}]");
                    let Value::Object(o) = r else {
                        errs.push(type_error(&path, r, "object"));
                        continue;
                    };
                    for field in ["apiVersion", "kind", "name", "uid"] {
                        match o.get(field) {
                            Some(Value::String(s)) if !s.is_empty() => {}
                            _ => errs.push(FieldError::required(format!("{path}.{field}"), "")),
                        }
                    }
                }
            }
            Value::Null => {}
            other => errs.push(type_error("metadata.ownerReferences", other, "array")),
        }
    }
    if let Some(v) = m.get("managedFields").filter(|v| !v.is_null() && !v.is_array()) {
        errs.push(type_error("metadata.managedFields", v, "array"));
    }
}

fn string_map(
    path: &str,
    v: &Value,
    errs: &mut Vec<FieldError>,
    mut each: impl FnMut(String, &str, &str, &mut Vec<FieldError>),
) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let p = format!("{path}[{k}]");
                match val {
                    Value::String(s) => each(p, k, s, errs),
                    other => errs.push(type_error(&p, other, "string")),
                }
            }
        }
        Value::Null => {}
        other => errs.push(type_error(path, other, "object")),
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// Why `s` is not a DNS-1123 label (≤63), or None.
pub(super) fn dns1123_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok =
        !s.is_empty() && s.chars().all(is_label_char) && !s.starts_with('-') && !s.ends_with('-');
    (!ok).then(|| DNS1123_LABEL_MSG.to_string())
}

/// Why `s` is not a DNS-1123 subdomain (≤253), or None.
pub(super) fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(is_label_char)
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    (!ok).then(|| DNS1123_SUBDOMAIN_MSG.to_string())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(is_name_char)
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Why `s` is not a qualified name (`[prefix/]name`, as label and annotation keys must be), or None.
pub(super) fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(e) = dns1123_subdomain(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    (!name_part_ok(name)).then(|| QUALIFIED_NAME_MSG.to_string())
}

/// Why `s` is not a valid label value, or None.
pub(super) fn label_value(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!s.is_empty() && !name_part_ok(s)).then(|| LABEL_VALUE_MSG.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dns_names_and_qualified_names() {
        assert_eq!(dns1123_subdomain("a.b-c.d"), None);
        assert!(dns1123_subdomain("Foo").is_some());
        assert!(dns1123_subdomain("a..b").is_some());
        assert!(dns1123_subdomain("-a").is_some());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_some());
        assert_eq!(dns1123_subdomain(&"a".repeat(63)), None);
        assert!(dns1123_label("a.b").is_some());
        assert_eq!(qualified_name("app.kubernetes.io/name"), None);
        assert_eq!(qualified_name("My_Key.x"), None);
        assert!(qualified_name("/x").is_some());
        assert!(qualified_name("a/b/c").is_some());
        assert!(qualified_name("UPPER.io/x").is_some());
        assert!(qualified_name(&"k".repeat(64)).is_some());
        assert_eq!(label_value(""), None);
        assert!(label_value("-x").is_some());
        assert!(label_value("has space").is_some());
    }

    #[test]
    fn metadata_is_validated_as_object_meta() {
        let mut errs = Vec::new();
        validate(
            &json!({"name":"Bad_Name","labels":{"ok":"v","bad key":"v","k":"bad value!","n":1},
                "annotations":{"a":"b"},"finalizers":["ok.io/f",3],"generation":"1"}),
            &mut errs,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.name",
                "metadata.generation",
                "metadata.labels[bad key]",
                "metadata.labels[k]",
                "metadata.labels[n]",
                "metadata.finalizers[1]"
            ]
        );
        assert!(errs[0].to_string().starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(
            errs[4].to_string(),
            "metadata.labels[n]: Invalid value: \"integer\": metadata.labels[n] in body must be of type string: \"integer\""
        );
        let mut ok = Vec::new();
        validate(
            &json!({"generateName":"b-","name":"","labels":{"app.kubernetes.io/name":"x"}}),
            &mut ok,
        );
        assert!(ok.is_empty(), "{ok:?}");
        let mut missing = Vec::new();
        validate(&json!({"name":""}), &mut missing);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].field, "metadata.name");
    }

    #[test]
    fn unknown_metadata_fields_are_pruned_and_reported() {
        let mut m = json!({"name":"x","foo":1,"labels":{},"clusterName":"c"});
        let mut unknown = Vec::new();
        prune(&mut m, "metadata", &mut unknown);
        assert_eq!(unknown, vec!["metadata.foo", "metadata.clusterName"]);
        assert_eq!(m, json!({"name":"x","labels":{}}));
    }
}
