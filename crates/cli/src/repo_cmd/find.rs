//! `repo find`: which snapshots hold entries matching a pattern (or a blob or tree id).

use std::io::Write as _;

use clap::Args;
use holdfast_repository::Error;
use holdfast_repository::find::{self, FindQuery};

use super::RepoArgs;
use super::backup::parse_time;
use super::filter::FilterArgs;

#[derive(Args, Debug)]
pub(super) struct FindCmd {
    /// Patterns on entry paths (`*.txt` at any depth, `/src/**/*.rs` anchored); with --blob or
    /// --tree, ids (or prefixes) instead.
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Only these snapshots (repeatable; default: all that pass the filters).
    #[arg(long = "snapshot", short = 's')]
    snapshots: Vec<String>,
    /// Only entries modified at or before this time (`2026-12-06 10:00:00`, local).
    #[arg(long, short = 'N', value_parser = parse_time)]
    newest: Option<jiff::Timestamp>,
    /// Only entries modified at or after this time.
    #[arg(long, short = 'O', value_parser = parse_time)]
    oldest: Option<jiff::Timestamp>,
    /// Ignore case in patterns.
    #[arg(long, short = 'i')]
    ignore_case: bool,
    /// The arguments are data blob ids: find the files holding them.
    #[arg(long)]
    blob: bool,
    /// The arguments are tree ids: find the directories they describe.
    #[arg(long, conflicts_with = "blob")]
    tree: bool,
    /// Mode, owner, group, size and time too, as `ls --long`.
    #[arg(long, short = 'l')]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

impl FindCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let mut query =
            FindQuery { newest: self.newest, oldest: self.oldest, ..Default::default() };
        if self.blob {
            query.blobs.clone_from(&self.patterns);
        } else if self.tree {
            query.trees.clone_from(&self.patterns);
        } else {
            for p in &self.patterns {
                query.patterns.add(p, self.ignore_case)?;
            }
        }
        let repo = args.open()?;
        let snaps = repo.select_snapshots(&self.snapshots, &self.filter.filter())?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let write_err = |e: std::io::Error| Error::io("write", "<stdout>", e);
        let mut first = true;
        if args.json {
            out.write_all(b"[").map_err(write_err)?;
        }
        find::find(&repo, &snaps, &query, &mut |m| {
            let sep = if first {
                ""
            } else if args.json {
                ","
            } else {
                "\n"
            };
            first = false;
            out.write_all(sep.as_bytes()).map_err(write_err)?;
            if args.json {
                let v = serde_json::json!({
                    "matches": m.matches,
                    "hits": m.matches.len(),
                    "snapshot": m.snapshot.to_hex(),
                });
                serde_json::to_writer(&mut out, &v).map_err(|e| Error::Invalid(e.to_string()))?;
                return Ok(());
            }
            let time = m.time.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S");
            writeln!(out, "Found matching entries in snapshot {} from {time}", m.snapshot.short())
                .map_err(write_err)?;
            for e in &m.matches {
                if self.long {
                    writeln!(out, "{}", e.long_line())
                } else {
                    writeln!(out, "{}", e.path)
                }
                .map_err(write_err)?;
            }
            Ok(())
        })?;
        if args.json {
            out.write_all(b"]\n").map_err(write_err)?;
        }
        out.flush()?;
        Ok(())
    }
}
