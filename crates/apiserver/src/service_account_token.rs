//! ServiceAccount tokens: `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` (the
//! TokenRequest subresource `kubectl create token` calls) issues a signed JWT naming the
//! ServiceAccount, and the authentication layer accepts it until it expires or the ServiceAccount
//! is deleted, as the apiserver does for bound service account tokens.
//!
//! The JWT is signed with HMAC-SHA256 under a key only this server holds (`<data-dir>/pki/sa.key`,
//! 0600): clients treat the token as opaque, and only this server verifies it, so a shared-secret
//! signature is enough.

use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{TokenError, User, random_token};
use crate::data_dir::create_private_dir;
use crate::error::ApiError;
use crate::protobuf::fields::Message;
use crate::rbac::{AUTHENTICATED, service_account_user};
use crate::store::{Key, Store};
use crate::tls::write_private_file;

/// The issuer and default audience of the tokens (what kubeadm clusters use), so a token minted
/// here reads like one from a cluster.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Validity when the request does not say (upstream's default `expirationSeconds`).
const DEFAULT_SECONDS: i64 = 3600;
/// Upstream's bounds on `spec.expirationSeconds`.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct ServiceAccountRef {
    name: String,
    uid: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: ServiceAccountRef,
}

/// The claims of a bound service account token, as upstream writes them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Claims {
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    iss: String,
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

/// Signs and verifies ServiceAccount tokens.
#[derive(Clone)]
pub struct Issuer {
    key: hmac::Key,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer with a signing key (any length; 32 random bytes are generated on disk).
    pub fn new(secret: &[u8]) -> Issuer {
        Issuer { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// Reads `<dir>/pki/sa.key`, or creates it (mode 0600) with a fresh random key.
    ///
    /// # Errors
    /// The key cannot be read, written or generated.
    pub fn load_or_create(dir: &Path) -> Result<Issuer, TokenError> {
        let path: PathBuf = dir.join("pki").join("sa.key");
        let io_err = |source| TokenError::Io { path: path.clone(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(Issuer::new(text.trim().as_bytes())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let secret = random_token()?;
        if let Some(parent) = path.parent() {
            create_private_dir(parent).map_err(io_err)?;
        }
        write_private_file(&path, format!("{secret}\n").as_bytes()).map_err(io_err)?;
        Ok(Issuer::new(secret.as_bytes()))
    }

    fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of `token` if this issuer signed it, it is valid at `now` (unix seconds) and
    /// meant for this server.
    fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.key, signing_input.as_bytes(), &signature).ok()?;
        let (_, body) = signing_input.split_once('.')?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.iss == ISSUER
            && claims.nbf <= now
            && now < claims.exp
            && claims.aud.iter().any(|a| a == ISSUER))
        .then_some(claims)
    }

    /// The user a ServiceAccount token authenticates as, if it is valid now and its
    /// ServiceAccount still exists with the uid it was issued for.
    pub fn authenticate(&self, store: &Store, token: &str) -> Option<User> {
        if token.matches('.').count() != 2 {
            return None;
        }
        let claims = self.verify(token, jiff::Timestamp::now().as_second())?;
        let k = &claims.kubernetes;
        let key = Key::new("/serviceaccounts", k.namespace.clone(), k.serviceaccount.name.clone());
        let account = store.get(&key).ok()??;
        if account.object.pointer("/metadata/uid").and_then(Value::as_str)
            != Some(k.serviceaccount.uid.as_str())
        {
            return None;
        }
        Some(User {
            name: service_account_user(&k.namespace, &k.serviceaccount.name),
            uid: k.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", k.namespace),
                AUTHENTICATED.into(),
            ],
        })
    }
}

/// What a TokenRequest asks for.
#[derive(Debug, PartialEq)]
struct Spec {
    audiences: Vec<String>,
    expiration_seconds: Option<i64>,
    bound: bool,
}

fn decode_spec(body: &[u8], protobuf: bool) -> Result<Spec, ApiError> {
    if protobuf {
        let spec = Message::from_envelope(body)
            .filter(Message::is_valid)
            .ok_or_else(|| ApiError::bad_request("the request body is not a valid TokenRequest"))?
            .message(2);
        return Ok(match spec {
            Some(spec) => Spec {
                audiences: spec.strings(1),
                expiration_seconds: spec.int(4),
                bound: spec.message(3).is_some(),
            },
            None => Spec { audiences: Vec::new(), expiration_seconds: None, bound: false },
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let spec = &value["spec"];
    Ok(Spec {
        audiences: spec["audiences"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        expiration_seconds: spec["expirationSeconds"].as_i64(),
        bound: spec.get("boundObjectRef").is_some_and(|b| !b.is_null()),
    })
}

fn invalid(name: &str, field: &str, value: Value, detail: &str) -> ApiError {
    let error = holdfast_api::FieldError::invalid(field, value, detail);
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io {name:?} is invalid: {}", error.message()),
    );
    e.details = Some(Box::new(json!({"name": name, "group": "authentication.k8s.io",
        "kind": "TokenRequest", "causes": [{"reason": error.kind.reason(),
        "message": error.message().trim_start_matches(&format!("{field}: ")), "field": field}]})));
    e
}

/// Answers a TokenRequest for ServiceAccount `namespace/name` (201 with `status.token`).
///
/// # Errors
/// The body does not decode (400), the ServiceAccount does not exist (404), the duration is out
/// of bounds or a bound object is asked for (422), or the store failed.
pub fn create(
    issuer: &Issuer,
    store: &Store,
    namespace: &str,
    name: &str,
    body: &[u8],
    protobuf: bool,
) -> Result<Value, ApiError> {
    let spec = decode_spec(body, protobuf)?;
    let key = Key::new("/serviceaccounts", namespace, name);
    let account = store
        .get(&key)
        .map_err(|e| ApiError::internal(format!("storage error: {e}")))?
        .ok_or_else(|| {
        let mut e = ApiError::new(404, "NotFound", format!("serviceaccounts {name:?} not found"));
        e.details = Some(Box::new(json!({"name": name, "kind": "serviceaccounts"})));
        e
    })?;
    let seconds = spec.expiration_seconds.unwrap_or(DEFAULT_SECONDS);
    if seconds < MIN_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            json!(seconds),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > MAX_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            json!(seconds),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if spec.bound {
        return Err(invalid(
            name,
            "spec.boundObjectRef",
            Value::Null,
            "binding a token to a Pod or Secret is not supported by this server",
        ));
    }
    let audiences =
        if spec.audiences.is_empty() { vec![ISSUER.to_string()] } else { spec.audiences };
    let uid = account.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        aud: audiences.clone(),
        exp: now + seconds,
        iat: now,
        nbf: now,
        iss: ISSUER.into(),
        sub: service_account_user(namespace, name),
        kubernetes: KubernetesClaims {
            namespace: namespace.into(),
            serviceaccount: ServiceAccountRef { name: name.into(), uid: uid.into() },
        },
    };
    let expires = jiff::Timestamp::from_second(now + seconds)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace,
            "creationTimestamp": jiff::Timestamp::from_second(now).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()},
        "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null},
        "status": {"token": issuer.sign(&claims), "expirationTimestamp": expires},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            iss: ISSUER.into(),
            sub: "system:serviceaccount:a:b".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: ServiceAccountRef { name: "b".into(), uid: "u".into() },
            },
        }
    }

    #[test]
    fn signed_tokens_verify_until_they_expire() {
        let issuer = Issuer::new(b"secret");
        let token = issuer.sign(&claims(1000));
        assert_eq!(issuer.verify(&token, 1000), Some(claims(1000)));
        assert_eq!(issuer.verify(&token, 1600), None);
        assert_eq!(Issuer::new(b"other").verify(&token, 1000), None);
        let mut forged = token.clone();
        forged.insert(token.find('.').unwrap() + 2, 'x');
        assert_eq!(issuer.verify(&forged, 1000), None);
        let mut other_audience = claims(1000);
        other_audience.aud = vec!["vault".into()];
        assert_eq!(issuer.verify(&issuer.sign(&other_audience), 1000), None);
    }

    #[test]
    fn json_and_protobuf_specs() {
        let json = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["x"],"expirationSeconds":900}}"#;
        assert_eq!(
            decode_spec(json, false).unwrap(),
            Spec { audiences: vec!["x".into()], expiration_seconds: Some(900), bound: false }
        );
        assert_eq!(decode_spec(b"k8s\0\xff", true).unwrap_err().status()["code"], 400);
    }
}
