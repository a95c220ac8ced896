//! RFC 6902 JSON patch with the one leniency Kubernetes has: a `test` whose value is
//! `null` succeeds when the path does not exist. kube-runtime's `finalizer()` helper relies on it.

use json_patch::{PatchOperation, jsonptr::Pointer};
use serde_json::Value;

use super::PatchError;

/// Applies an RFC 6902 patch (`patch` must be an array of operations) to a copy of `target`.
pub fn json(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(raw_ops) = patch else {
        return Err(PatchError::Malformed(
            "json patch must be a JSON array of operations".to_string(),
        ));
    };
    let mut ops = Vec::with_capacity(raw_ops.len());
    for (index, raw) in raw_ops.iter().enumerate() {
        let op: PatchOperation = serde_json::from_value(raw.clone()).map_err(|e| {
            PatchError::Malformed(format!("json patch operation {index} is invalid: {e}"))
        })?;
        ops.push(op);
    }
    let mut doc = target.clone();
    for (index, op) in ops.iter().enumerate() {
        if let PatchOperation::Test(t) = op
            && t.value.is_null()
        {
            // evanphx/json-patch: a null test value matches both a missing path and a null value.
            match doc.pointer(t.path.as_str()) {
                None | Some(Value::Null) => continue,
                Some(_) => {
                    return Err(op_error(
                        index,
                        op,
                        "value did not match (expected null)".to_string(),
                    ));
                }
            }
        }
        json_patch::patch(&mut doc, std::slice::from_ref(op))
            .map_err(|e| op_error(index, op, e.kind.to_string()))?;
    }
    Ok(doc)
}

fn op_error(index: usize, op: &PatchOperation, reason: String) -> PatchError {
    let name = match op {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    };
    let path: &Pointer = op.path();
    PatchError::Operation { index, op: name.to_string(), path: path.as_str().to_string(), reason }
}
