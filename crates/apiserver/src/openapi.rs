//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group
//! version.
//!
//! kubectl needs them for two things: `apply`/`create`/`replace`/`edit` look for a PATCH operation
//! carrying the object's `x-kubernetes-group-version-kind` and a `fieldValidation` parameter (then
//! leave validation to the server), and `explain` reads `components.schemas` entries by their
//! group-version-kind. Custom kinds are described by the same `openAPIV3Schema` the server
//! validates with; built-in kinds by k8s-openapi's schemas (generated with schemars), which carry
//! the upstream names (`io.k8s.api.core.v1.Pod`) and descriptions.

mod builtin;

use std::hash::{DefaultHasher, Hasher};

use holdfast_api::ResourceDef;
use serde_json::{Map, Value, json};

/// The Kubernetes version the documents claim, matching `/version`.
const KUBERNETES_VERSION: &str = "v1.32.0";

const REF_PREFIX: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The index path of a group version: `api/v1` or `apis/{group}/{version}`.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// Every served group version, core first, in registry order.
fn group_versions(defs: &[ResourceDef]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for d in defs {
        let gv = (d.group.as_str(), d.version.as_str());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}

/// A stable fingerprint of a document: kubectl caches documents under their `?hash=` URL, so it
/// must change whenever the document does. Not cryptographic; collisions only cost a stale cache.
pub fn document_hash(doc: &Value) -> String {
    let mut h = DefaultHasher::new();
    h.write(doc.to_string().as_bytes());
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: one entry per group version, pointing at its document with a content hash.
pub fn v3_index(defs: &[ResourceDef]) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(defs) {
        let Some(doc) = v3_group_version(defs, group, version) else {
            continue;
        };
        let path = group_version_path(group, version);
        let url = format!("/openapi/v3/{path}?hash={}", document_hash(&doc));
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// The component name of a kind: upstream's for built-ins (`io.k8s.api.core.v1.Pod`,
/// `io.k8s.api.batch.v1.Job`), reverse-DNS group, version and kind for custom kinds
/// (`io.velero.v1.Backup`), as the apiserver names CRD schemas.
pub fn schema_name(def: &ResourceDef) -> String {
    if def.builtin {
        if let Some(name) = builtin::schema_name(&def.group, &def.version, &def.kind) {
            return name;
        }
        let group = if def.group.is_empty() {
            "core"
        } else {
            def.group.strip_suffix(".k8s.io").unwrap_or(&def.group)
        };
        return format!("io.k8s.api.{group}.{}.{}", def.version, def.kind);
    }
    let mut parts: Vec<&str> = def.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), def.version, def.kind)
}

fn gvk(def: &ResourceDef, kind: &str) -> Value {
    json!({"group": def.group, "version": def.version, "kind": kind})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

/// The schema of a custom kind: its structural schema with `apiVersion`, `kind` and `metadata`
/// (referencing ObjectMeta) described as the apiserver publishes them.
fn custom_schema(def: &ResourceDef) -> Value {
    let mut schema = def.schema.clone();
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    let obj = schema.as_object_mut().expect("made an object above");
    obj.remove("title");
    if !obj.contains_key("description") {
        obj.insert(
            "description".into(),
            json!(format!("{} is a {} resource.", def.kind, def.qualified_kind())),
        );
    }
    let props = obj.entry("properties").or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": API_VERSION_DESCRIPTION}),
        );
        props.insert("kind".into(), json!({"type": "string", "description": KIND_DESCRIPTION}));
        props.insert(
            "metadata".into(),
            json!({"allOf": [schema_ref(OBJECT_META)], "description": METADATA_DESCRIPTION}),
        );
    }
    schema
}

fn list_schema(def: &ResourceDef, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {}", def.kind, def.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": API_VERSION_DESCRIPTION},
            "items": {"type": "array", "items": schema_ref(item),
                "description": format!("List of {}.", def.plural)},
            "kind": {"type": "string", "description": KIND_DESCRIPTION},
            "metadata": {"allOf": [schema_ref(LIST_META)],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"},
        },
        "x-kubernetes-group-version-kind": [gvk(def, &format!("{}List", def.kind))],
    })
}

fn param(name: &str, location: &str, type_: &str, description: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "description": description,
        "schema": {"type": type_, "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn path_params(namespaced: bool, item: bool) -> Vec<Value> {
    let mut out = Vec::new();
    if item {
        out.push(param("name", "path", "string", "name of the resource"));
    }
    if namespaced {
        out.push(param(
            "namespace",
            "path",
            "string",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    out
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut out = vec![
        param(
            "dryRun",
            "query",
            "string",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        param(
            "fieldManager",
            "query",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "query",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict",
        ),
    ];
    if patch {
        out.push(param("force", "query", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people."));
    }
    out
}

fn list_params() -> Vec<Value> {
    vec![
        param(
            "allowWatchBookmarks",
            "query",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        param(
            "continue",
            "query",
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        param(
            "fieldSelector",
            "query",
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        param(
            "labelSelector",
            "query",
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        param(
            "limit",
            "query",
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        param(
            "resourceVersion",
            "query",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        param(
            "resourceVersionMatch",
            "query",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        param(
            "sendInitialEvents",
            "query",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
        ),
        param("timeoutSeconds", "query", "integer", "Timeout for the list/watch call."),
        param(
            "watch",
            "query",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ),
    ]
}

fn body(types: &[&str], schema: Value) -> Value {
    let content: Map<String, Value> =
        types.iter().map(|t| (t.to_string(), json!({"schema": schema}))).collect();
    json!({"content": content, "required": true})
}

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        out.insert(
            code.to_string(),
            json!({"description": description, "content": {
                "application/json": {"schema": schema}, "application/yaml": {"schema": schema}}}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

/// `readCoreV1NamespacedPod`, `patchVeleroIoV1NamespacedBackupStatus`, as upstream names them.
fn operation_id(verb: &str, def: &ResourceDef, namespaced: bool, suffix: &str) -> String {
    let camel = |s: &str| -> String {
        s.split(['.', '-'])
            .map(|p| {
                let mut c = p.chars();
                c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
            })
            .collect()
    };
    let group = if def.group.is_empty() { "Core".to_string() } else { camel(&def.group) };
    let ns = if namespaced { "Namespaced" } else { "" };
    format!("{verb}{group}{}{ns}{}{suffix}", camel(&def.version), def.kind)
}

struct Op<'a> {
    verb: &'a str,
    action: &'a str,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

fn operation(def: &ResourceDef, namespaced: bool, suffix: &str, op: Op<'_>) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), json!(op.description));
    out.insert("operationId".into(), json!(operation_id(op.verb, def, namespaced, suffix)));
    out.insert("parameters".into(), Value::Array(op.params));
    if let Some(b) = op.body {
        out.insert("requestBody".into(), b);
    }
    out.insert("responses".into(), op.responses);
    out.insert("x-kubernetes-action".into(), json!(op.action));
    out.insert("x-kubernetes-group-version-kind".into(), gvk(def, &def.kind));
    Value::Object(out)
}

fn patch_types(def: &ResourceDef) -> Vec<&'static str> {
    let mut t = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if def.builtin {
        t.push("application/strategic-merge-patch+json");
    }
    t
}

/// Item operations: get, put, patch (and delete on the object itself, not on `/status`).
fn item_path(def: &ResourceDef, kind_ref: &Value, status: bool) -> Value {
    let (suffix, what) =
        if status { ("Status", "status of the specified ") } else { ("", "the specified ") };
    let ns = def.namespaced;
    let base = path_params(ns, true);
    let with = |extra: Vec<Value>| -> Vec<Value> { base.iter().cloned().chain(extra).collect() };
    let mut item = Map::new();
    item.insert(
        "get".into(),
        operation(
            def,
            ns,
            suffix,
            Op {
                verb: "read",
                action: "get",
                description: format!("read {what}{}", def.kind),
                params: base.clone(),
                body: None,
                responses: responses(&[("200", "OK")], kind_ref),
            },
        ),
    );
    item.insert(
        "put".into(),
        operation(
            def,
            ns,
            suffix,
            Op {
                verb: "replace",
                action: "put",
                description: format!("replace {what}{}", def.kind),
                params: with(write_params(false)),
                body: Some(body(&["application/json", "application/yaml"], kind_ref.clone())),
                responses: responses(&[("200", "OK"), ("201", "Created")], kind_ref),
            },
        ),
    );
    item.insert(
        "patch".into(),
        operation(
            def,
            ns,
            suffix,
            Op {
                verb: "patch",
                action: "patch",
                description: format!("partially update {what}{}", def.kind),
                params: with(write_params(true)),
                body: Some(body(&patch_types(def), schema_ref(PATCH))),
                responses: responses(&[("200", "OK"), ("201", "Created")], kind_ref),
            },
        ),
    );
    if !status {
        item.insert("delete".into(), operation(def, ns, suffix, Op {
            verb: "delete",
            action: "delete",
            description: format!("delete a {}", def.kind),
            params: with(vec![
                param("dryRun", "query", "string", "When present, indicates that modifications should not be persisted."),
                param("gracePeriodSeconds", "query", "integer", "The duration in seconds before the object should be deleted."),
                param("propagationPolicy", "query", "string", "Whether and how garbage collection will be performed."),
            ]),
            body: Some(json!({"content": {"application/json": {"schema": schema_ref(DELETE_OPTIONS)}}})),
            responses: responses(&[("200", "OK"), ("202", "Accepted")], kind_ref),
        }));
    }
    Value::Object(item)
}

fn collection_path(
    def: &ResourceDef,
    kind_ref: &Value,
    list_ref: &Value,
    namespaced: bool,
    create: bool,
) -> Value {
    let suffix = if namespaced || !def.namespaced { "" } else { "ForAllNamespaces" };
    let mut coll = Map::new();
    coll.insert(
        "get".into(),
        operation(
            def,
            namespaced,
            suffix,
            Op {
                verb: "list",
                action: "list",
                description: format!("list or watch objects of kind {}", def.kind),
                params: path_params(namespaced, false).into_iter().chain(list_params()).collect(),
                body: None,
                responses: responses(&[("200", "OK")], list_ref),
            },
        ),
    );
    if create {
        coll.insert(
            "post".into(),
            operation(
                def,
                namespaced,
                suffix,
                Op {
                    verb: "create",
                    action: "post",
                    description: format!("create a {}", def.kind),
                    params: path_params(namespaced, false)
                        .into_iter()
                        .chain(write_params(false))
                        .collect(),
                    body: Some(body(&["application/json", "application/yaml"], kind_ref.clone())),
                    responses: responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        kind_ref,
                    ),
                },
            ),
        );
    }
    Value::Object(coll)
}

/// Adds `name` and every schema it references (transitively) from `pool` to `out`.
fn add_with_refs(name: &str, pool: &Map<String, Value>, out: &mut Map<String, Value>) {
    let mut pending = vec![name.to_string()];
    while let Some(n) = pending.pop() {
        if out.contains_key(&n) {
            continue;
        }
        let Some(schema) = pool.get(&n) else {
            continue;
        };
        collect_refs(schema, &mut pending);
        out.insert(n, schema.clone());
    }
}

fn collect_refs(v: &Value, into: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) =
                m.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                into.push(r.to_string());
            }
            m.values().for_each(|c| collect_refs(c, into));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, into)),
        _ => {}
    }
}

/// The document of one group version (`/openapi/v3/apis/{group}/{version}`); `None` when no kind
/// is served there.
pub fn v3_group_version(defs: &[ResourceDef], group: &str, version: &str) -> Option<Value> {
    let mut in_gv: Vec<&ResourceDef> =
        defs.iter().filter(|d| d.group == group && d.version == version).collect();
    if in_gv.is_empty() {
        return None;
    }
    in_gv.sort_by(|a, b| a.plural.cmp(&b.plural));
    let pool = builtin::definitions();
    let mut schemas = Map::new();
    for name in [OBJECT_META, LIST_META, DELETE_OPTIONS, STATUS] {
        add_with_refs(name, pool, &mut schemas);
    }
    schemas.insert(
        PATCH.into(),
        json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}),
    );
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    for def in in_gv {
        let name = schema_name(def);
        let gvks = json!([gvk(def, &def.kind)]);
        let known = def.builtin && pool.contains_key(&name);
        if known {
            add_with_refs(&name, pool, &mut schemas);
            if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                s.insert("x-kubernetes-group-version-kind".into(), gvks);
            }
        } else if def.builtin {
            // A built-in kind k8s-openapi has no schema for here: free-form, still found by GVK.
            schemas.insert(
                name.clone(),
                json!({"type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": gvks}),
            );
        } else {
            let mut s = custom_schema(def);
            s["x-kubernetes-group-version-kind"] = gvks;
            schemas.insert(name.clone(), s);
        }
        let list_name = format!("{name}List");
        schemas.insert(list_name.clone(), list_schema(def, &name));

        let kind_ref = schema_ref(&name);
        let list_ref = schema_ref(&list_name);
        let collection = if def.namespaced {
            paths.insert(
                format!("{prefix}/{}", def.plural),
                collection_path(def, &kind_ref, &list_ref, false, false),
            );
            format!("{prefix}/namespaces/{{namespace}}/{}", def.plural)
        } else {
            format!("{prefix}/{}", def.plural)
        };
        paths.insert(
            collection.clone(),
            collection_path(def, &kind_ref, &list_ref, def.namespaced, true),
        );
        paths.insert(format!("{collection}/{{name}}"), item_path(def, &kind_ref, false));
        if def.status_subresource {
            paths.insert(format!("{collection}/{{name}}/status"), item_path(def, &kind_ref, true));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests;
