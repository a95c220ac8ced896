//! `repo init`: create a new repository.

use anyhow::bail;
use clap::Args;
use holdfast_repository::config::ChunkerParams;
use holdfast_repository::location::Location;
use holdfast_repository::{InitOptions, Repository};

use super::{RepoArgs, new_password, password, print_json};

#[derive(Args, Debug)]
pub(super) struct InitCmd {
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 32)]
    pack_size_mib: u32,
    /// Average chunk size in KiB (min is half, max eight times).
    #[arg(long, default_value_t = 1024)]
    chunk_avg_kib: u32,
}

impl InitCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        // The only command that may create the directory, or the bucket.
        let location = args.location()?;
        if location.create_bucket()? == Some(true)
            && !args.json
            && let Location::S3(o) = &location
        {
            eprintln!("created bucket {}", o.bucket);
        }
        let b = location.open()?;
        let pw = if args.password_file.is_some() || args.datasafed_config.is_some() {
            password(args)?
        } else {
            match std::env::var("HOLDFAST_PASSWORD") {
                Ok(p) => p,
                Err(_) => new_password(&None)?,
            }
        };
        if pw.is_empty() {
            bail!("an empty password is not allowed");
        }
        let avg = self.chunk_avg_kib * 1024;
        let opts = InitOptions {
            pack_size: self.pack_size_mib.saturating_mul(1024 * 1024),
            chunker: ChunkerParams {
                min_size: avg / 2,
                avg_size: avg,
                max_size: avg.saturating_mul(8),
                ..Default::default()
            },
            ..Default::default()
        };
        let repo = Repository::init(b, pw.as_bytes(), &opts)?;
        if args.json {
            print_json(
                &serde_json::json!({"id": repo.config().id, "location": repo.backend().location()}),
            )?;
        } else {
            println!(
                "created repository {} at {}",
                &repo.config().id[..10],
                repo.backend().location()
            );
        }
        Ok(())
    }
}
