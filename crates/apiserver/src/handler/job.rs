//! What the apiserver's Job strategy adds to a new Job: a selector that matches only its own
//! pods, and the labels that make its pod template match it (`generateSelector` upstream). It
//! needs the Job's uid, so it runs after the uid is given.

use serde_json::{Map, Value};

/// The labels a Job's pods carry, in both spellings Kubernetes sets.
const CONTROLLER_UID: [&str; 2] = ["controller-uid", "batch.kubernetes.io/controller-uid"];
const JOB_NAME: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];

fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for key in path {
        let map = cur.as_object_mut()?;
        let next = map.entry(*key).or_insert_with(|| Value::Object(Map::new()));
        if next.is_null() {
            *next = Value::Object(Map::new());
        }
        cur = next;
    }
    cur.as_object_mut()
}

/// Unless `spec.manualSelector` is true: labels the pod template with the Job's name and uid
/// (keeping labels the user set) and selects `batch.kubernetes.io/controller-uid=<uid>`, so
/// `kubectl logs job/X` and `kubectl get pods -l` find this Job's pods and no other's.
pub(crate) fn generate_selector(job: &mut Value, name: &str, uid: &str) {
    if job.pointer("/spec/manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(labels) = object_at(job, &["spec", "template", "metadata", "labels"]) {
        for (keys, value) in [(JOB_NAME, name), (CONTROLLER_UID, uid)] {
            for key in keys {
                labels.entry(key).or_insert_with(|| value.into());
            }
        }
    }
    if let Some(match_labels) = object_at(job, &["spec", "selector", "matchLabels"]) {
        match_labels.entry(CONTROLLER_UID[1]).or_insert_with(|| uid.into());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_new_job_selects_its_own_pods() {
        let mut job = json!({"spec": {"template": {"metadata": {"labels": {"app": "x", "job-name": "mine"}},
            "spec": {}}}});
        generate_selector(&mut job, "j", "u-1");
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"app": "x", "job-name": "mine", "batch.kubernetes.io/job-name": "j",
                "controller-uid": "u-1", "batch.kubernetes.io/controller-uid": "u-1"})
        );
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let mut manual = json!({"spec": {"manualSelector": true, "template": {"metadata": null}}});
        generate_selector(&mut manual, "j", "u-1");
        assert!(manual["spec"].get("selector").is_none());
    }
}
