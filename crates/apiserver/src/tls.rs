//! The server's TLS material: a self-signed CA kept in `<data-dir>/pki` and a server
//! certificate signed by it.
//!
//! client-go sends the kubeconfig's bearer token only over TLS, and Go and rustls check the
//! subject alternative names, never the CN, so the server certificate
//! always carries `IP:127.0.0.1`, `IP:::1` and `DNS:localhost` plus any extra host names. The CA
//! survives restarts so kubeconfigs written earlier stay valid; the server certificate is
//! re-issued when it is missing, near its expiry, not signed by the CA, or lacks a wanted name.

use std::collections::BTreeSet;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The names every server certificate carries.
pub const DEFAULT_HOSTS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 365;
/// Re-issue a certificate this long before it expires, so a long-running server restarted
/// near the end of the validity does not start with a certificate about to lapse.
const RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;

/// PEM-encoded CA certificate, server certificate and server private key.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid host name {host:?} for the server certificate: {source}")]
    Host {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot parse PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsMaterial {
    /// A rustls server configuration (aws-lc-rs provider) offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Loads the CA and server certificate from `<dir>/pki`, creating or renewing what is missing,
/// expired or does not cover `hosts` (added to [`DEFAULT_HOSTS`]).
pub fn load_or_create_tls(dir: &Path, hosts: &[String]) -> Result<TlsMaterial, TlsError> {
    let pki = dir.join("pki");
    crate::data_dir::create_private_dir(&pki)
        .map_err(|source| TlsError::Io { path: pki.clone(), source })?;
    let ca_crt = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let server_crt = pki.join("server.crt");
    let server_key = pki.join("server.key");

    let mut wanted: Vec<String> = DEFAULT_HOSTS.iter().map(|s| s.to_string()).collect();
    for h in hosts {
        let h = normalize_host(h);
        if !wanted.contains(&h) {
            wanted.push(h);
        }
    }

    let now = jiff::Timestamp::now().as_second();
    let (ca_pem, ca_key_pem) = match (read_optional(&ca_crt)?, read_optional(&ca_key)?) {
        (Some(cert), Some(key))
            if certificate_ok(&cert, None, now, &[]) && KeyPair::from_pem(&key).is_ok() =>
        {
            (cert, key)
        }
        _ => {
            let (cert, key) = generate_ca()?;
            // Key first: a crash between the two writes leaves a CA certificate without its key
            // at worst, which the next start detects and replaces.
            write_private_file(&ca_key, key.as_bytes())
                .map_err(|source| TlsError::Io { path: ca_key.clone(), source })?;
            write_private_file(&ca_crt, cert.as_bytes())
                .map_err(|source| TlsError::Io { path: ca_crt.clone(), source })?;
            tracing::info!(path = %ca_crt.display(), "generated a new certificate authority");
            (cert, key)
        }
    };

    let (cert_pem, key_pem) = match (read_optional(&server_crt)?, read_optional(&server_key)?) {
        (Some(cert), Some(key))
            if certificate_ok(&cert, Some(&ca_pem), now, &wanted)
                && KeyPair::from_pem(&key).is_ok() =>
        {
            (cert, key)
        }
        _ => {
            let (cert, key) = generate_server(&ca_pem, &ca_key_pem, &wanted)?;
            write_private_file(&server_key, key.as_bytes())
                .map_err(|source| TlsError::Io { path: server_key.clone(), source })?;
            write_private_file(&server_crt, cert.as_bytes())
                .map_err(|source| TlsError::Io { path: server_crt.clone(), source })?;
            tracing::info!(path = %server_crt.display(), names = ?wanted, "issued a new server certificate");
            (cert, key)
        }
    };
    Ok(TlsMaterial { ca_pem, cert_pem, key_pem })
}

/// IP addresses in canonical form (so `[::1]` and `::1` match), host names lower-cased.
fn normalize_host(host: &str) -> String {
    let trimmed = host.trim().trim_start_matches('[').trim_end_matches(']');
    match trimmed.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => trimmed.to_ascii_lowercase(),
    }
}

/// Valid from yesterday (tolerates clock skew between client and server) until `days` after
/// today.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let start = today.yesterday().unwrap_or(today);
    let end = today.checked_add(jiff::Span::new().days(days)).unwrap_or(today);
    let ymd = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(start);
    params.not_after = ymd(end);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "holdfast-ca");
    params.distinguished_name.push(DnType::OrganizationName, "holdfast");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params
}

fn generate_ca() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    set_validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn generate_server(
    ca_pem: &str,
    ca_key_pem: &str,
    names: &[String],
) -> Result<(String, String), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(rcgen::SanType::DnsName),
            };
            san.map_err(|source| TlsError::Host { host: n.clone(), source })
        })
        .collect::<Result<_, _>>()?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "holdfast-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, SERVER_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Whether `pem` is a certificate valid for at least [`RENEW_BEFORE_SECS`] more, signed by
/// `ca_pem` if given, carrying every name in `names`.
fn certificate_ok(pem: &str, ca_pem: Option<&str>, now: i64, names: &[String]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let v = cert.validity();
    if v.not_before.timestamp() > now || v.not_after.timestamp() < now + RENEW_BEFORE_SECS {
        return false;
    }
    if let Some(ca_pem) = ca_pem {
        let Ok(ca_der) = CertificateDer::from_pem_slice(ca_pem.as_bytes()) else {
            return false;
        };
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(&ca_der) else {
            return false;
        };
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            return false;
        }
    }
    let mut present = BTreeSet::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    present.insert(d.to_ascii_lowercase());
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        present.insert(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    names.iter().all(|n| present.contains(n))
}

fn read_optional(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io { path: path.to_path_buf(), source }),
    }
}

/// Writes a secret (key, token, kubeconfig) readable by the owner only.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, bytes, 0o600)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, created with
/// `mode` (so a secret is never readable by others, even briefly), fsynced, then renamed over
/// `path`, then the directory fsynced so the rename survives a crash.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` is filtered by the umask on create; set it exactly.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_ca_and_server_cert_with_sans_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tls = load_or_create_tls(dir.path(), &["backup.example.com".into()]).unwrap();
        let pki = dir.path().join("pki");
        assert_eq!(mode(&pki.join("ca.key")), 0o600);
        assert_eq!(mode(&pki.join("server.key")), 0o600);
        assert_eq!(mode(&pki.join("ca.crt")), 0o600);
        assert_eq!(mode(&pki), 0o700);
        let now = jiff::Timestamp::now().as_second();
        let names: Vec<String> = ["127.0.0.1", "::1", "localhost", "backup.example.com"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(certificate_ok(&tls.cert_pem, Some(&tls.ca_pem), now, &names));
        // Another CA did not sign it.
        let (other_ca, _) = generate_ca().unwrap();
        assert!(!certificate_ok(&tls.cert_pem, Some(&other_ca), now, &names));
        tls.server_config().unwrap();
    }

    #[test]
    fn reuses_material_and_reissues_for_new_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_tls(dir.path(), &[]).unwrap();
        let second = load_or_create_tls(dir.path(), &[]).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.cert_pem, second.cert_pem);
        let third = load_or_create_tls(dir.path(), &["10.1.2.3".into()]).unwrap();
        assert_eq!(first.ca_pem, third.ca_pem, "the CA survives a new server certificate");
        assert_ne!(first.cert_pem, third.cert_pem);
    }

    #[test]
    fn replaces_an_expired_or_corrupt_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_tls(dir.path(), &[]).unwrap();
        // Certificates checked a year and a half from now have expired.
        let later = jiff::Timestamp::now().as_second() + 500 * 24 * 3600;
        assert!(!certificate_ok(&first.cert_pem, Some(&first.ca_pem), later, &[]));
        std::fs::write(dir.path().join("pki/server.crt"), "garbage").unwrap();
        let second = load_or_create_tls(dir.path(), &[]).unwrap();
        assert_ne!(first.cert_pem, second.cert_pem);
        assert_eq!(first.ca_pem, second.ca_pem);
    }
}
