//! Field selectors (`?fieldSelector=metadata.name=b1,status.phase!=Running`).
//!
//! Only the fields the apiserver indexes for a kind are selectable: `metadata.name` and
//! `metadata.namespace` for every kind, plus a few per built-in kind (the `GetAttrs`/field-label
//! conversion functions of `pkg/registry/core/*/strategy.go`). Anything else is a 400, as upstream,
//! so a client never gets a silently unfiltered list.

use serde_json::Value;

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The selectable field, e.g. `metadata.name`.
    pub field: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equals: bool,
    /// The value compared against (a missing field reads as "").
    pub value: String,
}

/// A parsed field selector: the AND of its terms. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
    kind: String,
}

const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];

/// The fields selectable for `kind` beyond `metadata.name` and `metadata.namespace`.
fn extra_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "Job" => &["status.successful"],
        _ => &[],
    }
}

/// The selectable fields of `kind`, in the order error messages list them.
pub fn known_fields(kind: &str) -> Vec<&'static str> {
    COMMON.iter().chain(extra_fields(kind)).copied().collect()
}

/// Parses a field selector for objects of `kind`.
///
/// # Errors
/// A message for a 400 `BadRequest`: a term without an operator, or a field that is not
/// selectable for this kind (`"spec.foo" is not a known field selector: only "metadata.name", …`).
pub fn parse(s: &str, kind: &str) -> Result<FieldSelector, String> {
    let mut requirements = Vec::new();
    for term in split_unescaped(s, ',') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (field, equals, value) = split_term(term)
            .ok_or_else(|| format!("invalid selector: '{s}'; can't understand '{term}'"))?;
        let field = field.trim();
        if !known_fields(kind).contains(&field) {
            let allowed: Vec<String> =
                known_fields(kind).iter().map(|f| format!("\"{f}\"")).collect();
            return Err(format!(
                "\"{field}\" is not a known field selector: only {}",
                allowed.join(", ")
            ));
        }
        requirements.push(FieldRequirement {
            field: field.to_string(),
            equals,
            value: unescape(value.trim()),
        });
    }
    Ok(FieldSelector { requirements, kind: kind.to_string() })
}

impl FieldSelector {
    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms, in the order given.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The name an equality term on `metadata.name` pins, if any: lets the caller read one key
    /// instead of scanning (kubectl wait/delete send `metadata.name=X`).
    pub fn name(&self) -> Option<&str> {
        self.pinned("metadata.name")
    }

    /// The namespace an equality term on `metadata.namespace` pins, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.pinned("metadata.namespace")
    }

    fn pinned(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| r.equals && r.field == field).map(|r| r.value.as_str())
    }

    /// Whether `obj` satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| (field_value(&self.kind, obj, &r.field) == r.value) == r.equals)
    }
}

/// The value of a selectable field as upstream's field set renders it: strings as is, booleans
/// and numbers as text, missing as "".
fn field_value(kind: &str, obj: &Value, field: &str) -> String {
    let path: Vec<&str> = match (kind, field) {
        // Core Event's `source` field label is the reporting component of `source`.
        ("Event", "source") => {
            let core = lookup(obj, &["source", "component"]);
            // events.k8s.io/v1 Events carry it as deprecatedSource.
            return if core.is_empty() {
                lookup(obj, &["deprecatedSource", "component"])
            } else {
                core
            };
        }
        ("Event", f) if f.starts_with("involvedObject.") => {
            let rest: Vec<&str> = f.split('.').skip(1).collect();
            let mut path = vec!["involvedObject"];
            path.extend(&rest);
            let core = lookup(obj, &path);
            if core.is_empty() && obj.get("involvedObject").is_none() {
                // events.k8s.io/v1 shape: the same reference is called `regarding`.
                let mut path = vec!["regarding"];
                path.extend(&rest);
                return lookup(obj, &path);
            }
            return core;
        }
        ("Event", "reportingComponent") => {
            let core = lookup(obj, &["reportingComponent"]);
            return if core.is_empty() { lookup(obj, &["reportingController"]) } else { core };
        }
        ("Job", "status.successful") => vec!["status", "succeeded"],
        _ => field.split('.').collect(),
    };
    lookup(obj, &path)
}

fn lookup(obj: &Value, path: &[&str]) -> String {
    let mut cur = obj;
    for p in path {
        match cur.get(p) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Splits on `sep` not preceded by a backslash (upstream allows `\,` and `\=` in values).
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Splits `field<op>value` at the first unescaped `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]));
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], true, &term[i + 2..]));
            }
            b'=' => return Some((&term[..i], true, &term[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_and_namespace_with_all_operators() {
        let obj = json!({"metadata": {"name": "b1", "namespace": "velero"}});
        for (s, want) in [
            ("metadata.name=b1", true),
            ("metadata.name==b1", true),
            ("metadata.name!=b1", false),
            ("metadata.name=b2", false),
            ("metadata.name=b1,metadata.namespace=velero", true),
            ("metadata.name=b1,metadata.namespace!=velero", false),
            (" metadata.namespace = velero ", true),
            ("", true),
        ] {
            assert_eq!(parse(s, "Backup").unwrap().matches(&obj), want, "{s}");
        }
        let f = parse("metadata.name=b1,metadata.namespace=velero", "Backup").unwrap();
        assert_eq!(f.name(), Some("b1"));
        assert_eq!(f.namespace(), Some("velero"));
        assert_eq!(parse("metadata.name!=b1", "Backup").unwrap().name(), None);
    }

    #[test]
    fn cluster_scoped_objects_have_an_empty_namespace() {
        let obj = json!({"metadata": {"name": "default"}});
        assert!(parse("metadata.namespace=", "Namespace").unwrap().matches(&obj));
        assert!(!parse("metadata.namespace=x", "Namespace").unwrap().matches(&obj));
    }

    #[test]
    fn unknown_fields_are_rejected_with_the_allowed_list() {
        assert_eq!(
            parse("spec.foo=1", "Backup").unwrap_err(),
            r#""spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        let err = parse("spec.foo=1", "Secret").unwrap_err();
        assert_eq!(
            err,
            r#""spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace", "type""#
        );
        assert!(parse("status.phase=Running", "Backup").is_err());
        assert!(parse("metadata.name", "Backup").unwrap_err().contains("can't understand"));
    }

    #[test]
    fn event_fields_core_and_events_v1() {
        let core = json!({"metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Backup", "name": "b1", "namespace": "velero", "uid": "u1",
                               "apiVersion": "velero.io/v1", "resourceVersion": "7", "fieldPath": "spec"},
            "reason": "Completed", "type": "Normal", "source": {"component": "holdfast"},
            "reportingComponent": "holdfast-ctl"});
        for s in [
            "involvedObject.kind=Backup,involvedObject.name=b1",
            "involvedObject.namespace=velero,involvedObject.uid=u1",
            "involvedObject.apiVersion=velero.io/v1,involvedObject.resourceVersion=7",
            "involvedObject.fieldPath=spec",
            "reason=Completed,type=Normal",
            "source=holdfast",
            "reportingComponent=holdfast-ctl",
            "type!=Warning",
        ] {
            assert!(parse(s, "Event").unwrap().matches(&core), "{s}");
        }
        assert!(!parse("type=Warning", "Event").unwrap().matches(&core));
        let v1 = json!({"metadata": {"name": "e1"}, "regarding": {"kind": "Backup", "name": "b1"},
            "reason": "Completed", "type": "Normal", "reportingController": "holdfast",
            "deprecatedSource": {"component": "holdfast-src"}});
        assert!(parse("involvedObject.name=b1,source=holdfast-src", "Event").unwrap().matches(&v1));
        assert!(parse("reportingComponent=holdfast", "Event").unwrap().matches(&v1));
    }

    #[test]
    fn pod_and_secret_fields() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running"}});
        assert!(parse("spec.nodeName=n1,status.phase=Running", "Pod").unwrap().matches(&pod));
        assert!(
            parse("status.phase!=Succeeded,spec.hostNetwork=true", "Pod").unwrap().matches(&pod)
        );
        assert!(!parse("spec.nodeName=", "Pod").unwrap().matches(&pod));
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        assert!(parse("type=kubernetes.io/tls", "Secret").unwrap().matches(&secret));
        assert!(!parse("type=Opaque", "Secret").unwrap().matches(&secret));
    }

    #[test]
    fn escaped_separators_in_values() {
        let obj = json!({"metadata": {"name": "a,b=c"}});
        assert!(parse(r"metadata.name=a\,b\=c", "ConfigMap").unwrap().matches(&obj));
    }
}
