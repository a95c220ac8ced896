//! LIST: selectors, paging with opaque continue tokens, and the list envelope (or a Table).
//!
//! Reads serve the latest state unless the request asks for an exact revision
//! (`resourceVersionMatch=Exact`, or a continue token): the store rebuilds that from its event
//! log, and answers 410 Expired once the log no longer reaches back that far, as etcd does.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use holdfast_api::selector::LabelSelector;
use holdfast_api::{FieldError, ResourceDef};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::{from_storage, is_event_v1};
use super::request::Params;
use super::write::Req;
use super::{json_response, storage_resource, store_error};
use crate::error::ApiError;
use crate::fieldselector::{self, FieldSelector};
use crate::store::{RawObject, Store, StoreError};
use crate::table;

/// The apiserver's message for an expired continue token.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. \
     You can start a new list without the continue parameter, or use the continue token in this response to \
     retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - \
     objects that were created, modified, or deleted between the time the first chunk was returned and now may \
     show up in the list.";

/// Label and field selectors of a list, watch or deletecollection request.
pub(crate) struct Filter {
    label: Option<LabelSelector>,
    field: Option<FieldSelector>,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector`.
    ///
    /// # Errors
    /// 400 BadRequest naming what is wrong with a selector.
    pub fn new(def: &ResourceDef, params: &Params) -> Result<Filter, ApiError> {
        let label = params
            .label_selector
            .as_deref()
            .map(|s| s.parse::<LabelSelector>())
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let field = params
            .field_selector
            .as_deref()
            .map(|s| fieldselector::parse(s, &def.kind))
            .transpose()
            .map_err(ApiError::bad_request)?;
        Ok(Filter { label, field })
    }

    /// Whether any selector is set.
    pub fn is_selective(&self) -> bool {
        self.label.is_some() || self.field.is_some()
    }

    /// Whether an object matches. Field selectors see the stored form (for events.k8s.io Events
    /// that is the core form, whose `involvedObject.*` fields the selectors name).
    pub fn matches(&self, stored: &Value, view: &Value) -> bool {
        if self.label.as_ref().is_some_and(|l| !l.matches_object(view)) {
            return false;
        }
        self.field.as_ref().is_none_or(|f| f.matches(stored))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    /// Revision of the first page.
    rv: u64,
    /// Namespace and name of the last object returned.
    ns: String,
    name: String,
}

fn encode_continue(t: &ContinueToken) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

/// Puts `apiVersion` and `kind` on an object that lacks them.
pub(crate) fn ensure_type_meta(def: &ResourceDef, obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.entry("apiVersion").or_insert_with(|| def.api_version().into());
        o.entry("kind").or_insert_with(|| def.kind.clone().into());
    }
}

/// One page of a list.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    pub metadata: Value,
}

/// What one list request reads: where, from which key, at which revision.
struct Query {
    store: Store,
    resource: String,
    namespace: Option<String>,
    limit: Option<usize>,
    /// Whether items may be dropped by selectors (so pages are read ahead).
    selective: bool,
    /// The (namespace, name) the page starts after, from the continue token.
    after: Option<(String, String)>,
    /// The revision to read at (`None`: the latest).
    at: Option<u64>,
    /// Whether `at` came from a continue token (its expiry has its own message).
    continued: bool,
}

/// The revision a list reads at, from `resourceVersion`, `resourceVersionMatch` and a continue
/// token, with the apiserver's rules (`ValidateListOptions`; the etcd3 store's `GetList`):
/// unset → latest; `0` → any (we serve the latest); `N` with `NotOlderThan` → the latest, which
/// is not older unless N is in the future (504); `N` with `Exact`, or with a `limit` and no match
/// (the legacy paged semantics) → exactly N, or 410 once N is compacted. A continue token reads
/// at the revision of the first page, so every page comes from one snapshot.
fn read_revision(
    params: &Params,
    token: Option<&ContinueToken>,
    current: u64,
) -> Result<Option<u64>, ApiError> {
    let rv = params.resource_version.as_deref();
    let mode = params.resource_version_match.as_deref();
    let forbidden = |msg: &str| {
        ApiError::invalid_list_options(&[FieldError::forbidden("resourceVersionMatch", msg)])
    };
    if let Some(m) = mode
        && m != "Exact"
        && m != "NotOlderThan"
    {
        return Err(ApiError::invalid_list_options(&[FieldError::not_supported(
            "resourceVersionMatch",
            m,
            &["Exact", "NotOlderThan", ""],
        )]));
    }
    if let Some(t) = token {
        if mode.is_some() {
            return Err(forbidden("resourceVersionMatch is forbidden when continue is provided"));
        }
        if rv.is_some_and(|v| v != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        return Ok(Some(t.rv));
    }
    let Some(rv) = rv else {
        return match mode {
            Some(_) => Err(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
            None => Ok(None),
        };
    };
    if rv == "0" {
        return match mode {
            Some("Exact") => Err(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            )),
            _ => Ok(None),
        };
    }
    let n = rv
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
    match mode {
        Some("Exact") => Ok(Some(n)),
        None if params.limit.is_some() => Ok(Some(n)),
        _ if n > current => Err(ApiError::too_large_resource_version(n, current)),
        _ => Ok(None),
    }
}

/// Reads one page, keeping the objects `keep` returns something for, from a blocking thread
/// (SQLite reads block).
async fn read_page<T, F>(q: Query, keep: F) -> Result<Page<T>, ApiError>
where
    T: Send + 'static,
    F: FnMut(RawObject) -> Result<Option<T>, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || page_of(q, keep))
        .await
        .map_err(|e| ApiError::internal(format!("list task failed: {e}")))?
}

fn page_of<T>(
    q: Query,
    mut keep: impl FnMut(RawObject) -> Result<Option<T>, ApiError>,
) -> Result<Page<T>, ApiError> {
    let limit = q.limit;
    let mut after = q.after;
    let mut list_rev = None;
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining_count = None;
    'pages: loop {
        // Without selectors every stored object is returned, so a page of exactly the rest of
        // the limit suffices; with them, read ahead in bigger pages.
        let want = limit.map(|l| if q.selective { l.max(256) } else { l - items.len() });
        let after_ref = after.as_ref().map(|(a, b): &(String, String)| (a.as_str(), b.as_str()));
        let (page, rev, remaining) = q
            .store
            .list_raw(&q.resource, q.namespace.as_deref(), after_ref, want, q.at)
            .map_err(|e| match e {
                StoreError::Compacted { .. } if q.continued => ApiError::expired(CONTINUE_EXPIRED),
                other => store_error(other),
            })?;
        list_rev.get_or_insert(rev);
        let n = page.len();
        for (i, o) in page.into_iter().enumerate() {
            let last = (o.namespace.clone(), o.name.clone());
            if let Some(item) = keep(o)? {
                items.push(item);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let left = (n - i - 1) as u64 + remaining;
                if left > 0 {
                    next = Some(last);
                    if !q.selective {
                        remaining_count = Some(left);
                    }
                }
                break 'pages;
            }
            after = Some(last);
        }
        if remaining == 0 || n == 0 {
            break;
        }
    }
    let rev = list_rev.unwrap_or_else(|| q.store.current_rev());
    let mut metadata = json!({"resourceVersion": rev.to_string()});
    if let Some((ns, name)) = next {
        metadata["continue"] = encode_continue(&ContinueToken { rv: rev, ns, name }).into();
    }
    if let Some(n) = remaining_count {
        metadata["remainingItemCount"] = n.into();
    }
    Ok(Page { items, metadata })
}

/// The parts of a stored object the list fast path reads: enough to check the type meta and
/// match labels, skipping everything else without building it.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Deserialize, Default)]
struct HeadMeta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses a stored row. A row the store holds is always valid JSON; failing that is a store
/// fault, reported as such.
fn parse_stored(o: &RawObject) -> Result<Value, ApiError> {
    serde_json::from_slice(&o.raw).map_err(|e| {
        ApiError::internal(format!(
            "storage error: stored {}/{} is not JSON: {e}",
            o.namespace, o.name
        ))
    })
}

/// The `def` view of a stored object if it passes `filter`.
fn keep_parsed(
    def: &ResourceDef,
    filter: &Filter,
    o: &RawObject,
) -> Result<Option<Value>, ApiError> {
    let stored = parse_stored(o)?;
    let mut view = if is_event_v1(def) {
        let view = from_storage(def, stored.clone());
        if !filter.matches(&stored, &view) {
            return Ok(None);
        }
        view
    } else {
        if !filter.matches(&stored, &stored) {
            return Ok(None);
        }
        stored
    };
    ensure_type_meta(def, &mut view);
    Ok(Some(view))
}

/// GET on a collection (without `watch`).
///
/// The common case (JSON, no field selector, stored form = served form) copies each stored row
/// into the response as it is: only the type meta and labels are looked at, so a list of 10,000
/// objects costs one pass over their bytes instead of a parse, a copy and a serialisation.
pub(crate) async fn list(rq: &Req) -> Result<Response, ApiError> {
    let filter = Filter::new(&rq.def, &rq.params)?;
    let store = rq.server.store().clone();
    let token = rq.params.continue_token.as_deref().map(decode_continue).transpose()?;
    let at = read_revision(&rq.params, token.as_ref(), store.current_rev())?;
    let query = Query {
        store,
        resource: storage_resource(&rq.def),
        namespace: rq.target.namespace.clone(),
        limit: rq.params.limit,
        selective: filter.is_selective(),
        continued: token.is_some(),
        after: token.map(|t| (t.ns, t.name)),
        at,
    };
    let def = rq.def.clone();
    if table::wants_table(&rq.accept) {
        let page = read_page(query, move |o| keep_parsed(&def, &filter, &o)).await?;
        let t = table::table(&rq.def, &page.items, page.metadata, true, jiff::Timestamp::now());
        return Ok(json_response(StatusCode::OK, &t));
    }
    let raw_ok = filter.field.is_none() && !is_event_v1(&rq.def);
    let page = read_page(query, move |o| {
        if raw_ok && let Ok(head) = serde_json::from_slice::<Head>(&o.raw) {
            if filter.label.as_ref().is_some_and(|l| !l.matches(&head.metadata.labels)) {
                return Ok(None);
            }
            if head.api_version.is_some() && head.kind.is_some() {
                return Ok(Some(o.raw));
            }
        }
        keep_parsed(&def, &filter, &o)?
            .map(|v| serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string())))
            .transpose()
    })
    .await?;
    let body = raw_list_body(&rq.def, &page.items, &page.metadata);
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// The `<Kind>List` envelope around items that are JSON already.
fn raw_list_body(def: &ResourceDef, items: &[Vec<u8>], metadata: &Value) -> Vec<u8> {
    let head = json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(), "metadata": metadata})
        .to_string();
    let size = head.len() + items.iter().map(|i| i.len() + 1).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(size);
    // `head` is an object literal: reopen it to append the items.
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(br#","items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// The `<Kind>List` envelope.
pub(crate) fn list_body(def: &ResourceDef, items: Vec<Value>, metadata: Value) -> Value {
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(&ContinueToken { rv: 42, ns: "default".into(), name: "b".into() });
        let back = decode_continue(&t).unwrap();
        assert_eq!((back.rv, back.ns.as_str(), back.name.as_str()), (42, "default", "b"));
        assert_eq!(decode_continue("%%%").unwrap_err().code, 400);
    }
}
