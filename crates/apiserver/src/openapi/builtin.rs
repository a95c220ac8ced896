//! Schemas of the built-in kinds and of the meta types every document references, generated once
//! from k8s-openapi's `JsonSchema` implementations (which carry upstream's component names and
//! descriptions) in OpenAPI 3.0 form, with `$ref`s pointing at `#/components/schemas/…`.

use std::sync::OnceLock;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ListMeta, ObjectMeta, Status};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

struct Generated {
    definitions: Map<String, Value>,
    /// (group, version, kind) → component name.
    kinds: Vec<((&'static str, &'static str, &'static str), String)>,
}

fn add<T: JsonSchema + k8s_openapi::Resource>(
    generator: &mut SchemaGenerator,
    kinds: &mut Vec<((&'static str, &'static str, &'static str), String)>,
) {
    generator.subschema_for::<T>();
    kinds.push(((T::GROUP, T::VERSION, T::KIND), T::schema_name().into_owned()));
}

fn generated() -> &'static Generated {
    static GENERATED: OnceLock<Generated> = OnceLock::new();
    GENERATED.get_or_init(|| {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut kinds = Vec::new();
        let g = &mut generator;
        add::<Namespace>(g, &mut kinds);
        add::<Secret>(g, &mut kinds);
        add::<ConfigMap>(g, &mut kinds);
        add::<Pod>(g, &mut kinds);
        add::<PersistentVolumeClaim>(g, &mut kinds);
        add::<PersistentVolume>(g, &mut kinds);
        add::<Event>(g, &mut kinds);
        add::<ServiceAccount>(g, &mut kinds);
        add::<Service>(g, &mut kinds);
        add::<Endpoints>(g, &mut kinds);
        add::<Node>(g, &mut kinds);
        add::<LimitRange>(g, &mut kinds);
        add::<ResourceQuota>(g, &mut kinds);
        add::<Job>(g, &mut kinds);
        add::<CronJob>(g, &mut kinds);
        add::<EventV1>(g, &mut kinds);
        add::<StorageClass>(g, &mut kinds);
        add::<CSIDriver>(g, &mut kinds);
        add::<VolumeAttachment>(g, &mut kinds);
        add::<Role>(g, &mut kinds);
        add::<ClusterRole>(g, &mut kinds);
        add::<RoleBinding>(g, &mut kinds);
        add::<ClusterRoleBinding>(g, &mut kinds);
        g.subschema_for::<ObjectMeta>();
        g.subschema_for::<ListMeta>();
        g.subschema_for::<DeleteOptions>();
        g.subschema_for::<Status>();
        Generated { definitions: generator.take_definitions(true), kinds }
    })
}

/// Every generated schema, by component name.
pub fn definitions() -> &'static Map<String, Value> {
    &generated().definitions
}

/// The component name of a built-in kind k8s-openapi describes, e.g. `io.k8s.api.core.v1.Pod`.
pub fn schema_name(group: &str, version: &str, kind: &str) -> Option<String> {
    generated()
        .kinds
        .iter()
        .find(|((g, v, k), _)| *g == group && *v == version && *k == kind)
        .map(|(_, name)| name.clone())
}
