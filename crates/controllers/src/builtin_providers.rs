//! The StorageProviders holdfast ships, installed at start when missing and never overwritten
//! (a user may have edited them):
//!
//! - `holdfast-local`: a directory on the holdfast host (parameter `path`, required).
//! - `holdfast-s3`: an S3 bucket (`bucket`, `endpoint`, `region`, `prefix`; the credentials
//!   `accessKeyId`/`secretAccessKey` come from the BackupRepo's credential Secret).
//! - `holdfast-pvc`: for `accessMethod: Mount`, a claim per namespace from the embedded
//!   local-path provisioner (`provisioner: holdfast.io/local-path`), through a StorageClass
//!   generated for each repo so its `pvReclaimPolicy` holds. Like upstream's `pvc` provider it
//!   names no CSI driver: the class's provisioner is what must exist.
//!
//! The first two render a datasafed configuration (see docs/datasafed.md). Upstream's own
//! providers (`s3`, `minio`, …) need nothing from here: applied by a user they are ordinary
//! StorageProviders whose templates the template engine renders.

use holdfast_api::storage::{ParametersSchema, StorageProvider, StorageProviderSpec};
use kube::api::Api;
use serde_json::json;

use crate::{Context, Error, object, provisioner};

/// Name of the local-directory provider.
pub const LOCAL: &str = "holdfast-local";
/// Name of the S3 provider.
pub const S3: &str = "holdfast-s3";
/// Name of the provider of Mount repos on local-path claims.
pub const PVC: &str = "holdfast-pvc";

const LOCAL_DATASAFED: &str = "[storage]\ntype = local\nroot = {{ index .Parameters \"path\" }}\n";

const S3_DATASAFED: &str = r#"[storage]
type = s3
provider = Other
env_auth = false
access_key_id = {{ index .Parameters "accessKeyId" }}
secret_access_key = {{ index .Parameters "secretAccessKey" }}
region = {{ index .Parameters "region" | default "us-east-1" }}
endpoint = {{ index .Parameters "endpoint" }}
root = {{ index .Parameters "bucket" }}{{ with index .Parameters "prefix" | trimPrefix "/" | trimSuffix "/" }}/{{ . }}{{ end }}
"#;

/// The built-in providers.
pub fn providers() -> Vec<StorageProvider> {
    let local = StorageProvider::new(
        LOCAL,
        StorageProviderSpec {
            datasafed_config_template: Some(LOCAL_DATASAFED.to_owned()),
            parameters_schema: Some(ParametersSchema {
                open_api_v3_schema: Some(json!({
                    "type": "object",
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "Absolute directory on the holdfast host that holds the repository"
                        }
                    },
                    "required": ["path"]
                })),
                credential_fields: None,
            }),
            ..StorageProviderSpec::default()
        },
    );
    let s3 = StorageProvider::new(
        S3,
        StorageProviderSpec {
            datasafed_config_template: Some(S3_DATASAFED.to_owned()),
            parameters_schema: Some(ParametersSchema {
                open_api_v3_schema: Some(json!({
                    "type": "object",
                    "properties": {
                        "bucket": {"type": "string", "description": "S3 bucket"},
                        "endpoint": {"type": "string", "description": "S3 endpoint URL; AWS when empty"},
                        "region": {"type": "string", "default": "us-east-1", "description": "S3 region"},
                        "prefix": {"type": "string", "description": "Key prefix of the repository inside the bucket (optional)"},
                        "accessKeyId": {"type": "string", "description": "S3 access key"},
                        "secretAccessKey": {"type": "string", "description": "S3 secret key"}
                    },
                    "required": ["bucket", "accessKeyId", "secretAccessKey"]
                })),
                credential_fields: Some(vec![
                    "accessKeyId".to_owned(),
                    "secretAccessKey".to_owned(),
                ]),
            }),
            ..StorageProviderSpec::default()
        },
    );
    let pvc = StorageProvider::new(
        PVC,
        StorageProviderSpec {
            storage_class_template: Some(format!("provisioner: {}\n", provisioner::PROVISIONER)),
            ..StorageProviderSpec::default()
        },
    );
    vec![local, s3, pvc]
}

/// Creates each built-in provider that does not exist; existing ones are left as they are.
pub async fn install(ctx: &Context) -> Result<(), Error> {
    let api: Api<StorageProvider> = Api::all(ctx.client.clone());
    for provider in providers() {
        let name = provider.metadata.name.clone().unwrap_or_default();
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        // Another holdfast instance (or the user) may create it meanwhile: theirs stands.
        if object::create_unless_exists(&api, &provider).await? {
            tracing::info!(provider = %name, "installed built-in storage provider");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_template::{RenderContext, render};

    fn params(pairs: &[(&str, &str)]) -> RenderContext {
        RenderContext::with_parameters(
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        )
    }

    #[test]
    fn builtin_templates_render() {
        assert_eq!(
            render("l", LOCAL_DATASAFED, &params(&[("path", "/srv/backups")])).unwrap(),
            "[storage]\ntype = local\nroot = /srv/backups\n"
        );
        let s3 = render(
            "s",
            S3_DATASAFED,
            &params(&[
                ("bucket", "b"),
                ("prefix", "/team/pg/"),
                ("accessKeyId", "A"),
                ("secretAccessKey", "S"),
            ]),
        )
        .unwrap();
        assert!(s3.contains("root = b/team/pg\n"), "{s3}");
        assert!(s3.contains("region = us-east-1\n"), "{s3}");
        let no_prefix = render("s", S3_DATASAFED, &params(&[("bucket", "b")])).unwrap();
        assert!(no_prefix.contains("root = b\n"), "{no_prefix}");
    }
}
