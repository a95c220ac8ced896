//! LIST: selectors, paging with opaque continue tokens, and the list envelope (or a Table).
//!
//! Reads always serve the latest state (`resourceVersion` unset, `0` and `N` with NotOlderThan
//! all allow that); a continue token remembers the revision of the first page and the last key
//! returned, and expires (410) once the store has compacted past that revision, as etcd does.

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use holdfast_api::ResourceDef;
use holdfast_api::selector::LabelSelector;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::from_storage;
use super::request::Params;
use super::write::Req;
use super::{json_response, storage_resource, store_error};
use crate::error::ApiError;
use crate::fieldselector::{self, FieldSelector};
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
pub(crate) struct Page {
    pub items: Vec<Value>,
    pub metadata: Value,
}

/// Lists the objects of `rq`'s kind and scope that match its selectors, one page.
pub(crate) fn list_page(rq: &Req, filter: &Filter) -> Result<Page, ApiError> {
    let store = rq.server.store();
    let resource = storage_resource(&rq.def);
    let ns = rq.target.namespace.as_deref();
    let token = rq.params.continue_token.as_deref().map(decode_continue).transpose()?;
    if let Some(t) = &token
        && t.rv < store.compacted_rev()
    {
        return Err(ApiError::expired(CONTINUE_EXPIRED));
    }
    let limit = rq.params.limit;
    let selective = filter.is_selective();
    let mut list_rev = token.as_ref().map(|t| t.rv);
    let mut after = token.map(|t| (t.ns, t.name));
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining_count = None;
    'pages: loop {
        // Without selectors every stored object is returned, so a page of exactly the rest of
        // the limit suffices; with them, read ahead in bigger pages.
        let want = limit.map(|l| if selective { l.max(256) } else { l - items.len() });
        let after_ref = after.as_ref().map(|(a, b): &(String, String)| (a.as_str(), b.as_str()));
        let (page, rev, remaining) =
            store.list(&resource, ns, after_ref, want).map_err(store_error)?;
        list_rev.get_or_insert(rev);
        let n = page.len();
        for (i, s) in page.into_iter().enumerate() {
            let last = (s.key.namespace.clone(), s.key.name.clone());
            let mut view = from_storage(&rq.def, s.object.clone());
            if filter.matches(&s.object, &view) {
                ensure_type_meta(&rq.def, &mut view);
                items.push(view);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let left = (n - i - 1) as u64 + remaining;
                if left > 0 {
                    next = Some(last);
                    if !selective {
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
    let rev = list_rev.unwrap_or_else(|| store.current_rev());
    let mut metadata = json!({"resourceVersion": rev.to_string()});
    if let Some((ns, name)) = next {
        metadata["continue"] = encode_continue(&ContinueToken { rv: rev, ns, name }).into();
    }
    if let Some(n) = remaining_count {
        metadata["remainingItemCount"] = n.into();
    }
    Ok(Page { items, metadata })
}

/// GET on a collection (without `watch`).
pub(crate) async fn list(rq: &Req) -> Result<Response, ApiError> {
    let filter = Filter::new(&rq.def, &rq.params)?;
    let page = list_page(rq, &filter)?;
    if table::wants_table(&rq.accept) {
        let t = table::table(&rq.def, &page.items, page.metadata, true, jiff::Timestamp::now());
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(json_response(StatusCode::OK, &list_body(&rq.def, page.items, page.metadata)))
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
