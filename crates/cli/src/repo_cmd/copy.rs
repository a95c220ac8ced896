//! `repo copy`: snapshots from another repository into this one, as `restic copy` does.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use holdfast_repository::Repository;
use holdfast_repository::copy;
use holdfast_repository::location::Location;

use super::filter::FilterArgs;
use super::{RepoArgs, human, print_json, secret};

#[derive(Args, Debug)]
pub(super) struct CopyCmd {
    /// Snapshots to copy (ids, prefixes or `latest`; default: all that pass the filters).
    snapshots: Vec<String>,
    /// The repository to copy from: a directory or `s3://bucket/prefix`.
    #[arg(long, env = "HOLDFAST_FROM_REPOSITORY")]
    from_repo: String,
    /// File whose first line is the source's password (else HOLDFAST_FROM_PASSWORD, else a
    /// prompt).
    #[arg(long, env = "HOLDFAST_FROM_PASSWORD_FILE")]
    from_password_file: Option<PathBuf>,
    /// S3 endpoint URL of the source (else AWS_ENDPOINT_URL).
    #[arg(long)]
    from_s3_endpoint: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

impl CopyCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let mut location = Location::parse(&self.from_repo)?;
        if let Location::S3(o) = &mut location {
            o.endpoint.clone_from(&self.from_s3_endpoint);
        }
        let password = secret(
            self.from_password_file.as_deref(),
            "HOLDFAST_FROM_PASSWORD",
            "source repository password: ",
            "no source password: use --from-password-file, HOLDFAST_FROM_PASSWORD or a terminal",
        )?;
        let src = Repository::open(location.open_existing()?, password.as_bytes())
            .with_context(|| format!("opening the source repository {}", self.from_repo))?;
        src.set_lock_wait(args.retry_lock.into());
        let dst = args.open()?;
        let selected = src.select_snapshots(&self.snapshots, &self.filter.filter())?;
        let report = copy::copy(&src, &dst, &selected)?;
        if args.json {
            return print_json(&report);
        }
        for c in &report.snapshots {
            let entry = selected.iter().find(|e| e.id == c.source);
            let what = entry.map_or_else(String::new, |e| {
                format!(" of {} at {}", e.snapshot.paths.join(", "), e.snapshot.time)
            });
            if c.already_copied {
                println!(
                    "snapshot {}{what} was already copied as {}",
                    c.source.short(),
                    c.copy.short()
                );
            } else {
                println!("snapshot {}{what} copied as {}", c.source.short(), c.copy.short());
            }
        }
        let new = report.snapshots.iter().filter(|c| !c.already_copied).count();
        println!(
            "copied {new} of {} snapshots; added {} blobs, {}",
            report.snapshots.len(),
            report.blobs_added,
            human(report.bytes_added)
        );
        Ok(())
    }
}
