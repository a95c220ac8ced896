//! What every controller shares: the API client and where embedded mode keeps its files.

use std::path::PathBuf;

/// Shared by all controllers (wrapped in an `Arc`).
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    /// holdfast data dir: volumes under <data_dir>/volumes, job logs under <data_dir>/logs,
    /// job scratch (emptyDir, secret volumes) under <data_dir>/jobs
    pub data_dir: PathBuf,
    /// namespace for holdfast's own objects (generated Secrets, precheck jobs): "holdfast-system"
    pub system_namespace: String,
    /// the running holdfast executable; job processes get a PATH dir with `datasafed` -> this binary
    pub holdfast_exe: PathBuf,
}

impl Context {
    /// Root of the provisioned volumes: `<data_dir>/volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
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

    /// The directory put first on every job process's PATH; it holds `datasafed`.
    pub fn bin_dir(&self) -> PathBuf {
        self.data_dir.join("bin")
    }
}
