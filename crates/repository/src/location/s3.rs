//! An S3 location as a caller states it, and how the unset parts are filled in from the standard
//! AWS environment before a backend is built.

use std::fmt;

use super::LocationError;
use crate::backend::object::{S3Connection, S3Keys};

/// Where an S3 repository lives and how to reach it, as given (URL, datasafed config, a
/// BackupStorageLocation's fields). Unset fields fall back to the standard AWS environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`) when the backend is opened.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); without a scheme it means
    /// `https://`.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when unset anywhere.
    pub region: Option<String>,
    /// Address buckets by path (`endpoint/bucket/key`) rather than by host name
    /// (`bucket.endpoint/key`). Path style when unset anywhere: every S3-compatible server
    /// answers it.
    pub path_style: Option<bool>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Locations end up in logs; the secret must not.
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The variables that name a credential source other than static keys; object_store reads them
/// itself.
const OTHER_CREDENTIAL_SOURCES: [&str; 3] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// An endpoint with its scheme: rclone (and so datasafed) reads a bare `host:port` as HTTPS.
pub fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_owned() } else { format!("https://{endpoint}") }
}

impl S3Options {
    /// These options with the key pair of `profile` from an AWS shared-credentials file (the
    /// text of `~/.aws/credentials`: `[default]` with `aws_access_key_id` and
    /// `aws_secret_access_key`), as Velero's AWS plugin reads its credential Secret. `origin`
    /// names where the text came from, for errors.
    ///
    /// # Errors
    /// Text that is not INI, no such profile, or a profile without both keys.
    pub fn with_aws_credentials_file(
        self,
        text: &str,
        profile: &str,
        origin: &str,
    ) -> Result<Self, LocationError> {
        let ini = super::ini::Ini::parse(text).map_err(|e| LocationError::Syntax {
            origin: origin.to_owned(),
            line: e.line,
            problem: e.problem,
        })?;
        let field = |key: &'static str| {
            ini.get(profile, key).filter(|v| !v.is_empty()).map(str::to_owned).ok_or_else(|| {
                LocationError::MissingField {
                    origin: format!("{origin} (profile {profile})"),
                    kind: "aws credentials",
                    field: key,
                    what: "the S3 key pair",
                }
            })
        };
        Ok(S3Options {
            access_key_id: Some(field("aws_access_key_id")?),
            secret_access_key: Some(field("aws_secret_access_key")?),
            ..self
        })
    }

    /// `s3://bucket/prefix`: the name the backend reports in its errors.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// Fills what is unset from `env` (a variable lookup; the process environment in
    /// [`super::Location::open`]) and checks that the result can authenticate.
    ///
    /// # Errors
    /// No bucket, half a key pair, or an S3-compatible endpoint with no credentials at all
    /// (object_store would otherwise ask the EC2 instance metadata service, which only exists on
    /// AWS: a slow, confusing failure).
    pub(crate) fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Connection, LocationError> {
        let location = self.url();
        if self.bucket.is_empty() {
            return Err(LocationError::NoBucket { origin: location });
        }
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let endpoint = given(&self.endpoint).or_else(|| env("AWS_ENDPOINT_URL"));
        let endpoint = endpoint.as_deref().map(endpoint_url);
        let region = given(&self.region)
            .or_else(|| env("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let path_style = match self.path_style {
            Some(p) => p,
            None => match env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") {
                Some(v) => !parse_bool(&v).ok_or_else(|| LocationError::InvalidField {
                    origin: location.clone(),
                    field: "AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(),
                    value: v.clone(),
                    expected: "true or false",
                })?,
                None => true,
            },
        };
        let key = given(&self.access_key_id).or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = given(&self.secret_access_key).or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let keys = match (key, secret) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Some(S3Keys { access_key_id, secret_access_key })
            }
            (None, None)
                if endpoint.is_none()
                    || OTHER_CREDENTIAL_SOURCES.iter().any(|v| env(v).is_some()) =>
            {
                None
            }
            _ => return Err(LocationError::NoCredentials { location }),
        };
        Ok(S3Connection {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint,
            region,
            path_style,
            keys,
        })
    }
}

/// Go's `strconv.ParseBool`, which rclone and go-ini use for boolean options.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn opts() -> S3Options {
        S3Options { bucket: "b".into(), prefix: "p/q".into(), ..Default::default() }
    }

    fn resolve(o: &S3Options, vars: &[(&str, &str)]) -> Result<S3Connection, LocationError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        o.resolve(&|k| vars.get(k).cloned())
    }

    #[test]
    fn given_fields_win_over_the_environment() {
        let o = S3Options {
            endpoint: Some("minio:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: Some(false),
            access_key_id: Some("AK".into()),
            secret_access_key: Some("SK".into()),
            ..opts()
        };
        let env = [
            ("AWS_ENDPOINT_URL", "http://other"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_ACCESS_KEY_ID", "envkey"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ];
        let c = resolve(&o, &env).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://minio:9000"));
        assert_eq!(c.region, "eu-west-1");
        assert!(!c.path_style);
        let keys = c.keys.unwrap();
        assert_eq!((keys.access_key_id.as_str(), keys.secret_access_key.as_str()), ("AK", "SK"));
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", "p/q"));
    }

    #[test]
    fn the_environment_fills_what_is_unset_and_defaults_fill_the_rest() {
        let env = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_ACCESS_KEY_ID", "envkey"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true"),
        ];
        let c = resolve(&opts(), &env).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region, "us-west-2");
        assert!(!c.path_style);
        assert_eq!(c.keys.unwrap().access_key_id, "envkey");
        // A key from one place and the secret from another make a pair.
        let o = S3Options { access_key_id: Some("AK".into()), ..opts() };
        let c = resolve(&o, &[("AWS_SECRET_ACCESS_KEY", "envsecret")]).unwrap();
        assert_eq!(c.keys.unwrap().secret_access_key, "envsecret");
        // Nothing anywhere: AWS itself, us-east-1, path style, object_store's credential chain.
        let c = resolve(&opts(), &[]).unwrap();
        assert_eq!((c.endpoint, c.region.as_str(), c.path_style), (None, "us-east-1", true));
        assert!(c.keys.is_none());
        // Empty values count as unset, given or in the environment.
        let o = S3Options { region: Some(String::new()), ..opts() };
        assert_eq!(resolve(&o, &[("AWS_REGION", "")]).unwrap().region, "us-east-1");
    }

    #[test]
    fn missing_or_half_credentials_are_refused_before_any_request() {
        let local = S3Options { endpoint: Some("http://127.0.0.1:9000".into()), ..opts() };
        let e = resolve(&local, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "s3://b/p/q: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
        let e = resolve(&opts(), &[("AWS_ACCESS_KEY_ID", "k")]).unwrap_err();
        assert!(matches!(e, LocationError::NoCredentials { .. }), "{e}");
        // A web identity or container credential source is object_store's to use.
        for v in OTHER_CREDENTIAL_SOURCES {
            assert!(resolve(&local, &[(v, "/x")]).unwrap().keys.is_none());
        }
    }

    #[test]
    fn a_bad_environment_flag_or_no_bucket_is_named() {
        let e = resolve(&opts(), &[("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "maybe")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "s3://b/p/q: AWS_VIRTUAL_HOSTED_STYLE_REQUEST = \"maybe\" (expected true or false)"
        );
        let e = resolve(&S3Options::default(), &[]).unwrap_err();
        assert_eq!(e.to_string(), "s3:// has no bucket");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let o = S3Options { secret_access_key: Some("hunter2".into()), ..opts() };
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn aws_credentials_files_give_the_key_pair_of_a_profile() {
        let text = "[default]\naws_access_key_id = AK\naws_secret_access_key = S/K+1\n\n[backup]\naws_access_key_id=BK\naws_secret_access_key=BS\n";
        let o = opts()
            .with_aws_credentials_file(text, "default", "key cloud of Secret velero/c")
            .unwrap();
        assert_eq!(
            (o.access_key_id.as_deref(), o.secret_access_key.as_deref()),
            (Some("AK"), Some("S/K+1"))
        );
        let o = opts().with_aws_credentials_file(text, "backup", "x").unwrap();
        assert_eq!(o.access_key_id.as_deref(), Some("BK"));
        let err = opts()
            .with_aws_credentials_file(text, "other", "key cloud of Secret velero/c")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key cloud of Secret velero/c (profile other): storage type aws credentials needs the S3 key pair (aws_access_key_id)"
        );
        assert!(opts().with_aws_credentials_file("[default\n", "default", "x").is_err());
    }
}
