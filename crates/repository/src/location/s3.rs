//! An S3 location as a caller states it, and how the unset parts are filled in from the standard
//! AWS environment before a backend is built.

use std::fmt;

use super::LocationError;
use super::ini::Ini;
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

    /// Fills what is unset as the AWS SDKs' standard chain does, from `env` (a variable lookup;
    /// the process environment in [`super::Location::open`]) and then the shared files
    /// (`read_file`), and checks that the result can authenticate: the key pair given, else
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`), else the profile
    /// `AWS_PROFILE` (default `default`) of the shared credentials or config file, else
    /// object_store's own sources (web identity, container credentials, instance metadata). The
    /// region: given, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, `us-east-1`.
    ///
    /// # Errors
    /// No bucket, half a key pair, or an S3-compatible endpoint with no credentials at all
    /// (object_store would otherwise ask the EC2 instance metadata service, which only exists on
    /// AWS: a slow, confusing failure).
    pub(crate) fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Connection, LocationError> {
        let location = self.url();
        if self.bucket.is_empty() {
            return Err(LocationError::NoBucket { origin: location });
        }
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let endpoint = given(&self.endpoint).or_else(|| env("AWS_ENDPOINT_URL"));
        let endpoint = endpoint.as_deref().map(endpoint_url);
        // The shared files are read only for what neither the caller nor the variables give.
        let env_key = env("AWS_ACCESS_KEY_ID");
        let env_secret = env("AWS_SECRET_ACCESS_KEY");
        let given_keys =
            given(&self.access_key_id).is_some() || given(&self.secret_access_key).is_some();
        let env_region =
            given(&self.region).or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION"));
        let no_keys = !given_keys && env_key.is_none() && env_secret.is_none();
        let shared = if env_region.is_none() || no_keys {
            SharedProfile::read(&env, read_file, no_keys)?
        } else {
            SharedProfile::default()
        };
        let region = env_region.or(shared.region).unwrap_or_else(|| "us-east-1".to_owned());
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
        // Each half from the caller, else the variable: a key and a secret from two places still
        // make a pair. The session token goes with keys from the environment.
        let key = given(&self.access_key_id).or(env_key);
        let secret = given(&self.secret_access_key).or(env_secret);
        let keys = match (key, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Keys {
                session_token: if given_keys { None } else { env("AWS_SESSION_TOKEN") },
                access_key_id,
                secret_access_key,
            }),
            (None, None) => match shared.keys {
                Some(keys) => Some(keys),
                None if endpoint.is_none()
                    || OTHER_CREDENTIAL_SOURCES.iter().any(|v| env(v).is_some()) =>
                {
                    None
                }
                None => return Err(LocationError::NoCredentials { location }),
            },
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

/// What the AWS shared files say for the profile `AWS_PROFILE` (else `default`): its key pair
/// from the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) or the
/// config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, where the profile's section is
/// `[profile NAME]`), and its region from the config file.
#[derive(Default)]
struct SharedProfile {
    keys: Option<S3Keys>,
    region: Option<String>,
}

impl SharedProfile {
    /// The profile's region, and its keys when `want_keys` (a file is not read, so cannot fail,
    /// for what the caller already has).
    fn read(
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&str) -> Option<String>,
        want_keys: bool,
    ) -> Result<SharedProfile, LocationError> {
        let home = env("HOME");
        let path = |var: &str, name: &str| {
            env(var).or_else(|| home.as_ref().map(|h| format!("{h}/.aws/{name}")))
        };
        let parse = |path: Option<String>| -> Result<Option<(String, Ini)>, LocationError> {
            let Some(text) = path.as_deref().and_then(read_file) else { return Ok(None) };
            let origin = path.unwrap_or_default();
            let ini = Ini::parse(&text).map_err(|e| LocationError::Syntax {
                origin: origin.clone(),
                line: e.line,
                problem: e.problem,
            })?;
            Ok(Some((origin, ini)))
        };
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let config_section =
            if profile == "default" { profile.clone() } else { format!("profile {profile}") };
        let credentials = if want_keys {
            parse(path("AWS_SHARED_CREDENTIALS_FILE", "credentials"))?
        } else {
            None
        };
        let config = parse(path("AWS_CONFIG_FILE", "config"))?;
        let mut shared = SharedProfile::default();
        let sources = [
            credentials.as_ref().map(|(origin, ini)| (origin, ini, profile.as_str())),
            config
                .as_ref()
                .filter(|_| want_keys)
                .map(|(origin, ini)| (origin, ini, config_section.as_str())),
        ];
        for (origin, ini, section) in sources.into_iter().flatten() {
            let get =
                |key: &str| ini.get(section, key).filter(|v| !v.is_empty()).map(str::to_owned);
            match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                (Some(access_key_id), Some(secret_access_key)) => {
                    shared.keys = Some(S3Keys {
                        access_key_id,
                        secret_access_key,
                        session_token: get("aws_session_token"),
                    });
                    break;
                }
                (None, None) => {}
                (None, Some(_)) | (Some(_), None) => {
                    return Err(LocationError::MissingField {
                        origin: format!("{origin} (profile {profile})"),
                        kind: "aws credentials",
                        field: "aws_access_key_id and aws_secret_access_key",
                        what: "the S3 key pair",
                    });
                }
            }
        }
        shared.region = config.as_ref().and_then(|(_, ini)| {
            ini.get(&config_section, "region").filter(|v| !v.is_empty()).map(str::to_owned)
        });
        Ok(shared)
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
        resolve_with_files(o, vars, &[])
    }

    fn resolve_with_files(
        o: &S3Options,
        vars: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<S3Connection, LocationError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let files: HashMap<String, String> =
            files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        o.resolve(&|k| vars.get(k).cloned(), &|p| files.get(p).cloned())
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
    fn the_shared_files_give_the_profile_keys_and_region_when_nothing_else_does() {
        let local = S3Options { endpoint: Some("http://127.0.0.1:9000".into()), ..opts() };
        let credentials = "[default]\naws_access_key_id = DK\naws_secret_access_key = DS\n\n\
                           [backup]\naws_access_key_id = BK\naws_secret_access_key = BS\n\
                           aws_session_token = BT\n";
        let config = "[default]\nregion = eu-central-1\n[profile backup]\nregion = ap-south-1\n";
        let files = [("/home/u/.aws/credentials", credentials), ("/home/u/.aws/config", config)];
        let c = resolve_with_files(&local, &[("HOME", "/home/u")], &files).unwrap();
        let keys = c.keys.unwrap();
        assert_eq!((keys.access_key_id.as_str(), keys.session_token), ("DK", None));
        assert_eq!(c.region, "eu-central-1");
        let vars = [("HOME", "/home/u"), ("AWS_PROFILE", "backup")];
        let c = resolve_with_files(&local, &vars, &files).unwrap();
        let keys = c.keys.unwrap();
        assert_eq!(keys.access_key_id, "BK");
        assert_eq!(keys.session_token.as_deref(), Some("BT"));
        assert_eq!(c.region, "ap-south-1");
        // Variables win over the files; AWS_SHARED_CREDENTIALS_FILE moves the file.
        let vars = [
            ("HOME", "/home/u"),
            ("AWS_ACCESS_KEY_ID", "EK"),
            ("AWS_SECRET_ACCESS_KEY", "ES"),
            ("AWS_SESSION_TOKEN", "ET"),
            ("AWS_DEFAULT_REGION", "us-west-1"),
        ];
        let c = resolve_with_files(&local, &vars, &files).unwrap();
        let keys = c.keys.unwrap();
        assert_eq!(
            (keys.access_key_id.as_str(), keys.session_token.as_deref()),
            ("EK", Some("ET"))
        );
        assert_eq!(c.region, "us-west-1");
        let vars = [("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds")];
        let c = resolve_with_files(&local, &vars, &[("/etc/creds", credentials)]).unwrap();
        assert_eq!(c.keys.unwrap().access_key_id, "DK");
        // A profile with half a pair, or a file that is not INI, is named.
        let half = [("/etc/creds", "[default]\naws_access_key_id = X\n")];
        let e = resolve_with_files(&local, &vars, &half).unwrap_err().to_string();
        assert!(e.contains("/etc/creds (profile default)"), "{e}");
        // Keys from the variables: the credentials file is not read, so cannot fail.
        let keyed = [("AWS_ACCESS_KEY_ID", "EK"), ("AWS_SECRET_ACCESS_KEY", "ES"), vars[0]];
        assert_eq!(
            resolve_with_files(&local, &keyed, &half).unwrap().keys.unwrap().access_key_id,
            "EK"
        );
        let broken = [("/etc/creds", "[default\n")];
        let e = resolve_with_files(&local, &vars, &broken).unwrap_err().to_string();
        assert!(e.contains("/etc/creds") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn missing_or_half_credentials_are_refused_before_any_request() {
        let local = S3Options { endpoint: Some("http://127.0.0.1:9000".into()), ..opts() };
        let e = resolve(&local, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "s3://b/p/q: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a \
             profile in ~/.aws/credentials (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE)"
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
