//! Bodies captured from kubectl v1.32 (`kubectl create ...` against a recording server), and
//! hand-built ones for what kubectl does not send.

use serde_json::json;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `kubectl create namespace n1`
const NAMESPACE: &str = "6b3873000a0f0a02763112094e616d657370616365121a0a120a026e3112001a0022002a0032003800420012001a020a001a002200";
/// `kubectl create configmap c1 --from-literal=a=b --from-literal=bin=x`
const CONFIG_MAP: &str = "6b3873000a0f0a0276311209436f6e6669674d617012260a120a02633112001a0022002a0032003800420012060a016112016212080a0362696e1201781a002200";
/// `kubectl create job j1 --image=busybox -- echo hi`
const JOB: &str = "6b3873000a0f0a0862617463682f763112034a6f621284010a120a026a3112001a0022002a00320038004200126432620a100a0012001a0022002a00320038004200124e122b0a026a31120762757379626f781a046563686f1a0268692a0042006a007200800100880100900100a201001a054e65766572320042004a0052005800600068008201008a01009a0100c201001a082000280030003a001a002200";
/// `kubectl create secret docker-registry d1 --docker-server=r.io --docker-username=u --docker-password=p`
const DOCKER_SECRET: &str = "6b3873000a0c0a0276311206536563726574128b010a120a02643112001a0022002a0032003800420012550a112e646f636b6572636f6e6669676a736f6e12407b226175746873223a7b22722e696f223a7b22757365726e616d65223a2275222c2270617373776f7264223a2270222c2261757468223a2264547077227d7d7d1a1e6b756265726e657465732e696f2f646f636b6572636f6e6669676a736f6e1a002200";
/// `kubectl auth can-i get secrets`
const ACCESS_REVIEW: &str = "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374416363657373526576696577123f0a100a0012001a0022002a0032003800420012210a1f0a0764656661756c7412036765741a0022002a077365637265747332003a001a08080012001a0020001a002200";
/// `kubectl create rolebinding rb --role=r1 --user=u`
const ROLE_BINDING: &str = "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b526f6c6542696e64696e6712630a120a02726212001a0022002a0032003800420012260a04557365721219726261632e617574686f72697a6174696f6e2e6b38732e696f1a017522001a250a19726261632e617574686f72697a6174696f6e2e6b38732e696f1204526f6c651a0272311a002200";

#[test]
fn kubectl_namespace_decodes_like_its_json() {
    let v = decode(&hex(NAMESPACE)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1"},
            "spec": {}, "status": {}})
    );
    // apiVersion and kind come first, as in every object the server writes.
    assert_eq!(v.as_object().unwrap().keys().next().map(String::as_str), Some("apiVersion"));
}

#[test]
fn kubectl_config_map_decodes_its_data() {
    let v = decode(&hex(CONFIG_MAP)).unwrap();
    assert_eq!(v["metadata"], json!({"name": "c1"}));
    assert_eq!(v["data"], json!({"a": "b", "bin": "x"}));
}

#[test]
fn kubectl_job_decodes_its_pod_template() {
    let v = decode(&hex(JOB)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j1"},
            "spec": {"template": {"metadata": {}, "spec": {
                "containers": [{"name": "j1", "image": "busybox", "command": ["echo", "hi"],
                    "resources": {}}],
                "restartPolicy": "Never"}}},
            "status": {}})
    );
}

#[test]
fn kubectl_secret_data_is_base64_as_in_json() {
    let v = decode(&hex(DOCKER_SECRET)).unwrap();
    assert_eq!(v["type"], "kubernetes.io/dockerconfigjson");
    let data = v["data"][".dockerconfigjson"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
    assert!(String::from_utf8(raw).unwrap().starts_with(r#"{"auths":{"r.io""#));
}

#[test]
fn access_reviews_and_role_bindings_decode() {
    let v = decode(&hex(ACCESS_REVIEW)).unwrap();
    assert_eq!(v["kind"], "SelfSubjectAccessReview");
    assert_eq!(
        v["spec"]["resourceAttributes"],
        json!({"namespace": "default", "verb": "get", "resource": "secrets"})
    );
    let v = decode(&hex(ROLE_BINDING)).unwrap();
    assert_eq!(
        v["subjects"],
        json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u"}])
    );
    assert_eq!(
        v["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1"})
    );
}

fn varint(mut v: usize, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).unwrap() | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap());
}

/// Encodes a length-delimited field.
fn len(number: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3 | 2, &mut out);
    varint(bytes.len(), &mut out);
    out.extend_from_slice(bytes);
    out
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [len(1, api_version.as_bytes()), len(2, kind.as_bytes())].concat();
    [b"k8s\0".to_vec(), len(1, &type_meta), len(2, raw)].concat()
}

#[test]
fn pointer_fields_keep_zero_and_times_format() {
    // ServiceAccount{metadata{name "sa", creationTimestamp {seconds 1700000000}},
    // automountServiceAccountToken false}
    let time = [vec![0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06]].concat();
    let meta = [len(1, b"sa"), len(8, &time)].concat();
    let raw = [len(1, &meta), vec![0x20, 0x00]].concat();
    let v = decode(&envelope("v1", "ServiceAccount", &raw)).unwrap();
    assert_eq!(v["automountServiceAccountToken"], false);
    assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
}

#[test]
fn packed_and_negative_numbers_decode() {
    // PodSecurityContext.supplementalGroups packed [1, 2], runAsUser -1, inside a Job template.
    let neg = [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let psc = [len(4, &[0x01, 0x02]), neg.to_vec()].concat();
    let pod_spec = len(14, &psc);
    let template = len(2, &pod_spec);
    let spec = len(6, &template);
    let raw = len(2, &spec);
    let v = decode(&envelope("batch/v1", "Job", &raw)).unwrap();
    let sc = &v["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(sc["supplementalGroups"], json!([1, 2]));
    assert_eq!(sc["runAsUser"], -1);
}

#[test]
fn what_is_not_decoded_is_refused_not_dropped() {
    let e = decode(&envelope("velero.io/v1", "Backup", &[])).unwrap_err();
    assert!(matches!(e, ProtobufError::UnknownKind { .. }), "{e}");
    assert!(e.is_unsupported());
    // PodSpec field 18 (affinity) is not in the tables.
    let raw = len(2, &len(6, &len(2, &len(18, &[]))));
    let e = decode(&envelope("batch/v1", "Job", &raw)).unwrap_err();
    assert_eq!(
        e,
        ProtobufError::UnknownField { message: "k8s.io.api.core.v1.PodSpec", number: 18 }
    );
    let e = decode(b"{\"kind\": \"Secret\"}").unwrap_err();
    assert!(!e.is_unsupported(), "{e}");
    let mut truncated = hex(NAMESPACE);
    truncated.truncate(30);
    assert!(matches!(decode(&truncated), Err(ProtobufError::Malformed(_))));
}
