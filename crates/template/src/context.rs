//! The data a StorageProvider's templates are rendered with: KubeBlocks' `renderContext`.
//!
//! Upstream providers name these fields (`.Parameters`, `.CSIDriverSecretRef.Name`,
//! `.GeneratedStorageClassName`), so their shape is part of the contract with users who copy
//! providers verbatim; it lives here, beside the engine, so every renderer builds it one way.

use std::collections::BTreeMap;

use crate::{Template, TemplateError, Value};

/// What the BackupRepo controller hands a StorageProvider's templates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderContext {
    /// `.Parameters`: schema defaults < `spec.config` < credential Secret keys.
    pub parameters: BTreeMap<String, String>,
    /// `.CSIDriverSecretRef` (`.Name`, `.Namespace`) of the generated CSI driver Secret.
    pub csi_driver_secret_ref: Option<(String, String)>,
    /// `.GeneratedStorageClassName`, for the PVC template.
    pub generated_storage_class_name: Option<String>,
}

impl RenderContext {
    /// A context with only `.Parameters`, as the datasafed config template gets.
    pub fn with_parameters(parameters: BTreeMap<String, String>) -> Self {
        Self { parameters, ..Self::default() }
    }

    /// The context as template data.
    pub fn to_value(&self) -> Value {
        let mut root = BTreeMap::new();
        root.insert("Parameters".to_owned(), Value::StringMap(self.parameters.clone()));
        let (name, namespace) = self.csi_driver_secret_ref.clone().unwrap_or_default();
        let secret_ref: BTreeMap<String, Value> = [
            ("Name".to_owned(), Value::String(name)),
            ("Namespace".to_owned(), Value::String(namespace)),
        ]
        .into();
        root.insert("CSIDriverSecretRef".to_owned(), Value::Map(secret_ref));
        root.insert(
            "GeneratedStorageClassName".to_owned(),
            Value::String(self.generated_storage_class_name.clone().unwrap_or_default()),
        );
        Value::Map(root)
    }
}

/// Parses and renders `src` in one step.
pub fn render(name: &str, src: &str, ctx: &RenderContext) -> Result<String, TemplateError> {
    Template::parse(name, src)?.render(&ctx.to_value())
}
