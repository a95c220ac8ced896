use super::*;

fn defs() -> Vec<ResourceDef> {
    holdfast_api::registry()
}

#[test]
fn placeholder_compiles() {
    assert!(v3_group_version(&defs(), "velero.io", "v1").is_some());
}
