//! What every controller shares: the API client, where embedded mode keeps its files, the clock
//! and the intervals of the periodic work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::retention;

/// The namespace of holdfast's own objects unless told otherwise.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "holdfast-system";

/// Where a kubelet keeps its pods' volumes unless configured otherwise (`--root-dir`).
pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet";

/// Shared by all controllers (wrapped in an `Arc`). Built with [`Context::new`] and the `with_*`
/// setters.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    /// holdfast data dir: volumes under <data_dir>/volumes, volume snapshots under
    /// <data_dir>/snapshots, job logs under <data_dir>/logs, job scratch (emptyDir, secret
    /// volumes) under <data_dir>/jobs
    pub data_dir: PathBuf,
    /// namespace for holdfast's own objects (generated Secrets, precheck jobs): "holdfast-system"
    pub system_namespace: String,
    /// the running holdfast executable; job processes get a PATH dir with `datasafed` -> this binary
    pub holdfast_exe: PathBuf,
    /// What "now" is for schedules, expirations and the timestamps the controllers write.
    pub clock: Arc<dyn Clock>,
    /// How often expired backups are looked for ([`retention`]).
    pub retention_interval: Duration,
    /// The events published, so repeats are counted on one event ([`crate::events`]).
    pub events: Arc<crate::events::EventCache>,
    /// The backup and restore metrics the controllers record ([`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the controllers run, and so who runs what they ask for.
    pub mode: Mode,
    /// The holdfast image cluster-mode Jobs copy `holdfast` and `datasafed` from
    /// ([`crate::executor`]); unused in embedded mode.
    pub image: Option<String>,
    /// The kubelet's root directory as the node agent sees it, whose `pods/` holds every pod
    /// volume of its node ([`crate::volume::KubeletVolumes`]); unused in embedded mode.
    pub kubelet_dir: PathBuf,
}

/// How holdfast is deployed. The controllers are the same in both; only who runs their Jobs and
/// their volumes differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `holdfast server`: one process with its own API server, which also runs the Jobs the
    /// controllers create, provisions volumes, and is its own node and node agent.
    Embedded,
    /// `holdfast operator` against a cluster's API server: kubelets run the Jobs and the cluster
    /// provisions volumes; node-local work belongs to `holdfast agent` on each node.
    Cluster,
}

impl Context {
    /// A context with the defaults: system namespace [`DEFAULT_SYSTEM_NAMESPACE`], the system
    /// clock, and the retention interval of [`retention::configured_interval`].
    pub fn new(
        client: kube::Client,
        data_dir: impl Into<PathBuf>,
        holdfast_exe: impl Into<PathBuf>,
    ) -> Context {
        Context {
            client,
            data_dir: data_dir.into(),
            system_namespace: DEFAULT_SYSTEM_NAMESPACE.to_owned(),
            holdfast_exe: holdfast_exe.into(),
            clock: Arc::new(SystemClock),
            retention_interval: retention::configured_interval(),
            events: Arc::default(),
            metrics: Arc::default(),
            mode: Mode::Embedded,
            image: None,
            kubelet_dir: PathBuf::from(DEFAULT_KUBELET_DIR),
        }
    }

    /// The kubelet's root directory, as this process sees it.
    #[must_use]
    pub fn with_kubelet_dir(mut self, dir: impl Into<PathBuf>) -> Context {
        self.kubelet_dir = dir.into();
        self
    }

    /// The holdfast image for cluster-mode Jobs.
    #[must_use]
    pub fn with_image(mut self, image: impl Into<String>) -> Context {
        self.image = Some(image.into());
        self
    }

    /// Another deployment mode.
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Context {
        self.mode = mode;
        self
    }

    /// Another namespace for holdfast's own objects.
    #[must_use]
    pub fn with_system_namespace(mut self, namespace: impl Into<String>) -> Context {
        self.system_namespace = namespace.into();
        self
    }

    /// Another clock (tests move an [`crate::clock::AdjustableClock`] forward).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Context {
        self.clock = clock;
        self
    }

    /// Another interval between two looks for expired backups.
    #[must_use]
    pub fn with_retention_interval(mut self, interval: Duration) -> Context {
        self.retention_interval = interval;
        self
    }

    /// Root of the provisioned volumes: `<data_dir>/volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
    }

    /// Root of the embedded snapshot driver's snapshots: `<data_dir>/snapshots`
    /// (`<handle>/` below it).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Root of the container logs: `<data_dir>/logs` (`<ns>/<pod>/<container>.log` below it).
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// Root of Job scratch space (emptyDir, materialised Secret/ConfigMap volumes):
    /// `<data_dir>/jobs` (`<ns>/<pod>/` below it).
    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("jobs")
    }

    /// Where Jobs find `datasafed` and `holdfast` (`DP_DATASAFED_BIN_PATH`): in embedded mode the
    /// directory put first on every job process's PATH, in cluster mode the one the executor
    /// mounts into every Job container.
    pub fn bin_dir(&self) -> PathBuf {
        match self.mode {
            Mode::Embedded => self.data_dir.join("bin"),
            // Inside the Job's containers, where the executor puts the tools.
            Mode::Cluster => PathBuf::from(crate::executor::CLUSTER_BIN_DIR),
        }
    }

    /// Lets job processes that run as another user than the server (a pod's `runAsUser`), and
    /// people who start a database on a restored claim, reach their claim's directory and
    /// `bin/datasafed`, as on a Kubernetes node: the data directory and `volumes/` may be passed
    /// through but not listed, `bin/` (a program, not data) is readable. Everything else in the
    /// data directory stays private to the server.
    ///
    /// # Errors
    /// A directory that cannot be created or whose mode cannot be set.
    pub fn open_workload_dirs(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for (dir, mode) in
            [(self.data_dir.clone(), 0o711), (self.volumes_dir(), 0o711), (self.bin_dir(), 0o755)]
        {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

/// Entries of the data directory that hold the workloads' own files (claims, their snapshots)
/// or what they run (`bin/`): their modes are not the server's to restrict.
pub const WORKLOAD_OWNED: &[&str] = &["volumes", "snapshots", "bin"];
