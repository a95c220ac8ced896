//! Who runs the Jobs the controllers create, the first per-mode seam (docs/architecture.md). Every
//! Job goes through [`create_job`] or [`create_or_get_job`], which prepare it for the mode.
//!
//! In embedded mode the Job runner runs it as host processes with `<data-dir>/bin` (`holdfast`,
//! `datasafed`) on their PATH: nothing to add. In cluster mode a kubelet runs it in the
//! ActionSet's image, which has neither, so as KubeBlocks does with its `dp-copy-datasafed` init
//! container the Job gets an `emptyDir` at [`CLUSTER_BIN_DIR`], filled first by an init container
//! of the holdfast image running `holdfast install-tools`, and mounted read-only into every
//! container; `DP_DATASAFED_BIN_PATH` names that directory ([`Context::bin_dir`]).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSpec, SecurityContext, Volume, VolumeMount,
};
use kube::Api;

use crate::context::{Context, Mode};
use crate::{Error, object};

/// Where a cluster-mode Job's containers find `holdfast` and `datasafed`.
pub const CLUSTER_BIN_DIR: &str = "/holdfast/bin";
/// The `emptyDir` holding them.
pub const TOOLS_VOLUME: &str = "holdfast-tools";
/// The init container that fills it.
pub const TOOLS_CONTAINER: &str = "holdfast-tools";

/// Creates `job` prepared for the mode, unless one of its name exists; whether it was created.
///
/// # Errors
/// The API server's; in cluster mode, no holdfast image to copy the tools from.
pub async fn create_job(ctx: &Context, jobs: &Api<Job>, job: &Job) -> Result<bool, Error> {
    object::create_unless_exists(jobs, &prepared(ctx, job)?).await
}

/// Creates `job` prepared for the mode, or returns the one of its name.
///
/// # Errors
/// As [`create_job`].
pub async fn create_or_get_job(ctx: &Context, jobs: &Api<Job>, job: &Job) -> Result<Job, Error> {
    object::create_or_get(jobs, &prepared(ctx, job)?).await
}

/// `job` as the mode's executor needs it.
///
/// # Errors
/// In cluster mode, the context names no holdfast image.
pub fn prepared(ctx: &Context, job: &Job) -> Result<Job, Error> {
    let mut job = job.clone();
    if ctx.mode == Mode::Embedded {
        return Ok(job);
    }
    let image = ctx.image.as_deref().ok_or_else(|| {
        Error::Invalid(
            "no holdfast image to copy the tools into Jobs from: start the operator with --image"
                .into(),
        )
    })?;
    if let Some(spec) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        bring_tools(spec, image);
    }
    Ok(job)
}

fn bring_tools(spec: &mut PodSpec, image: &str) {
    let volumes = spec.volumes.get_or_insert_default();
    if volumes.iter().any(|v| v.name == TOOLS_VOLUME) {
        return;
    }
    volumes.push(Volume {
        name: TOOLS_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    let mount = |read_only| VolumeMount {
        name: TOOLS_VOLUME.into(),
        mount_path: CLUSTER_BIN_DIR.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let init = spec.init_containers.get_or_insert_default();
    for c in init.iter_mut().chain(spec.containers.iter_mut()) {
        c.volume_mounts.get_or_insert_default().push(mount(true));
    }
    init.insert(
        0,
        Container {
            name: TOOLS_CONTAINER.into(),
            image: Some(image.into()),
            // Named rather than left to the image's entrypoint, so an image that wraps the
            // binary (a shell entrypoint, a debug image) still runs it; found on the image's PATH.
            command: Some(vec!["holdfast".into(), "install-tools".into(), CLUSTER_BIN_DIR.into()]),
            volume_mounts: Some(vec![mount(false)]),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "initContainers": [{"name": "wait", "image": "busybox"}],
                "containers": [{"name": "main", "image": "postgres:16",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}}}
        }))
        .unwrap()
    }

    async fn ctx(mode: Mode, image: Option<&str>) -> Context {
        // Preparing a Job makes no call: the client, which a Context needs, points nowhere.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ctx = Context::new(client, "/data", "/usr/bin/holdfast").with_mode(mode);
        match image {
            Some(i) => ctx.with_image(i),
            None => ctx,
        }
    }

    #[tokio::test]
    async fn embedded_jobs_are_left_as_built() {
        let c = ctx(Mode::Embedded, None).await;
        assert_eq!(prepared(&c, &job()).unwrap(), job());
        assert_eq!(c.bin_dir(), std::path::Path::new("/data/bin"));
    }

    #[tokio::test]
    async fn cluster_jobs_get_the_tools_from_an_init_container_into_every_container() {
        let c = ctx(Mode::Cluster, Some("registry/holdfast:1")).await;
        assert_eq!(c.bin_dir(), std::path::Path::new(CLUSTER_BIN_DIR));
        let once = prepared(&c, &job()).unwrap();
        assert_eq!(prepared(&c, &once).unwrap(), once, "preparing twice changes nothing");
        let spec = once.spec.unwrap().template.spec.unwrap();
        let init = spec.init_containers.unwrap();
        assert_eq!(init[0].name, TOOLS_CONTAINER, "first, before the Job's own init containers");
        assert_eq!(init[0].image.as_deref(), Some("registry/holdfast:1"));
        assert_eq!(
            init[0].command.as_deref(),
            Some(
                &["holdfast".to_string(), "install-tools".to_string(), CLUSTER_BIN_DIR.to_string()]
                    [..]
            )
        );
        let writes = &init[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!((writes.name.as_str(), writes.read_only), (TOOLS_VOLUME, Some(false)));
        for c in init[1..].iter().chain(&spec.containers) {
            let mounts = c.volume_mounts.as_ref().unwrap();
            assert!(
                mounts.iter().any(|m| m.name == TOOLS_VOLUME
                    && m.mount_path == CLUSTER_BIN_DIR
                    && m.read_only == Some(true)),
                "{} sees the tools read-only",
                c.name
            );
        }
        assert_eq!(spec.containers[0].volume_mounts.as_ref().unwrap()[0].name, "data");
        let volumes = spec.volumes.unwrap();
        assert!(volumes.iter().any(|v| v.name == TOOLS_VOLUME && v.empty_dir.is_some()));
    }

    #[tokio::test]
    async fn a_cluster_job_without_an_image_is_refused_with_what_to_do() {
        let c = ctx(Mode::Cluster, None).await;
        let err = prepared(&c, &job()).unwrap_err().to_string();
        assert!(err.contains("--image"), "{err}");
    }
}
