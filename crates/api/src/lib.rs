//! The typed API of holdfast: every kind it serves, with the upstream projects' field names,
//! defaults and validation, and the CRDs that describe them. No I/O happens here.
//!
//! [`registry()`] lists every kind as a [`ResourceDef`]; the embedded API server serves exactly
//! that list, and `holdfast crds` prints the custom ones for a real cluster.

pub mod alauda;
pub mod builtin;
pub mod duration;
pub mod field;
pub mod go_duration;
pub mod kubeblocks;
pub mod quantity;
pub mod rbac;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod snapshot;
pub mod storage;
pub mod velero;

pub use field::{FieldError, FieldErrorKind};
pub use resource::{Admit, PrinterColumn, ResourceDef};

/// Every kind holdfast serves: the custom kinds of the five upstream APIs and the built-in core
/// kinds the controllers need.
pub fn registry() -> Vec<ResourceDef> {
    let mut defs = Vec::new();
    defs.extend(velero::definitions());
    defs.extend(snapshot::definitions());
    defs.extend(kubeblocks::definitions());
    defs.extend(storage::definitions());
    defs.extend(alauda::definitions());
    defs.extend(builtin::definitions());
    defs.extend(rbac::definitions());
    defs
}

/// The CRDs of every custom kind, as `apiextensions.k8s.io/v1` objects.
pub fn crds() -> Vec<serde_json::Value> {
    registry().iter().filter_map(ResourceDef::crd).collect()
}
