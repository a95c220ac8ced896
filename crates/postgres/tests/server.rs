//! Against a real PostgreSQL server: the WAL reader on segments the server wrote, and base
//! backups whose second day stores only the pages that changed.

use std::collections::HashSet;

use holdfast_postgres::base_backup::{self, BaseBackup};
use holdfast_postgres::server::Connection;
use holdfast_postgres::wal_reader::summarize;
use holdfast_postgres::{Lsn, control};
use holdfast_repository::location::Location;
use holdfast_repository::{Id, InitOptions, Repository};
use holdfast_testkit::Postgres;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn connection(pg: &Postgres) -> Connection {
    Connection {
        host: Some("127.0.0.1".into()),
        port: Some(pg.port()),
        user: Some("postgres".into()),
        dbname: None,
        password: None,
    }
}

fn timestamp(pg: &Postgres, sql: &str) -> Result<jiff::Timestamp> {
    let text = pg.psql(&format!(
        "SELECT to_char(({sql}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    ))?;
    Ok(text.parse()?)
}

#[test]
fn the_wal_reader_finds_commit_times_and_restore_points_in_real_segments() -> Result<()> {
    let pg = Postgres::start()?;
    pg.psql("CREATE TABLE t (id int)")?;
    let before = timestamp(&pg, "clock_timestamp()")?;
    // Enough rows that records cross pages, then commits and a restore point to find.
    pg.psql("INSERT INTO t SELECT generate_series(1, 20000)")?;
    pg.psql("INSERT INTO t VALUES (0)")?;
    let point = pg.psql("SELECT pg_create_restore_point('checkpoint-before-upgrade')")?;
    pg.psql("INSERT INTO t VALUES (-1)")?;
    let after = timestamp(&pg, "clock_timestamp()")?;
    let name = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    pg.psql("SELECT pg_switch_wal()")?;
    let data = std::fs::read(pg.data_dir().join("pg_wal").join(&name))?;
    let s = summarize(&data)?;
    let sysid: u64 = pg.psql("SELECT system_identifier FROM pg_control_system()")?.parse()?;
    assert_eq!(s.system_identifier, sysid);
    assert_eq!(s.system_identifier, control::system_identifier_of(pg.data_dir())?);
    assert_eq!(s.timeline, 1);
    let first = s.first_xact.ok_or("no transaction found")?;
    let last = s.last_xact.ok_or("no transaction found")?;
    assert!(before <= last && last <= after, "{before} {last} {after}");
    assert!(first <= last);
    let rp = s.restore_points.iter().find(|p| p.name == "checkpoint-before-upgrade");
    let rp = rp.ok_or_else(|| format!("no restore point in {s:?}"))?;
    let created: Lsn = point.parse()?;
    // The function returns where its record ends, which is where recovery to it stops.
    assert_eq!(rp.lsn, created);
    assert!(before <= rp.time && rp.time <= after);
    assert!(s.end > rp.lsn);
    // A segment the server has only begun (the one after the switch) holds no whole
    // transaction of ours, and a stale tail is never read as records.
    let current = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    let fresh = summarize(&std::fs::read(pg.data_dir().join("pg_wal").join(&current))?)?;
    assert!(fresh.last_xact.is_none_or(|t| t >= last));
    Ok(())
}

/// The pieces of every relation file below `dir` of a base backup's tree.
fn relation_blobs(repo: &Repository, tree: &Id, dir: &str) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    for node in repo.load_tree(tree)?.nodes {
        let path = format!("{dir}{}", node.name_lossy());
        if let Some(sub) = &node.subtree {
            out.extend(relation_blobs(repo, sub, &format!("{path}/"))?);
        } else if base_backup::is_relation_file(&path) {
            out.extend(node.content.iter().copied());
        }
    }
    Ok(out)
}

#[test]
fn a_second_full_backup_stores_only_the_changed_pages() -> Result<()> {
    let pg = Postgres::start()?;
    pg.pgbench(&["-i", "-s", "4", "-q"])?;
    pg.psql("CHECKPOINT")?;
    let dir = tempfile::tempdir()?;
    let location = Location::parse(dir.path().join("repo").to_str().ok_or("path")?)?;
    let opts = InitOptions {
        kdf: holdfast_repository::crypto::KdfParams::insecure_fast(),
        ..Default::default()
    };
    let repo = Repository::init(location.open()?, b"pw", &opts)?;
    // One page per piece, so the count of new pieces is the count of changed pages.
    let backup_opts = base_backup::Options {
        connection: connection(&pg),
        pages_per_chunk: 1,
        ..Default::default()
    };
    let (first, b1): (_, BaseBackup) = base_backup::run(&repo, &backup_opts)?;
    let relation_bytes: u64 = pg
        .psql("SELECT sum(pg_relation_size(oid)) FROM pg_class WHERE relname LIKE 'pgbench%'")?
        .parse()?;
    // Day two: every 50th page of the accounts table gets one row updated.
    pg.psql(
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN \
         (SELECT min(aid) FROM pgbench_accounts GROUP BY (ctid::text::point)[0]::bigint \
          HAVING (ctid::text::point)[0]::bigint % 50 = 0)",
    )?;
    pg.psql("CHECKPOINT")?;
    let (second, b2) = base_backup::run(&repo, &backup_opts)?;
    assert!(b2.start_lsn > b1.finish_lsn);
    assert_eq!(b1.system_identifier, b2.system_identifier);
    assert!(first.snapshot.summary.data_added > relation_bytes, "day one stores everything");
    // Of the relation files' pieces on day two, the share day one did not have: the 2% of
    // pages updated, the pages their new row versions and index entries went to, and the
    // visibility map. Chunks of 1 MiB would have stored nearly all of them again.
    let day1: HashSet<Id> = relation_blobs(&repo, &first.snapshot.tree, "")?.into_iter().collect();
    let day2 = relation_blobs(&repo, &second.snapshot.tree, "")?;
    let new = day2.iter().filter(|id| !day1.contains(id)).count();
    let share = new as f64 / day2.len() as f64;
    assert!(day2.len() as u64 * 8192 >= relation_bytes, "one piece per page");
    assert!((0.01..0.06).contains(&share), "{new} of {} pieces are new ({share})", day2.len());
    Ok(())
}
