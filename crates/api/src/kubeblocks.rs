//! (being written)

use crate::resource::ResourceDef;

/// Definitions of the kinds in this module.
pub fn definitions() -> Vec<ResourceDef> {
    Vec::new()
}
