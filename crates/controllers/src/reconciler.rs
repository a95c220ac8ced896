//! Running a reconciler. Every controller of this crate starts through [`run`], which also
//! decides when an object whose reconcile failed is looked at again, from the [`ErrorKind`] of
//! the error ([`RequeuePolicy`]):
//!
//! - transient: again after a delay that doubles with each consecutive failure of that object,
//!   up to a cap; a success starts it over;
//! - waiting: when a watch event brings a change, or after a long safety interval for what no
//!   watch covers;
//! - permanent: only when the object (or something watched on its behalf) changes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::Resource;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::error::ErrorKind;

/// When to look again at an object whose reconcile failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequeuePolicy {
    /// Delay after the first transient failure; doubled for each further one.
    pub first_retry: Duration,
    /// The longest delay between transient retries.
    pub max_retry: Duration,
    /// The safety requeue of an object that waits for something.
    pub waiting: Duration,
}

impl Default for RequeuePolicy {
    fn default() -> Self {
        RequeuePolicy {
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(120),
            waiting: Duration::from_secs(600),
        }
    }
}

impl RequeuePolicy {
    /// The delay before the next reconcile after the `failures`-th consecutive failure (counted
    /// from 1) of `kind`; `None`: only a change brings the object back.
    pub fn delay(&self, kind: ErrorKind, failures: u32) -> Option<Duration> {
        match kind {
            ErrorKind::Permanent => None,
            ErrorKind::Waiting => Some(self.waiting),
            ErrorKind::Transient => {
                let doublings = failures.saturating_sub(1).min(31);
                Some(self.first_retry.saturating_mul(1 << doublings).min(self.max_retry))
            }
        }
    }

    /// [`RequeuePolicy::delay`] as the controller's action.
    pub fn action(&self, kind: ErrorKind, failures: u32) -> Action {
        self.delay(kind, failures).map_or_else(Action::await_change, Action::requeue)
    }
}

/// Consecutive failures per object, for the back-off of transient errors.
#[derive(Debug, Default)]
struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding the lock leaves plain counters behind; keep using them.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more failure of `key`; returns the count.
    fn record(&self, key: &str) -> u32 {
        let mut map = self.map();
        let count = map.entry(key.to_owned()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    fn clear(&self, key: &str) {
        self.map().remove(key);
    }
}

/// What the reconcile and error-policy closures of one controller share.
struct Shared<C> {
    name: &'static str,
    ctx: Arc<C>,
    policy: RequeuePolicy,
    failures: Failures,
}

impl<C> Shared<C> {
    fn after_error<K: Resource>(&self, obj: &K, error: &Error) -> Action {
        let key = key_of(obj);
        let kind = error.kind();
        let failures = self.failures.record(&key);
        let delay = self.policy.delay(kind, failures);
        let controller = self.name;
        match kind {
            ErrorKind::Transient => {
                tracing::warn!(controller, object = %key, %error, ?delay, failures, "reconcile failed; retrying")
            }
            ErrorKind::Waiting => {
                tracing::info!(controller, object = %key, %error, "waiting for a change")
            }
            ErrorKind::Permanent => {
                tracing::warn!(controller, object = %key, %error, "reconcile failed; retrying once the object changes")
            }
        }
        self.policy.action(kind, failures)
    }
}

/// `namespace/name` (or `name`) of an object.
fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// Runs `controller` with `reconcile` on `ctx` until its watches end, which they only do when
/// the process shuts down: the result is then the error saying that the controller `name`
/// stopped, so the caller treats it as one that failed.
pub async fn run<K, C, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<C>,
    mut reconcile: F,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Unpin + Eq + Hash + Clone,
    C: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        name,
        ctx,
        policy: RequeuePolicy::default(),
        failures: Failures::default(),
    });
    controller
        .run(
            move |obj, shared: Arc<Shared<C>>| {
                let key = key_of(&*obj);
                let work = reconcile(obj, shared.ctx.clone());
                async move {
                    let result = work.await;
                    if result.is_ok() {
                        shared.failures.clear(&key);
                    }
                    result
                }
            },
            |obj, error, shared| shared.after_error(&*obj, error),
            shared,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller = name, %error, "reconcile");
            }
        })
        .await;
    Err(Error::ControllerStopped { name: name.into(), reason: "its watch ended".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_back_off_exponentially_up_to_the_cap() {
        let policy = RequeuePolicy::default();
        let delays: Vec<u64> =
            (1..=9).map(|n| policy.delay(ErrorKind::Transient, n).unwrap().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 120, 120]);
        assert_eq!(policy.delay(ErrorKind::Transient, u32::MAX), Some(policy.max_retry));
    }

    #[test]
    fn waiting_relies_on_watches_and_permanent_never_spins() {
        let policy = RequeuePolicy::default();
        assert_eq!(policy.delay(ErrorKind::Waiting, 1), Some(Duration::from_secs(600)));
        assert_eq!(policy.delay(ErrorKind::Waiting, 50), Some(Duration::from_secs(600)));
        assert_eq!(policy.delay(ErrorKind::Permanent, 1), None);
        assert_eq!(policy.action(ErrorKind::Permanent, 7), Action::await_change());
        assert_eq!(policy.action(ErrorKind::Transient, 2), Action::requeue(Duration::from_secs(2)));
    }

    #[test]
    fn failures_count_per_object_and_a_success_starts_over() {
        let shared = Shared {
            name: "test",
            ctx: Arc::new(()),
            policy: RequeuePolicy::default(),
            failures: Failures::default(),
        };
        let mut a = k8s_openapi::api::core::v1::ConfigMap::default();
        a.metadata.name = Some("a".into());
        a.metadata.namespace = Some("ns".into());
        let mut b = a.clone();
        b.metadata.name = Some("b".into());
        let hiccup = || Error::io("read /x")(std::io::Error::other("busy"));
        assert_eq!(shared.after_error(&a, &hiccup()), Action::requeue(Duration::from_secs(1)));
        assert_eq!(shared.after_error(&a, &hiccup()), Action::requeue(Duration::from_secs(2)));
        assert_eq!(shared.after_error(&b, &hiccup()), Action::requeue(Duration::from_secs(1)));
        shared.failures.clear(&key_of(&a));
        assert_eq!(shared.after_error(&a, &hiccup()), Action::requeue(Duration::from_secs(1)));
        let invalid = Error::Invalid("spec.x is wrong".into());
        assert_eq!(shared.after_error(&a, &invalid), Action::await_change());
        assert_eq!(key_of(&a), "ns/a");
    }
}
