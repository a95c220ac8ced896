//! The kubeconfig that points kubectl (and any client-go, kube-rs or Python client) at the
//! embedded server: the CA inline as `certificate-authority-data`, the bearer token inline, and
//! cluster, user and context all named `holdfast`.

use std::io;
use std::path::Path;

use base64::Engine as _;

/// The name of the cluster, user and context entries.
pub const NAME: &str = "holdfast";

/// Renders a kubeconfig for `server_url` (e.g. `https://127.0.0.1:6443`).
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    // Every value is quoted as a JSON string, which is valid YAML, so no character in a URL or
    // token can change the document's structure.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {NAME}\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {NAME}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: {NAME}\n  \
           context:\n    \
             cluster: {NAME}\n    \
             user: {NAME}\n    \
             namespace: default\n\
         current-context: {NAME}\n\
         preferences: {{}}\n",
        server = q(server_url),
        ca = q(&ca),
        token = q(token),
    )
}

/// Writes a kubeconfig readable by the owner only (it holds a bearer token), creating parent
/// directories.
pub fn write_kubeconfig(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::tls::write_private_file(path, contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_yaml_with_inline_ca_and_token() {
        let text =
            kubeconfig("https://127.0.0.1:6443", "-----BEGIN CERTIFICATE-----\nabc\n", "t0k");
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(doc["current-context"], "holdfast");
        assert_eq!(doc["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
        let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(ca).unwrap();
        assert_eq!(decoded, b"-----BEGIN CERTIFICATE-----\nabc\n");
        assert_eq!(doc["users"][0]["user"]["token"], "t0k");
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "holdfast");
        assert_eq!(doc["contexts"][0]["context"]["user"], "holdfast");
    }

    #[test]
    fn written_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kubeconfig");
        write_kubeconfig(&path, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
