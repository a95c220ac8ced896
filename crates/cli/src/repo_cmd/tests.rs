//! The repo CLI end to end through its argument parser, against a real local repository.

use std::path::Path;

use clap::Parser;

use super::{RepoArgs, execute};

#[derive(Parser)]
struct Harness {
    #[command(flatten)]
    args: RepoArgs,
}

fn run(repo: &Path, pw: &Path, rest: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["holdfast-repo", "--quiet", "--repo", repo.to_str().unwrap()];
    argv.extend(["--password-file", pw.to_str().unwrap()]);
    argv.extend(rest);
    execute(Harness::try_parse_from(argv)?.args)
}

#[test]
fn init_backup_restore_check_forget_prune_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, pw) = (tmp.path().join("repo"), tmp.path().join("pw"));
    std::fs::write(&pw, "s3cret\n").unwrap();
    let src = tmp.path().join("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/file.txt"), "hello from the cli\n".repeat(1000)).unwrap();

    run(&repo, &pw, &["init", "--pack-size-mib", "4", "--chunk-avg-kib", "64"]).unwrap();
    let err = run(&repo, &pw, &["init"]).unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    run(&repo, &pw, &["backup", src.to_str().unwrap(), "--tag", "first"]).unwrap();
    std::fs::write(src.join("new.txt"), "second").unwrap();
    run(&repo, &pw, &["--json", "backup", src.to_str().unwrap()]).unwrap();
    run(&repo, &pw, &["snapshots"]).unwrap();
    run(&repo, &pw, &["--json", "ls", "latest", "/data/sub"]).unwrap();
    run(&repo, &pw, &["cat", "config"]).unwrap();
    run(&repo, &pw, &["stats"]).unwrap();

    let target = tmp.path().join("out");
    run(&repo, &pw, &["restore", "latest", "--target", target.to_str().unwrap()]).unwrap();
    assert_eq!(
        std::fs::read(target.join("data/sub/file.txt")).unwrap(),
        std::fs::read(src.join("sub/file.txt")).unwrap()
    );
    assert_eq!(std::fs::read_to_string(target.join("data/new.txt")).unwrap(), "second");
    run(&repo, &pw, &["check", "--read-data"]).unwrap();

    run(&repo, &pw, &["forget", "--keep-last", "1"]).unwrap();
    run(&repo, &pw, &["prune", "--safety-delay", "0s"]).unwrap();
    run(&repo, &pw, &["prune", "--safety-delay", "0s"]).unwrap();
    run(&repo, &pw, &["check", "--read-data"]).unwrap();

    let pw2 = tmp.path().join("pw2");
    std::fs::write(&pw2, "other").unwrap();
    run(&repo, &pw, &["key", "add", "--new-password-file", pw2.to_str().unwrap()]).unwrap();
    run(&repo, &pw2, &["key", "list"]).unwrap();
    let pw3 = tmp.path().join("pw3");
    std::fs::write(&pw3, "third").unwrap();
    run(&repo, &pw2, &["key", "passwd", "--new-password-file", pw3.to_str().unwrap()]).unwrap();
    let err = run(&repo, &pw2, &["snapshots"]).unwrap_err();
    assert!(format!("{err:#}").contains("wrong password"), "{err:#}");
    run(&repo, &pw3, &["snapshots"]).unwrap();
    run(&repo, &pw, &["snapshots"]).unwrap();
}

#[test]
fn errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    let err = run(&tmp.path().join("nothing"), &pw, &["snapshots"]).unwrap_err();
    assert!(format!("{err:#}").contains("no repository at"), "{err:#}");
    assert!(!tmp.path().join("nothing").exists(), "a failed open must not create the directory");
    std::fs::create_dir_all(tmp.path().join("r")).unwrap();
    let err =
        run(&tmp.path().join("r"), &tmp.path().join("missing-pw"), &["snapshots"]).unwrap_err();
    assert!(format!("{err:#}").contains("password file"), "{err:#}");
    let err = execute(Harness::try_parse_from(["x", "snapshots"]).unwrap().args).unwrap_err();
    assert!(format!("{err:#}").contains("--repo"), "{err:#}");
}
