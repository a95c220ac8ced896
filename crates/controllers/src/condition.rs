//! Status conditions (`metav1.Condition`), kept as Kubernetes keeps them: one entry per type,
//! and a `lastTransitionTime` that moves only when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(ok: bool) -> Self {
        if ok { Status::True } else { Status::False }
    }
}

/// Sets the condition `type_` (replacing the one of that type, else appending), observed at
/// `generation`; its transition time is `now` unless the status stays what it was.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: impl Into<Status>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.into().as_str();
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Whether the condition `type_` is there and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut conditions = Vec::new();
        set(&mut conditions, "Ready", false, "Waiting", "a", Some(1), at("2026-01-01T00:00:00Z"));
        set(
            &mut conditions,
            "Other",
            Status::Unknown,
            "Checking",
            "b",
            Some(1),
            at("2026-01-01T00:00:01Z"),
        );
        set(
            &mut conditions,
            "Ready",
            false,
            "StillWaiting",
            "c",
            Some(2),
            at("2026-01-01T00:00:02Z"),
        );
        assert_eq!(conditions.len(), 2, "one entry per type");
        let ready = &conditions[0];
        assert_eq!((ready.reason.as_str(), ready.message.as_str()), ("StillWaiting", "c"));
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(ready.last_transition_time, Time(at("2026-01-01T00:00:00Z")));
        assert!(!is_true(&conditions, "Ready"));
        set(&mut conditions, "Ready", true, "Done", "d", Some(2), at("2026-01-01T00:00:03Z"));
        assert_eq!(conditions[0].last_transition_time, Time(at("2026-01-01T00:00:03Z")));
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(conditions[1].status, "Unknown");
    }
}
