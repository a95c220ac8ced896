//! VolumeSnapshotClasses: the class a dynamic snapshot is taken with (the one it names, else its
//! driver's default), and the default class of the embedded driver, installed at start.

use std::collections::BTreeMap;

use holdfast_api::snapshot::{
    DeletionPolicy, IS_DEFAULT_CLASS_ANNOTATION, VolumeSnapshotClass, VolumeSnapshotClassFields,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use kube::api::Api;

use super::driver::DRIVER;
use crate::{Context, Error, object};

/// Name of the embedded driver's default VolumeSnapshotClass.
pub const DEFAULT_CLASS: &str = "local-path";

/// The default class for a snapshot of a volume of `driver`, as upstream picks it: the classes
/// annotated `snapshot.storage.kubernetes.io/is-default-class: "true"` whose driver is
/// `driver`; exactly one must be.
///
/// # Errors
/// Upstream's messages, with the driver: "cannot find default snapshot class" for none,
/// "N default snapshot classes were found" for several.
pub fn choose_default<'a>(
    classes: &'a [VolumeSnapshotClass],
    driver: &str,
) -> Result<&'a VolumeSnapshotClass, String> {
    let defaults: Vec<&VolumeSnapshotClass> =
        classes.iter().filter(|c| c.is_default() && c.spec.driver == driver).collect();
    match defaults.as_slice() {
        [class] => Ok(class),
        [] => Err(format!(
            "cannot find default snapshot class for driver {driver}: annotate one \
             VolumeSnapshotClass of that driver {IS_DEFAULT_CLASS_ANNOTATION}=\"true\" or name \
             a class in spec.volumeSnapshotClassName"
        )),
        several => {
            let mut names: Vec<String> = several.iter().map(|c| c.name_any()).collect();
            names.sort();
            Err(format!(
                "{} default snapshot classes were found for driver {driver} ({}): keep the \
                 annotation on one of them or name a class in spec.volumeSnapshotClassName",
                several.len(),
                names.join(", ")
            ))
        }
    }
}

/// Creates the embedded driver's class `local-path`, its default, with deletion policy Delete,
/// unless a class of that name exists (a user's edits are kept).
pub async fn ensure_default_class(ctx: &Context) -> Result<(), Error> {
    let classes: Api<VolumeSnapshotClass> = Api::all(ctx.client.clone());
    if classes.get_opt(DEFAULT_CLASS).await?.is_some() {
        return Ok(());
    }
    let mut class = VolumeSnapshotClass::new(
        DEFAULT_CLASS,
        VolumeSnapshotClassFields {
            driver: DRIVER.into(),
            parameters: None,
            deletion_policy: DeletionPolicy::Delete,
        },
    );
    class.metadata = ObjectMeta {
        annotations: Some(BTreeMap::from([(IS_DEFAULT_CLASS_ANNOTATION.into(), "true".into())])),
        ..class.metadata
    };
    object::create_unless_exists(&classes, &class).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, driver: &str, default: Option<&str>) -> VolumeSnapshotClass {
        let mut c = VolumeSnapshotClass::new(
            name,
            VolumeSnapshotClassFields {
                driver: driver.into(),
                parameters: None,
                deletion_policy: DeletionPolicy::Delete,
            },
        );
        if let Some(value) = default {
            c.metadata.annotations =
                Some(BTreeMap::from([(IS_DEFAULT_CLASS_ANNOTATION.into(), value.into())]));
        }
        c
    }

    #[test]
    fn the_default_is_the_one_annotated_class_of_the_volumes_driver() {
        let classes = [
            class("plain", DRIVER, None),
            class("false", DRIVER, Some("false")),
            class("other-driver", "ebs.csi.aws.com", Some("true")),
            class("ours", DRIVER, Some("true")),
        ];
        assert_eq!(choose_default(&classes, DRIVER).unwrap().name_any(), "ours");
        assert_eq!(choose_default(&classes, "ebs.csi.aws.com").unwrap().name_any(), "other-driver");
        let none = choose_default(&classes, "pd.csi.storage.gke.io").unwrap_err();
        assert!(none.starts_with("cannot find default snapshot class"), "{none}");
        assert!(choose_default(&classes[..3], DRIVER).is_err(), "annotated false is no default");
    }

    #[test]
    fn two_defaults_for_one_driver_are_an_error_naming_both() {
        let classes = [class("b", DRIVER, Some("true")), class("a", DRIVER, Some("true"))];
        let error = choose_default(&classes, DRIVER).unwrap_err();
        assert!(error.starts_with("2 default snapshot classes were found"), "{error}");
        assert!(error.contains("(a, b)"), "{error}");
    }
}
