//! A quick throughput check of the data path (not a test; numbers depend on the machine):
//!
//! ```sh
//! cargo run --release -p holdfast-repository --example throughput -- 1024 /var/tmp/holdfast-bench
//! ```
//!
//! Writes N MiB of files (half incompressible, half text-like), then times a first backup, a
//! second backup without a parent (all dedup), a restore, and `check --read-data`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use holdfast_repository::backend::object::ObjectStoreBackend;
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{InitOptions, Repository};

fn fill(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            out.extend_from_slice(format!("row {} value {}\n", x % 100_000, x % 977).as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let base = PathBuf::from(
        args.get(2).cloned().unwrap_or_else(|| "/var/tmp/holdfast-throughput".into()),
    );
    let _ = std::fs::remove_dir_all(&base);
    let src = base.join("src");
    std::fs::create_dir_all(&src)?;
    let file_mib = 64;
    for i in 0..mib.div_ceil(file_mib) {
        std::fs::write(
            src.join(format!("f{i:04}")),
            fill(i as u64 + 1, file_mib << 20, i % 2 == 1),
        )?;
    }
    let total = (mib.div_ceil(file_mib) * file_mib) as f64;
    let backend = Arc::new(ObjectStoreBackend::local(&base.join("repo"))?);
    let repo = Repository::init(backend, b"bench", &InitOptions::default())?;
    let rate = |what: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("{what:<28} {s:>7.2} s  {:>8.1} MiB/s", total / s);
    };
    let t = Instant::now();
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new())?;
    rate("backup (new data)", t);
    println!("  stored {} MiB of {} MiB", r.snapshot.summary.data_added_packed >> 20, total);
    let t = Instant::now();
    let opts = BackupOptions { parent: ParentChoice::None, ..BackupOptions::new() };
    backup::backup_paths(&repo, std::slice::from_ref(&src), &opts)?;
    rate("backup (all dedup, no parent)", t);
    let t = Instant::now();
    backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new())?;
    rate("backup (parent, unchanged)", t);
    let t = Instant::now();
    restore::restore(&repo, &r.snapshot.tree, &base.join("restore"), &RestoreOptions::default())?;
    rate("restore", t);
    let t = Instant::now();
    check::check(&repo, &CheckOptions { read_data: true, ..Default::default() })?.into_result()?;
    rate("check --read-data", t);
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
