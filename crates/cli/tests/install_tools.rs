//! `holdfast install-tools DIR`, what a cluster-mode Job's init container runs: the binary lands in
//! DIR as `holdfast` and `datasafed`, both work from there, and a second run (a restarted init
//! container) replaces them whole.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

#[test]
fn the_binary_installs_itself_as_holdfast_and_datasafed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("shared/bin");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("install-tools")
            .arg(&bin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let installed = bin.join("holdfast");
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_holdfast")).unwrap(),
        "an exact copy"
    );
    assert_eq!(std::fs::read_link(bin.join("datasafed")).unwrap().to_str(), Some("holdfast"));
    assert!(!bin.join(".holdfast.partial").exists(), "no partial copy left");

    let v = Command::new(bin.join("datasafed")).arg("version").output().unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("datasafed: "), "acts as datasafed");
    let v = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("holdfast "));
}

#[test]
fn a_directory_that_cannot_be_made_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("install-tools")
        .arg(file.join("bin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("holdfast install-tools: cannot create "), "{err}");
}
