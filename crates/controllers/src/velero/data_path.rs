//! The node agent's data path, shared by every Velero data-moving kind (PodVolumeBackup,
//! PodVolumeRestore, DataUpload, DataDownload): the phase machine a Velero user knows, with the moving itself done
//! in-process by holdfast's repository engine.
//!
//! ```text
//! New ─▶ Accepted ─▶ Prepared ─▶ InProgress ─▶ Completed | Failed
//!  │        │           │            └─(cancel)─▶ Canceling ─▶ Canceled
//!  └────────┴───────────┴─(cancel)──────────────────────────▶ Canceled
//! ```
//!
//! - *Accepted*: the agent of the node the work belongs to took it (`acceptedTimestamp`).
//! - *Prepared*: the volume's directory and the repository are found and open.
//! - *InProgress*: a slot of the node's concurrency limit is held and data moves
//!   (`startTimestamp`); `status.progress` is written about once a second, only once the total
//!   is known, and never goes backwards.
//! - `spec.cancel` (or deleting the object, which the finalizer turns into a cancel) stops the
//!   work at any phase; an object is only let go once it is terminal.
//! - Work that was moving data when the agent stopped cannot be picked up where it was: it ends
//!   `Failed` saying so, never stays `InProgress`. Work not yet moving goes on as usual.
//! - Preparing waits for what is not ready yet (an unbound claim, a snapshot not ready to use)
//!   for at most [`Mover::prepare_timeout`] ([`PREPARE_TIMEOUT`], Velero's default, unless the
//!   kind says less), then fails.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_api::velero::{DataMovePhase, DataMoveProgress};
use holdfast_repository::progress::{CancelToken, Progress, ProgressFn};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::events::{EventType, publish};
use crate::{Context, Error, finalizer, metrics, reconciler};

/// Velero's finalizer on pod-volume work.
pub const POD_VOLUME_FINALIZER: &str = "velero.io/pod-volume-finalizer";
/// Velero's finalizer on data-mover work.
pub const DATA_MOVER_FINALIZER: &str = "velero.io/data-upload-download-finalizer";
/// How long work may wait to be prepared (Velero's `--data-mover-prepare-timeout`).
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a preparation that waits for something is tried again.
const PREPARE_RETRY: Duration = Duration::from_secs(2);
/// Attempts to write the final status of a move.
const FINISH_ATTEMPTS: u32 = 8;
/// How often progress is written while data moves.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The in-process node agent: which node it serves, the work it is moving, and the slots of its
/// concurrency limit (shared by every data-moving kind, as Velero's `loadConcurrency` is).
pub struct Agent {
    pub ctx: Arc<Context>,
    pub node: String,
    /// Work this process took on, by uid, until its terminal phase is seen stored: a move
    /// that is running, or that finished and whose final status is on its way.
    running: Mutex<HashMap<String, Entry>>,
    slots: Arc<Semaphore>,
    /// The process is stopping: running moves are cancelled and their end is not written, so
    /// the next agent on this node ends them as a restart does.
    stopping: std::sync::atomic::AtomicBool,
}

impl Agent {
    /// An agent for `node` moving at most `concurrency` volumes at a time.
    pub fn new(ctx: Arc<Context>, node: String, concurrency: usize) -> Arc<Agent> {
        Arc::new(Agent {
            ctx,
            node,
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Stops every running move when the returned guard is dropped: when the agent's future is
    /// dropped at shutdown (SIGTERM), its moves, which run on blocking threads the runtime
    /// would otherwise wait for to the end, stop at their next cancellation check instead.
    pub fn stop_on_drop(self: &Arc<Self>) -> StopOnDrop {
        StopOnDrop(self.clone())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See [`Agent::stop_on_drop`].
pub struct StopOnDrop(Arc<Agent>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let running = self.0.running();
        for entry in running.values().filter(|e| !e.finished) {
            entry.token.cancel();
        }
        if !running.is_empty() {
            tracing::info!(moves = running.len(), "stopping: running data moves are cancelled");
        }
    }
}

/// A move this process took on.
#[derive(Clone)]
struct Entry {
    token: CancelToken,
    /// The move ended; its final status is being written.
    finished: bool,
}

/// Whose work an object is.
pub enum Claim {
    /// This agent's node.
    Ours,
    /// Another node's agent, or another data mover, does it: left alone.
    NotOurs,
    /// Nobody can do it; the message says why.
    Nobody(String),
    /// Not yet: its pod is not scheduled, or (on a cluster) Velero's `restore-wait` init
    /// container in it has not started. Looked at again shortly.
    NotYet,
}

/// Decides the claim for work that must run on `node`. `None`: on a cluster, not scheduled yet
/// (every node's agent would otherwise take it); embedded, this one node.
///
/// # Errors
/// API errors.
pub async fn claim_for_node(agent: &Agent, node: Option<&str>, what: &str) -> Result<Claim, Error> {
    match node.filter(|n| !n.is_empty()) {
        None if agent.ctx.mode == crate::context::Mode::Cluster => Ok(Claim::NotYet),
        None => Ok(Claim::Ours),
        Some(n) if n == agent.node => Ok(Claim::Ours),
        Some(n) => {
            let nodes: Api<Node> = Api::all(agent.ctx.client.clone());
            Ok(if nodes.get_opt(n).await?.is_some() {
                Claim::NotOurs
            } else {
                Claim::Nobody(format!(
                    "{what} is on node {n:?}, which does not exist: no node agent serves it \
                     (this agent serves node {:?})",
                    agent.node
                ))
            })
        }
    }
}

/// How one data-moving kind is handled: where it runs, how it is prepared, and the moving
/// itself (blocking, on a thread of its own).
pub trait Mover: Send + Sync + 'static {
    /// The kind.
    type Object: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static;
    /// What preparing found (the directory, the open repository, …).
    type Plan: Send + 'static;
    /// The finalizer that keeps the object until its work is terminal.
    const FINALIZER: &'static str;

    /// The phase in the object's status.
    fn phase(obj: &Self::Object) -> Option<DataMovePhase>;
    /// Whether `spec.cancel` is set.
    fn cancel_requested(obj: &Self::Object) -> bool;
    /// When it was accepted.
    fn accepted_at(obj: &Self::Object) -> Option<Time>;
    /// Whose work it is.
    fn claim(
        agent: &Agent,
        obj: &Self::Object,
    ) -> impl Future<Output = Result<Claim, Error>> + Send;
    /// Status fields written with `Accepted` besides the phase and time.
    fn accepted_fields(agent: &Agent) -> Value;
    /// How long preparing may wait for what is not ready yet.
    fn prepare_timeout(_obj: &Self::Object) -> Duration {
        PREPARE_TIMEOUT
    }
    /// Finds and opens everything the move needs. [`Error::Invalid`] fails the work with its
    /// message; [`Error::NotReady`] waits (up to [`Mover::prepare_timeout`]); other errors are
    /// retried.
    fn prepare(
        agent: &Agent,
        obj: &Self::Object,
    ) -> impl Future<Output = Result<Self::Plan, Error>> + Send;
    /// The bytes to move, when known before moving starts.
    fn total_bytes(plan: &Self::Plan) -> Option<u64>;
    /// Moves the data; returns the status fields of a completed move (besides phase, progress
    /// and completion time) and a note for the completion event. Blocking.
    fn run(
        plan: Self::Plan,
        cancel: CancelToken,
        progress: ProgressFn,
    ) -> Result<(Value, String), holdfast_repository::Error>;
}

/// Runs the controller named `name` of kind `M` for `agent`.
pub async fn run<M: Mover>(agent: Arc<Agent>, name: &'static str) -> Result<(), Error> {
    let api: Api<M::Object> = Api::all(agent.ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    reconciler::run(name, controller, agent, reconcile::<M>).await
}

/// The [`Mover`] methods every Velero data-moving kind answers alike from its fields
/// (`status.phase`, `spec.cancel`, `status.acceptedTimestamp`); used inside `impl Mover`.
macro_rules! velero_fields {
    ($kind:ty) => {
        fn phase(obj: &$kind) -> Option<::holdfast_api::velero::DataMovePhase> {
            obj.status.as_ref().and_then(|s| s.phase)
        }

        fn cancel_requested(obj: &$kind) -> bool {
            obj.spec.cancel == Some(true)
        }

        fn accepted_at(
            obj: &$kind,
        ) -> Option<::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
            obj.status.as_ref().and_then(|s| s.accepted_timestamp.clone())
        }
    };
}
pub(crate) use velero_fields;

/// One reconcile of a data-moving object by `agent`.
///
/// # Errors
/// API errors; they are retried.
pub async fn reconcile<M: Mover>(obj: Arc<M::Object>, agent: Arc<Agent>) -> Result<Action, Error> {
    let ctx = &agent.ctx;
    let api: Api<M::Object> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let uid = obj.uid().unwrap_or_default();
    let phase = M::phase(&obj).unwrap_or(DataMovePhase::New);
    let entry = agent.running().get(&uid).cloned();

    if phase.is_terminal() {
        // Its final status is stored: nothing of it is in flight any more.
        agent.running().remove(&uid);
        if obj.meta().deletion_timestamp.is_some() {
            finalizer::remove(&api, &obj, M::FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    if obj.meta().deletion_timestamp.is_some() {
        if let Some(entry) = entry {
            // The move stops and writes Canceled; that event lets the object go.
            entry.token.cancel();
            return Ok(Action::await_change());
        }
        if finalizer::has(&*obj, M::FINALIZER) {
            finish::<M>(
                &agent,
                &*obj,
                DataMovePhase::Canceled,
                "deleted before it finished",
                json!({}),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }
    if let Some(entry) = entry {
        // This process is moving it, or has just finished and its final status is on its way
        // (this copy of the object may be older than that): only a cancel is acted on.
        if M::cancel_requested(&obj) && !entry.finished && !entry.token.is_cancelled() {
            entry.token.cancel();
            if phase == DataMovePhase::InProgress {
                // Conditional on this version: a final status written meanwhile must not be
                // overwritten by a non-terminal phase.
                let rv = obj.meta().resource_version.clone();
                let patch = json!({"metadata": {"resourceVersion": rv}, "status": {"phase": DataMovePhase::Canceling}});
                api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                publish(
                    ctx,
                    &*obj,
                    EventType::Normal,
                    "Data-Path-Canceling",
                    "Cancel",
                    "cancel requested; stopping the data path",
                )
                .await;
            }
        }
        return Ok(Action::await_change());
    }
    match M::claim(&agent, &obj).await? {
        Claim::Ours => {}
        Claim::NotOurs => return Ok(Action::await_change()),
        // The pod's scheduling changes no field of the request: look again.
        Claim::NotYet => return Ok(Action::requeue(PREPARE_RETRY)),
        Claim::Nobody(why) => {
            finish::<M>(&agent, &*obj, DataMovePhase::Failed, &why, json!({})).await?;
            return Ok(Action::await_change());
        }
    }
    if finalizer::add(&api, &obj, M::FINALIZER).await? {
        // The next event (our own edit) carries on from the stored object.
        return Ok(Action::await_change());
    }
    if M::cancel_requested(&obj) {
        finish::<M>(
            &agent,
            &*obj,
            DataMovePhase::Canceled,
            "canceled before data moved",
            json!({}),
        )
        .await?;
        return Ok(Action::await_change());
    }
    match phase {
        DataMovePhase::New => {
            let mut fields = M::accepted_fields(&agent);
            fields["phase"] = json!(DataMovePhase::Accepted);
            fields["acceptedTimestamp"] = json!(Time(ctx.clock.now()));
            patch_status(&api, &*obj, fields).await?;
            let schedule = metrics::velero_schedule(obj.meta());
            ctx.metrics.data_move_attempted(&kind::<M>(), &agent.node, schedule);
            Ok(Action::await_change())
        }
        DataMovePhase::Accepted | DataMovePhase::Prepared => {
            prepare_and_start::<M>(&agent, &obj, &api).await
        }
        DataMovePhase::InProgress | DataMovePhase::Canceling => {
            // Only a restart of this process loses a running move: it is registered before
            // InProgress is written and kept until its terminal phase is seen stored.
            let why = "the node agent restarted while data was moving; the move cannot be \
                       continued from where it stopped, create a new one to try again";
            let end = if phase == DataMovePhase::Canceling {
                DataMovePhase::Canceled
            } else {
                DataMovePhase::Failed
            };
            finish::<M>(&agent, &*obj, end, why, json!({})).await?;
            Ok(Action::await_change())
        }
        _ => Ok(Action::await_change()),
    }
}

async fn prepare_and_start<M: Mover>(
    agent: &Arc<Agent>,
    obj: &Arc<M::Object>,
    api: &Api<M::Object>,
) -> Result<Action, Error> {
    let ctx = &agent.ctx;
    let plan = match M::prepare(agent, obj).await {
        Ok(plan) => plan,
        Err(Error::Invalid(why)) => {
            finish::<M>(agent, &**obj, DataMovePhase::Failed, &why, json!({})).await?;
            return Ok(Action::await_change());
        }
        Err(Error::NotReady(why)) => {
            let waited = M::accepted_at(obj)
                .map(|t| ctx.clock.now().duration_since(t.0).unsigned_abs())
                .unwrap_or_default();
            let timeout = M::prepare_timeout(obj);
            if waited >= timeout {
                let message = format!(
                    "timeout on preparing: still not ready after {}: {why}",
                    in_words(timeout)
                );
                finish::<M>(agent, &**obj, DataMovePhase::Failed, &message, json!({})).await?;
                return Ok(Action::await_change());
            }
            // Written once per reason: a patch per retry would wake this reconcile again at once.
            let shown =
                serde_json::to_value(&**obj)?["status"]["message"].as_str() == Some(why.as_str());
            if !shown {
                patch_status(api, &**obj, json!({"message": why})).await?;
            }
            return Ok(Action::requeue(PREPARE_RETRY));
        }
        Err(other) => return Err(other),
    };
    if M::phase(obj) != Some(DataMovePhase::Prepared) {
        patch_status(api, &**obj, json!({"phase": DataMovePhase::Prepared, "message": null}))
            .await?;
    }
    let uid = obj.uid().unwrap_or_default();
    let token = CancelToken::new();
    agent.running().insert(uid.clone(), Entry { token: token.clone(), finished: false });
    let (agent, obj, api) = (agent.clone(), obj.clone(), api.clone());
    tokio::spawn(async move {
        let (phase, message, fields) = match run_move::<M>(&agent, &obj, &api, plan, token).await {
            Ok(end) => end,
            Err(error) => {
                (DataMovePhase::Failed, format!("cannot record the move: {error}"), json!({}))
            }
        };
        if agent.stopping() {
            // Not a cancel anyone asked for: the next agent ends it as interrupted.
            tracing::info!(object = %obj.name_any(), "data move stopped by shutdown");
            return;
        }
        if let Some(entry) = agent.running().get_mut(&uid) {
            entry.finished = true;
        }
        // The result must reach the object: a lost write would leave it InProgress until the
        // next restart, and lose a completed backup's snapshot id.
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=FINISH_ATTEMPTS {
            match finish::<M>(&agent, &*obj, phase, &message, fields.clone()).await {
                Ok(()) => break,
                Err(error) if attempt == FINISH_ATTEMPTS => {
                    tracing::error!(object = %obj.name_any(), %error, "cannot record the end of a data move");
                }
                Err(error) => {
                    tracing::warn!(object = %obj.name_any(), %error, "recording the end of a data move; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    Ok(Action::await_change())
}

/// The final phase, message and status fields of a move.
type End = (DataMovePhase, String, Value);

/// Resolves once `token` is cancelled.
async fn cancelled(token: &CancelToken) {
    while !token.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a slot (or a cancel), moves the data and returns how it ended.
async fn run_move<M: Mover>(
    agent: &Agent,
    obj: &M::Object,
    api: &Api<M::Object>,
    plan: M::Plan,
    token: CancelToken,
) -> Result<End, Error> {
    let ctx = &agent.ctx;
    let canceled_early =
        || Ok((DataMovePhase::Canceled, "canceled before data moved".to_owned(), json!({})));
    let _slot = tokio::select! {
        slot = agent.slots.clone().acquire_owned() => slot.map_err(|_| Error::ControllerStopped {
            name: "node-agent".into(),
            reason: "its slots were closed".into(),
        })?,
        () = cancelled(&token) => return canceled_early(),
    };
    if token.is_cancelled() {
        return canceled_early();
    }
    let total = M::total_bytes(&plan);
    let mut fields =
        json!({"phase": DataMovePhase::InProgress, "startTimestamp": Time(ctx.clock.now())});
    if let Some(total) = total {
        fields["progress"] = json!({"totalBytes": total, "bytesDone": 0});
    }
    patch_status(api, obj, fields).await?;
    publish(ctx, obj, EventType::Normal, "Data-Path-Started", "Move", "data path started").await;

    let (tx, mut rx) = watch::channel(Progress::default());
    let progress: ProgressFn = Arc::new(move |p: &Progress| {
        let _ = tx.send(*p);
    });
    let cancel = token.clone();
    let mut work = tokio::task::spawn_blocking(move || M::run(plan, cancel, progress));
    let mut shown = Shown { total: total.unwrap_or(0), ..Shown::default() };
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = ticker.tick() => {
                let current = *rx.borrow_and_update();
                if let Some(update) = shown.advance(&current, total.is_some()) {
                    // A lost progress write is not worth failing the move over.
                    if let Err(error) = patch_status(api, obj, json!({"progress": update})).await {
                        tracing::debug!(%error, "progress not written");
                    }
                }
            }
        }
    };
    let result = result.unwrap_or_else(|join| {
        Err(holdfast_repository::Error::Pipeline(format!("the data path crashed: {join}")))
    });
    match result {
        Ok((mut fields, note)) => {
            let last = *rx.borrow();
            let done = shown.total.max(shown.done).max(last.bytes_done);
            fields["progress"] = json!({"totalBytes": done, "bytesDone": done});
            Ok((DataMovePhase::Completed, note, fields))
        }
        Err(holdfast_repository::Error::Cancelled) => {
            Ok((DataMovePhase::Canceled, "canceled while data was moving".to_owned(), json!({})))
        }
        Err(error) => Ok((DataMovePhase::Failed, error.to_string(), json!({}))),
    }
}

/// What `status.progress` shows: it moves only forwards, and only once the total is known.
#[derive(Default)]
struct Shown {
    total: u64,
    done: u64,
    /// The last (total, done) written.
    written: Option<(u64, u64)>,
}

impl Shown {
    /// The progress to write for `current`, if it shows something new.
    fn advance(
        &mut self,
        current: &Progress,
        total_known_up_front: bool,
    ) -> Option<DataMoveProgress> {
        if !total_known_up_front {
            if !current.totals_known {
                return None;
            }
            self.total = self.total.max(current.bytes_total);
        }
        // A file that grew since it was counted can carry the done count past the total.
        self.total = self.total.max(current.bytes_done);
        self.done = self.done.max(current.bytes_done);
        if self.written == Some((self.total, self.done)) {
            return None;
        }
        self.written = Some((self.total, self.done));
        Some(DataMoveProgress {
            total_bytes: Some(i64::try_from(self.total).unwrap_or(i64::MAX)),
            bytes_done: Some(i64::try_from(self.done).unwrap_or(i64::MAX)),
        })
    }
}

/// Ends the work in `phase` with `message`, the completion time and `fields`, publishes the
/// event Velero's data path would, and records the end in the metrics.
async fn finish<M: Mover>(
    agent: &Agent,
    obj: &M::Object,
    phase: DataMovePhase,
    message: &str,
    mut fields: Value,
) -> Result<(), Error> {
    let ctx = &agent.ctx;
    let api: Api<M::Object> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let now = ctx.clock.now();
    fields["phase"] = json!(phase);
    fields["message"] = json!(message);
    fields["completionTimestamp"] = json!(Time(now));
    patch_status(&api, obj, fields.clone()).await?;
    record_end::<M>(agent, obj, phase, now, &fields);
    let (kind, reason) = match phase {
        DataMovePhase::Completed => (EventType::Normal, "Data-Path-Completed"),
        DataMovePhase::Canceled => (EventType::Normal, "Data-Path-Canceled"),
        _ => (EventType::Warning, "Data-Path-Failed"),
    };
    publish(ctx, obj, kind, reason, "Move", message).await;
    Ok(())
}

/// The kind of `M`'s objects (`PodVolumeBackup`, …), which names its metrics.
fn kind<M: Mover>() -> String {
    <M::Object as Resource>::kind(&()).into_owned()
}

/// Counts the end of a move whose terminal `phase` was just written from `obj` (its state
/// before): an object that ends before it was ever accepted is attempted here too.
fn record_end<M: Mover>(
    agent: &Agent,
    obj: &M::Object,
    phase: DataMovePhase,
    now: jiff::Timestamp,
    fields: &Value,
) {
    let Some(outcome) = metrics::data_move_outcome(phase) else { return };
    let before = M::phase(obj).unwrap_or(DataMovePhase::New);
    if before.is_terminal() {
        return;
    }
    let metrics = &agent.ctx.metrics;
    let (kind, schedule) = (kind::<M>(), metrics::velero_schedule(obj.meta()));
    if before == DataMovePhase::New {
        metrics.data_move_attempted(&kind, &agent.node, schedule);
    }
    let moved = fields.pointer("/progress/bytesDone").and_then(Value::as_u64);
    let end = metrics::End::new(outcome, M::accepted_at(obj).map(|t| t.0), now)
        .with_bytes(moved.filter(|_| outcome == metrics::Outcome::Succeeded));
    metrics.data_move_finished(&kind, &agent.node, schedule, &end);
}

async fn patch_status<K>(api: &Api<K>, obj: &K, fields: Value) -> Result<(), Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": fields})),
    )
    .await?;
    Ok(())
}

/// A wait's length as a person would say it: whole minutes when it is some, else seconds.
fn in_words(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (1, 0) => "1 minute".to_owned(),
        (m, 0) if m > 0 => format!("{m} minutes"),
        _ => format!("{secs} seconds"),
    }
}

/// The `WriteSparseFiles` setting of `uploaderSettings`/`dataMoverConfig`; unset is false.
///
/// # Errors
/// [`Error::Invalid`] for a value that is not `true` or `false`.
pub fn write_sparse(
    settings: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<bool, Error> {
    match settings.and_then(|s| s.get("WriteSparseFiles")).map(|v| v.trim()) {
        None | Some("" | "false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Error::Invalid(format!(
            "uploader setting WriteSparseFiles = {other:?} is not true or false"
        ))),
    }
}

/// An uploader/downloader setting (`uploaderSettings`, `dataMoverConfig`) as a number of
/// parallel workers; unset means the engine's default.
///
/// # Errors
/// [`Error::Invalid`] naming the key for a value that is not a positive number.
pub fn parallelism(
    settings: Option<&std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Result<usize, Error> {
    match settings.and_then(|s| s.get(key)).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::Invalid(format!("uploader setting {key} = {v:?} is not a positive number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(total: u64, done: u64, known: bool) -> Progress {
        Progress {
            bytes_total: total,
            bytes_done: done,
            totals_known: known,
            ..Progress::default()
        }
    }

    #[test]
    fn progress_waits_for_the_total_and_never_goes_back() {
        let mut shown = Shown::default();
        assert_eq!(shown.advance(&p(0, 10, false), false), None, "no total yet");
        let first = shown.advance(&p(100, 10, true), false).unwrap();
        assert_eq!((first.total_bytes, first.bytes_done), (Some(100), Some(10)));
        assert_eq!(shown.advance(&p(100, 10, true), false), None, "nothing new");
        let grew = shown.advance(&p(100, 130, true), false).unwrap();
        assert_eq!((grew.total_bytes, grew.bytes_done), (Some(130), Some(130)));
        assert_eq!(shown.advance(&p(100, 50, true), false), None, "never backwards");
    }

    #[test]
    fn a_total_known_up_front_is_shown_from_the_start() {
        let mut shown = Shown { total: 500, ..Shown::default() };
        let first = shown.advance(&p(20, 20, false), true).unwrap();
        assert_eq!((first.total_bytes, first.bytes_done), (Some(500), Some(20)));
    }

    #[test]
    fn parallelism_settings_are_positive_numbers() {
        let settings: std::collections::BTreeMap<String, String> = [
            ("ParallelFilesUpload".to_owned(), "4".to_owned()),
            ("Bad".to_owned(), "0".to_owned()),
        ]
        .into();
        assert_eq!(parallelism(Some(&settings), "ParallelFilesUpload").unwrap(), 4);
        assert_eq!(parallelism(Some(&settings), "Missing").unwrap(), 0);
        assert_eq!(parallelism(None, "ParallelFilesUpload").unwrap(), 0);
        let err = parallelism(Some(&settings), "Bad").unwrap_err().to_string();
        assert_eq!(err, "uploader setting Bad = \"0\" is not a positive number");
    }

    #[test]
    fn sparse_setting_is_true_or_false() {
        let of = |v: &str| {
            let settings: std::collections::BTreeMap<String, String> =
                [("WriteSparseFiles".to_owned(), v.to_owned())].into();
            write_sparse(Some(&settings))
        };
        assert!(of("true").unwrap());
        assert!(!of("false").unwrap());
        assert!(!write_sparse(None).unwrap());
        let err = of("yes").unwrap_err().to_string();
        assert_eq!(err, "uploader setting WriteSparseFiles = \"yes\" is not true or false");
    }

    #[test]
    fn waits_are_said_in_words() {
        assert_eq!(in_words(PREPARE_TIMEOUT), "30 minutes");
        assert_eq!(in_words(Duration::from_secs(60)), "1 minute");
        assert_eq!(in_words(Duration::from_secs(90)), "90 seconds");
    }
}
