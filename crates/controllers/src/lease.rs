//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several `holdfast operator`
//! replicas exactly one runs the controllers at a time.
//!
//! The rules are client-go's: a candidate takes the lease when nobody holds it, or when the record
//! has not changed for a whole lease duration **as measured on the candidate's own clock** since
//! it first saw that record (so clock skew between replicas cannot make a live leader look
//! expired); every write is a replace at the read `resourceVersion`, so two candidates racing for
//! an expired lease cannot both win. The holder renews every third of the duration and stops
//! acting when it could not renew for two thirds of it, before anyone else may take over. Giving
//! the lease up (on shutdown) clears the holder, so a successor takes over at its next try
//! instead of after the duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// One candidate's view of the lease.
pub struct Candidate {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The record last seen (its resourceVersion) and when this candidate first saw it.
    observed: Option<(String, Instant)>,
    /// When this candidate last wrote the lease as its holder.
    renewed: Option<Instant>,
}

/// What one [`Candidate::try_lead`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This candidate holds the lease (it took or renewed it just now).
    Leading,
    /// Someone else holds it.
    Following {
        /// The holder named by the lease, if any.
        holder: Option<String>,
    },
}

impl Candidate {
    /// A candidate named `identity` for the lease `namespace/name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            observed: None,
            renewed: None,
        }
    }

    /// How often to call [`Candidate::try_lead`]: a third of the lease duration.
    pub fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// Whether a leader must stop acting now: it has not renewed for two thirds of the duration,
    /// so a successor may take over within the remaining third.
    pub fn must_stop(&self) -> bool {
        self.renewed.is_none_or(|t| t.elapsed() >= self.duration * 2 / 3)
    }

    /// Takes the lease if it is free or expired, renews it if held by this candidate.
    ///
    /// # Errors
    /// The API server's (a lost race is not an error: it reports `Following`).
    pub async fn try_lead(&mut self) -> Result<Standing, kube::Error> {
        // A successor counts from when it sees the new record, which is after this: renewing
        // from here keeps the leader's deadline on the safe side of a slow write.
        let started = Instant::now();
        let now = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.won(started)),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Standing::Following { holder: None })
                }
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let version = current.metadata.resource_version.clone().unwrap_or_default();
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() {
            // The holder's own duration counts, from when this candidate first saw the record.
            let first_seen = match &self.observed {
                Some((v, at)) if *v == version => *at,
                _ => {
                    self.observed = Some((version.clone(), Instant::now()));
                    self.renewed = None;
                    return Ok(Standing::Following { holder });
                }
            };
            let theirs = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.duration, Duration::from_secs);
            if first_seen.elapsed() < theirs {
                self.renewed = None;
                return Ok(Standing::Following { holder });
            }
            tracing::info!(lease = %self.name, expired = ?holder, "the lease expired; taking it over");
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let mut next = current;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if mine { spec.acquire_time } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..spec
        });
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(self.won(started)),
            // Someone else wrote it first: theirs is the newer record.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.renewed = None;
                Ok(Standing::Following { holder })
            }
            Err(e) => Err(e),
        }
    }

    fn won(&mut self, started: Instant) -> Standing {
        self.renewed = Some(started);
        self.observed = None;
        Standing::Leading
    }

    /// Gives the lease up if this candidate holds it: clears the holder, so the next candidate
    /// takes it at its next try.
    ///
    /// # Errors
    /// The API server's.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut current) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let spec = current.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        self.renewed = None;
        match self.api.replace(&self.name, &PostParams::default(), &current).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
