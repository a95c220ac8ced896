//! The controllers' Prometheus metrics (docs/metrics.md): what Velero and KubeBlocks users graph
//! about backups and restores, recorded where a Backup, Restore, PodVolumeBackup,
//! PodVolumeRestore, DataUpload or DataDownload reaches a terminal phase.
//!
//! Counters move once per transition this process writes: the attempt when an object leaves its
//! initial phase, the outcome when the controller writes its terminal phase. A reconcile of an
//! object that is already terminal writes nothing and so counts nothing; a restart starts every
//! counter at zero, which Prometheus' `rate()` and `increase()` expect.
//!
//! KubeBlocks kinds are counted under `holdfast_*` with Velero's shape (labels `namespace`,
//! `backup_policy` and, for Backups, `schedule`); Velero's data-moving kinds under
//! `velero_<kind>_*` with labels `node` (the node agent that moved the data, as Velero's
//! node-agent metrics have it) and `schedule` (Velero's `velero.io/schedule-name` label, empty
//! when absent).

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::{Backup, Restore};
use holdfast_api::velero::DataMovePhase;
use jiff::Timestamp;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Velero's label for the Schedule a backup came from.
pub const LABEL_VELERO_SCHEDULE: &str = "velero.io/schedule-name";

/// Backup and restore durations: seconds to hours (Velero's buckets start at a minute, which
/// would put every small database backup in the first one).
const DURATION_BUCKETS: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 14400.0,
    28800.0,
];

/// A family whose name and labels are constants of this module: building it cannot fail.
fn built<T>(family: Result<T, prometheus::Error>) -> T {
    family.unwrap_or_else(|e| unreachable!("a constant metric definition is invalid: {e}"))
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = built(IntCounterVec::new(Opts::new(name, help), labels));
    built(registry.register(Box::new(family.clone())));
    family
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let family = built(GaugeVec::new(Opts::new(name, help), labels));
    built(registry.register(Box::new(family.clone())));
    family
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let family = built(HistogramVec::new(opts, labels));
    built(registry.register(Box::new(family.clone())));
    family
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Canceled,
}

/// The families of one kind of operation (backups of one kind, or restores): attempts,
/// outcomes, duration, bytes moved, and when it last succeeded.
struct Operation {
    attempt: IntCounterVec,
    success: IntCounterVec,
    failure: IntCounterVec,
    cancel: Option<IntCounterVec>,
    duration: HistogramVec,
    bytes: IntCounterVec,
    last_success: GaugeVec,
    /// The size of the last successful one (Velero's `backup_tarball_size_bytes`).
    last_size: Option<IntGaugeVec>,
}

/// Names and words of one [`Operation`].
struct Spec<'a> {
    prefix: &'a str,
    /// "backups", "pod volume restores", …
    what: &'a str,
    /// `failure` (Velero's backups) or `failed` (Velero's restores).
    failure_word: &'a str,
    with_cancel: bool,
    with_last_size: bool,
    /// `bytes_written_total`, `bytes_read_total`, …
    bytes_name: &'a str,
    bytes_help: &'a str,
    labels: &'a [&'a str],
}

impl Operation {
    fn new(registry: &Registry, s: &Spec<'_>) -> Operation {
        let (p, what, labels) = (s.prefix, s.what, s.labels);
        Operation {
            attempt: counter(
                registry,
                &format!("{p}_attempt_total"),
                &format!("Total number of attempted {what}"),
                labels,
            ),
            success: counter(
                registry,
                &format!("{p}_success_total"),
                &format!("Total number of successful {what}"),
                labels,
            ),
            failure: counter(
                registry,
                &format!("{p}_{}_total", s.failure_word),
                &format!("Total number of failed {what}"),
                labels,
            ),
            cancel: s.with_cancel.then(|| {
                counter(
                    registry,
                    &format!("{p}_cancel_total"),
                    &format!("Total number of canceled {what}"),
                    labels,
                )
            }),
            duration: histogram(
                registry,
                &format!("{p}_duration_seconds"),
                &format!("Time taken to complete {what}, in seconds"),
                labels,
            ),
            bytes: counter(registry, &format!("{p}_{}", s.bytes_name), s.bytes_help, labels),
            last_success: gauge(
                registry,
                &format!("{p}_last_successful_timestamp"),
                &format!("Last time one of the {what} succeeded, as a Unix timestamp in seconds"),
                labels,
            ),
            last_size: s.with_last_size.then(|| {
                let family = built(IntGaugeVec::new(
                    Opts::new(
                        format!("{p}_size_bytes"),
                        format!("Size, in bytes, of the last successful one of the {what}"),
                    ),
                    labels,
                ));
                built(registry.register(Box::new(family.clone())));
                family
            }),
        }
    }

    fn attempted(&self, labels: &[&str]) {
        self.attempt.with_label_values(labels).inc();
    }

    fn finished(&self, labels: &[&str], end: &End) {
        match end.outcome {
            Outcome::Succeeded => {
                self.success.with_label_values(labels).inc();
                self.last_success
                    .with_label_values(labels)
                    .set(end.at.as_millisecond() as f64 / 1000.0);
                if let (Some(size), Some(bytes)) = (&self.last_size, end.bytes) {
                    size.with_label_values(labels).set(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
            }
            Outcome::Failed => self.failure.with_label_values(labels).inc(),
            Outcome::Canceled => match &self.cancel {
                Some(cancel) => cancel.with_label_values(labels).inc(),
                None => self.failure.with_label_values(labels).inc(),
            },
        }
        if let Some(took) = end.took {
            self.duration.with_label_values(labels).observe(took.as_secs_f64());
        }
        if let Some(bytes) = end.bytes {
            self.bytes.with_label_values(labels).inc_by(bytes);
        }
    }
}

/// The end of one operation.
#[derive(Clone, Copy, Debug)]
pub struct End {
    pub outcome: Outcome,
    /// When it ended.
    pub at: Timestamp,
    /// How long it took, when its start is known.
    pub took: Option<Duration>,
    /// The bytes it moved, when known.
    pub bytes: Option<u64>,
}

impl End {
    /// An end at `at` of an operation that started at `start`.
    pub fn new(outcome: Outcome, start: Option<Timestamp>, at: Timestamp) -> End {
        let took = start.and_then(|s| Duration::try_from(at.duration_since(s)).ok());
        End { outcome, at, took, bytes: None }
    }

    #[must_use]
    pub fn with_bytes(mut self, bytes: Option<u64>) -> End {
        self.bytes = bytes;
        self
    }
}

/// Velero's data-moving kinds, by the `kind` of their objects.
const DATA_MOVES: [(&str, &str, &str, &str, &str); 4] = [
    (
        "PodVolumeBackup",
        "velero_pod_volume_backup",
        "pod volume backups",
        "bytes_read_total",
        "Bytes read from pod volumes by completed pod volume backups",
    ),
    (
        "PodVolumeRestore",
        "velero_pod_volume_restore",
        "pod volume restores",
        "bytes_written_total",
        "Bytes written into pod volumes by completed pod volume restores",
    ),
    (
        "DataUpload",
        "velero_data_upload",
        "data uploads",
        "bytes_read_total",
        "Bytes read from volume snapshots by completed data uploads",
    ),
    (
        "DataDownload",
        "velero_data_download",
        "data downloads",
        "bytes_written_total",
        "Bytes written into volumes by completed data downloads",
    ),
];

const BACKUP_LABELS: [&str; 3] = ["namespace", "backup_policy", "schedule"];
const RESTORE_LABELS: [&str; 2] = ["namespace", "backup_policy"];
const MOVE_LABELS: [&str; 2] = ["node", "schedule"];

/// Every controller metric, in one registry. Shared through the [`crate::Context`].
pub struct Metrics {
    registry: Registry,
    backups: Operation,
    restores: Operation,
    moves: Vec<(&'static str, Operation)>,
    repo_size: IntGaugeVec,
    /// The repos whose size was computed by this process, so a restart recomputes each once.
    sized_repos: Mutex<BTreeSet<String>>,
    node_agent_concurrency: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let backups = Operation::new(
            &registry,
            &Spec {
                prefix: "holdfast_backup",
                what: "backups",
                failure_word: "failure",
                with_cancel: false,
                with_last_size: true,
                bytes_name: "bytes_written_total",
                bytes_help: "Bytes written to backup repositories by completed backups \
                             (their status.totalSize)",
                labels: &BACKUP_LABELS,
            },
        );
        let restores = Operation::new(
            &registry,
            &Spec {
                prefix: "holdfast_restore",
                what: "restores",
                failure_word: "failed",
                with_cancel: false,
                with_last_size: false,
                bytes_name: "bytes_read_total",
                bytes_help: "Bytes of backup data read by completed restores (the restored \
                             backups' status.totalSize)",
                labels: &RESTORE_LABELS,
            },
        );
        let moves = DATA_MOVES
            .iter()
            .map(|&(kind, prefix, what, bytes_name, bytes_help)| {
                let spec = Spec {
                    prefix,
                    what,
                    failure_word: "failure",
                    with_cancel: true,
                    with_last_size: false,
                    bytes_name,
                    bytes_help,
                    labels: &MOVE_LABELS,
                };
                (kind, Operation::new(&registry, &spec))
            })
            .collect();
        let repo_size = built(IntGaugeVec::new(
            Opts::new(
                "holdfast_backup_repo_size_bytes",
                "Bytes stored in a BackupRepo: the sum of status.totalSize of its Completed \
                 backups",
            ),
            &["backup_repo"],
        ));
        built(registry.register(Box::new(repo_size.clone())));
        let node_agent_concurrency = built(IntGaugeVec::new(
            Opts::new(
                "holdfast_node_agent_concurrency",
                "Data moves the node agent runs at once on a node (Velero's loadConcurrency)",
            ),
            &["node"],
        ));
        built(registry.register(Box::new(node_agent_concurrency.clone())));
        Metrics {
            registry,
            backups,
            restores,
            moves,
            repo_size,
            sized_repos: Mutex::new(BTreeSet::new()),
            node_agent_concurrency,
        }
    }

    /// Records how many data moves the node agent of `node` runs at once.
    pub fn set_node_agent_concurrency(&self, node: &str, concurrency: usize) {
        self.node_agent_concurrency
            .with_label_values(&[node])
            .set(i64::try_from(concurrency).unwrap_or(i64::MAX));
    }

    /// Every family in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            // Only an inconsistent family fails to encode; show what encoded rather than nothing.
            tracing::warn!(%error, "cannot encode the controller metrics");
        }
        out
    }

    /// A Backup left `New` (for Running, or straight to Failed).
    pub fn backup_attempted(&self, backup: &Backup) {
        self.backups.attempted(&backup_labels(backup));
    }

    /// A Backup reached `phase` (Completed or Failed) as `backup` now shows it.
    pub fn backup_finished(&self, backup: &Backup) {
        let st = backup.status.clone().unwrap_or_default();
        let outcome = match st.phase {
            Some(BackupPhase::Completed) => Outcome::Succeeded,
            Some(BackupPhase::Failed) => Outcome::Failed,
            _ => return,
        };
        let at = st.completion_timestamp.as_ref().map_or_else(Timestamp::now, |t| t.0);
        let start = st.start_timestamp.as_ref().map(|t| t.0);
        let bytes =
            (outcome == Outcome::Succeeded).then(|| total_size(st.total_size.as_deref())).flatten();
        self.backups
            .finished(&backup_labels(backup), &End::new(outcome, start, at).with_bytes(bytes));
    }

    /// A Restore left its initial phase; `policy` is the BackupPolicy of the backup it restores.
    pub fn restore_attempted(&self, restore: &Restore, policy: &str) {
        self.restores.attempted(&restore_labels(restore, policy));
    }

    /// A Restore ended.
    pub fn restore_finished(&self, restore: &Restore, policy: &str, end: &End) {
        self.restores.finished(&restore_labels(restore, policy), end);
    }

    /// A data-moving object of `kind` was accepted by the node agent of `node`.
    pub fn data_move_attempted(&self, kind: &str, node: &str, schedule: &str) {
        if let Some(op) = self.data_move(kind) {
            op.attempted(&[node, schedule]);
        }
    }

    /// A data-moving object of `kind` ended.
    pub fn data_move_finished(&self, kind: &str, node: &str, schedule: &str, end: &End) {
        if let Some(op) = self.data_move(kind) {
            op.finished(&[node, schedule], end);
        }
    }

    fn data_move(&self, kind: &str) -> Option<&Operation> {
        self.moves.iter().find(|(k, _)| *k == kind).map(|(_, op)| op)
    }

    /// Sets the stored size of BackupRepo `repo` from its backups as listed now.
    pub fn set_repo_size<'a>(&self, repo: &str, backups: impl IntoIterator<Item = &'a Backup>) {
        let bytes: u64 = backups
            .into_iter()
            .filter(|b| b.metadata.deletion_timestamp.is_none())
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
            .filter_map(|b| total_size(b.status.as_ref().and_then(|s| s.total_size.as_deref())))
            .sum();
        self.repo_size.with_label_values(&[repo]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.sized_repos.lock().unwrap_or_else(PoisonError::into_inner).insert(repo.into());
    }

    /// Whether this process has not computed `repo`'s size yet (after a start).
    pub fn repo_size_unknown(&self, repo: &str) -> bool {
        !self.sized_repos.lock().unwrap_or_else(PoisonError::into_inner).contains(repo)
    }
}

/// The bytes of a Backup's `status.totalSize` (a quantity such as `1234` or `1.5Gi`).
pub fn total_size(size: Option<&str>) -> Option<u64> {
    let bytes = holdfast_api::quantity::parse_bytes(size?).ok()?;
    Some(u64::try_from(bytes).unwrap_or(u64::MAX))
}

fn backup_labels(backup: &Backup) -> [&str; 3] {
    let namespace = backup.metadata.namespace.as_deref().unwrap_or_default();
    let schedule = backup
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::backup::LABEL_BACKUP_SCHEDULE))
        .map(String::as_str)
        .unwrap_or_default();
    [namespace, &backup.spec.backup_policy_name, schedule]
}

fn restore_labels<'a>(restore: &'a Restore, policy: &'a str) -> [&'a str; 2] {
    [restore.metadata.namespace.as_deref().unwrap_or_default(), policy]
}

/// The `schedule` label of a Velero object.
pub fn velero_schedule(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_VELERO_SCHEDULE))
        .map(String::as_str)
        .unwrap_or_default()
}

/// The Outcome of a terminal data-move phase.
pub fn data_move_outcome(phase: DataMovePhase) -> Option<Outcome> {
    match phase {
        DataMovePhase::Completed => Some(Outcome::Succeeded),
        DataMovePhase::Failed => Some(Outcome::Failed),
        DataMovePhase::Canceled => Some(Outcome::Canceled),
        _ => None,
    }
}

/// Recomputes the size of BackupRepo `repo` from the Backups labelled with it (one list call,
/// no repository scan). A failed list leaves the last value.
pub async fn refresh_repo_size(ctx: &crate::Context, repo: &str) {
    use kube::api::{Api, ListParams};
    let api: Api<Backup> = Api::all(ctx.client.clone());
    let selector = format!("{}={repo}", crate::backup::LABEL_BACKUP_REPO);
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => ctx.metrics.set_repo_size(repo, &list.items),
        Err(error) => tracing::debug!(%error, repo, "cannot list backups for the repo size metric"),
    }
}

/// The BackupPolicy of the backup `restore` restores, empty when that backup cannot be read.
pub async fn restore_policy(ctx: &crate::Context, restore: &Restore) -> String {
    use kube::api::Api;
    let target = &restore.spec.backup;
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &target.namespace);
    match api.get_opt(&target.name).await {
        Ok(Some(backup)) => backup.spec.backup_policy_name,
        Ok(None) | Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use holdfast_api::kubeblocks::backup::BackupStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn backup(phase: BackupPhase, size: &str) -> Backup {
        let mut b = Backup::new("b", Default::default());
        b.metadata.namespace = Some("ns".into());
        b.spec.backup_policy_name = "pol".into();
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let end: Timestamp = "2026-01-01T00:01:30Z".parse().unwrap();
        b.status = Some(BackupStatus {
            phase: Some(phase),
            total_size: Some(size.into()),
            start_timestamp: Some(Time(start)),
            completion_timestamp: Some(Time(end)),
            ..BackupStatus::default()
        });
        b
    }

    fn assert_every_line_parses(text: &str) {
        for line in text.lines() {
            assert!(
                !matches!(
                    prometheus_parse::LineInfo::parse(line),
                    prometheus_parse::LineInfo::Ignored
                ),
                "unparseable: {line:?}"
            );
        }
    }

    #[test]
    fn a_completed_backup_sets_every_family_and_a_running_one_none() {
        let m = Metrics::new();
        m.backup_finished(&backup(BackupPhase::Running, "1"));
        assert_eq!(m.render(), "", "no transition, no sample");
        let done = backup(BackupPhase::Completed, "1Ki");
        m.backup_attempted(&done);
        m.backup_finished(&done);
        let text = m.render();
        assert_every_line_parses(&text);
        let labels = r#"backup_policy="pol",namespace="ns",schedule="""#;
        for line in [
            format!("holdfast_backup_attempt_total{{{labels}}} 1"),
            format!("holdfast_backup_success_total{{{labels}}} 1"),
            format!("holdfast_backup_bytes_written_total{{{labels}}} 1024"),
            format!("holdfast_backup_size_bytes{{{labels}}} 1024"),
            format!("holdfast_backup_last_successful_timestamp{{{labels}}} 1767225690"),
            format!("holdfast_backup_duration_seconds_bucket{{{labels},le=\"60\"}} 0"),
            format!("holdfast_backup_duration_seconds_bucket{{{labels},le=\"300\"}} 1"),
            format!("holdfast_backup_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 1"),
            format!("holdfast_backup_duration_seconds_sum{{{labels}}} 90"),
            format!("holdfast_backup_duration_seconds_count{{{labels}}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.contains("# TYPE holdfast_backup_duration_seconds histogram"), "{text}");
        assert!(text.contains("# HELP holdfast_backup_success_total "), "{text}");
        assert!(!text.contains("holdfast_backup_failure_total{"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let at = Timestamp::now();
        m.data_move_finished(
            "PodVolumeBackup",
            "node-1",
            "we\"ird\\sched\nule",
            &End::new(Outcome::Canceled, None, at),
        );
        let text = m.render();
        assert_every_line_parses(&text);
        assert!(
            text.contains(r#"velero_pod_volume_backup_cancel_total{node="node-1",schedule="we\"ird\\sched\nule"} 1"#),
            "{text}"
        );
        assert!(!text.contains("duration_seconds_count"), "no start, no duration: {text}");
    }

    #[test]
    fn repo_size_sums_completed_backups_still_there() {
        let m = Metrics::new();
        assert!(m.repo_size_unknown("r"));
        let mut gone = backup(BackupPhase::Completed, "5");
        gone.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let backups = [
            backup(BackupPhase::Completed, "2Ki"),
            backup(BackupPhase::Failed, "7"),
            backup(BackupPhase::Completed, "100"),
            gone,
        ];
        m.set_repo_size("r", &backups);
        assert!(!m.repo_size_unknown("r"));
        assert!(m.render().contains(r#"holdfast_backup_repo_size_bytes{backup_repo="r"} 2148"#));
    }
}
