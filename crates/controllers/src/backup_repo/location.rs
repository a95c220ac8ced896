//! Where a BackupRepo's holdfast repository lives, read from its rendered datasafed
//! configuration by the repository's `location` module (the rules of `holdfast datasafed`,
//! docs/datasafed.md §2), and the pre-check: a real write, read and delete at that location, then
//! opening (or creating) the repository with the BackupRepo's key.

use holdfast_repository::location::DatasafedConfig;
pub use holdfast_repository::location::Location as RepositoryLocation;

use crate::{Error, repository_access};

/// The repository location named by the `[storage]` section of a rendered datasafed config.
///
/// # Errors
/// [`Error::Invalid`] naming what is missing or unsupported.
pub fn repository_location(rendered_conf: &str) -> Result<RepositoryLocation, Error> {
    let invalid = |e: holdfast_repository::location::LocationError| Error::Invalid(e.to_string());
    let location =
        DatasafedConfig::parse("the rendered datasafed config", rendered_conf).map_err(invalid)?;
    let location = location.location().map_err(invalid)?;
    // Jobs and the server run in different directories: only an absolute path means the same
    // place to both.
    if let RepositoryLocation::Local(root) = &location
        && !root.is_absolute()
    {
        return Err(Error::Invalid(format!(
            "storage root {} must be an absolute path",
            root.display()
        )));
    }
    Ok(location)
}

/// The pre-check: writes, reads back and deletes a probe object beside the repository (so a
/// failure never leaves anything inside it), then opens the repository with `password`, creating
/// it when the location holds none. Blocking: call from `spawn_blocking`.
///
/// Returns whether the repository was created. The error is one line naming the cause.
pub fn precheck_repository(location: &RepositoryLocation, password: &str) -> Result<bool, String> {
    repository_access::probe_storage(location)?;
    let wrong_key = "it belongs to another BackupRepo, or its key Secret was recreated";
    repository_access::open_or_create(location, password, true, wrong_key)
        .map(|(_, created)| created)
}

#[cfg(test)]
mod tests {
    use holdfast_repository::location::S3Options;

    use super::*;

    #[test]
    fn reads_local_and_s3_locations() {
        assert_eq!(
            repository_location("[storage]\ntype = local\nroot = /srv/b\n").unwrap(),
            RepositoryLocation::Local("/srv/b".into())
        );
        let s3 = repository_location(
            "[storage]\ntype = s3\nroot = bucket/a/b/\nendpoint = minio:9000 # inline\naccess_key_id = AK\nsecret_access_key.need_obscure = \"x#y\"\n[holdfast]\npassword = p\n",
        )
        .unwrap();
        assert_eq!(
            s3,
            RepositoryLocation::S3(S3Options {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: Some("https://minio:9000".into()),
                region: None,
                path_style: None,
                access_key_id: Some("AK".into()),
                secret_access_key: Some("x#y".into()),
            })
        );
        assert_eq!(s3.to_string(), "s3://bucket/a/b at https://minio:9000");
    }

    #[test]
    fn refuses_what_it_cannot_reach() {
        let e = |c: &str| repository_location(c).unwrap_err().to_string();
        assert_eq!(
            e("[storage]\ntype = ftp\n"),
            "the rendered datasafed config: storage type \"ftp\" is not supported by holdfast's \
             datasafed (use local or s3)"
        );
        assert_eq!(
            e("[storage]\ntype = local\nroot = rel/dir\n"),
            "storage root rel/dir must be an absolute path"
        );
        assert_eq!(
            e("[storage]\ntype = local\nroot = \n"),
            "the rendered datasafed config: storage type local needs a root directory (storage.root)"
        );
        assert_eq!(
            e("x\n"),
            "the rendered datasafed config: line 1: expected `key = value`, found \"x\""
        );
    }

    #[test]
    fn precheck_creates_the_repository_once_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let loc = RepositoryLocation::Local(dir.path().join("repo"));
        assert_eq!(precheck_repository(&loc, "k1"), Ok(true));
        assert!(dir.path().join("repo/config").is_file());
        assert_eq!(precheck_repository(&loc, "k1"), Ok(false));
        let err = precheck_repository(&loc, "k2").unwrap_err();
        assert!(err.contains("does not open it"), "{err}");
        // No probe directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("repo"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("precheck-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn precheck_reports_an_unwritable_location() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err =
            precheck_repository(&RepositoryLocation::Local(file.join("repo")), "k").unwrap_err();
        assert!(err.contains("cannot open storage"), "{err}");
    }
}
