//! Reaching a running server: connection options as PostgreSQL's own tools take them, and the
//! facts a backup records that only the server knows.

use std::process::Command;

use crate::Error;
use crate::tools::{Tools, output};

/// How to connect: what is not given here comes from libpq's environment (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `~/.pgpass`, …), exactly as for `psql`.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Host name, address or socket directory (`-h`).
    pub host: Option<String>,
    /// Port (`-p`).
    pub port: Option<u16>,
    /// User (`-U`).
    pub user: Option<String>,
    /// Database for SQL queries (`-d`); default `PGDATABASE`, else `postgres`.
    pub dbname: Option<String>,
    /// Password, given to the programs as `PGPASSWORD` (never on a command line, where other
    /// users could read it); else libpq's own sources.
    pub password: Option<String>,
}

impl Connection {
    /// `-h/-p/-U` for a PostgreSQL program, and never a password prompt (`-w`): a password
    /// comes from `PGPASSWORD` or `~/.pgpass`, so a scheduled run cannot hang on a prompt.
    pub fn apply(&self, cmd: &mut Command) {
        if let Some(h) = &self.host {
            cmd.arg("-h").arg(h);
        }
        if let Some(p) = self.port {
            cmd.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.arg("-U").arg(u);
        }
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        cmd.arg("-w");
    }

    /// Where this points, for messages and the snapshot's host (`host:port`, with libpq's
    /// defaults where nothing is given).
    pub fn describe(&self) -> String {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = self.host.clone().or_else(|| env("PGHOST")).unwrap_or_else(|| "local".into());
        let port = self.port.map(|p| p.to_string()).or_else(|| env("PGPORT"));
        match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// Runs one SQL statement with psql; the rows, fields separated by `|`.
    ///
    /// # Errors
    /// psql cannot be found or run, or the statement fails.
    pub fn query(&self, tools: &Tools, sql: &str) -> Result<Vec<Vec<String>>, Error> {
        let mut cmd = tools.command("psql")?;
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "|"]);
        self.apply(&mut cmd);
        let db = self.dbname.clone().or_else(|| {
            std::env::var("PGDATABASE")
                .ok()
                .filter(|v| !v.is_empty())
                .is_none()
                .then(|| "postgres".into())
        });
        if let Some(db) = db {
            cmd.arg("-d").arg(db);
        }
        cmd.arg("-c").arg(sql);
        let out = output("psql", &mut cmd)?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect())
    }

    /// The server's version, page and segment sizes, role and clock.
    ///
    /// # Errors
    /// The query fails or answers something unexpected.
    pub fn info(&self, tools: &Tools) -> Result<ServerInfo, Error> {
        // Settings every role may read: a user with only REPLICATION can back up.
        let rows = self.query(
            tools,
            "SELECT current_setting('server_version_num'), current_setting('server_version'), \
             current_setting('block_size'), \
             (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
             pg_is_in_recovery(), \
             to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )?;
        let row = rows.first().filter(|r| r.len() == 6).ok_or_else(|| Error::Tool {
            program: "psql".into(),
            message: format!("unexpected answer to the server query: {rows:?}"),
        })?;
        let num = |i: usize, what: &str| {
            row[i].trim().parse::<u64>().map_err(|_| Error::Tool {
                program: "psql".into(),
                message: format!("{what} {:?} is not a number", row[i]),
            })
        };
        Ok(ServerInfo {
            version_num: u32::try_from(num(0, "server_version_num")?).unwrap_or(0),
            version: row[1].split_whitespace().next().unwrap_or_default().to_string(),
            block_size: num(2, "block_size")?,
            wal_segment_size: num(3, "wal_segment_size")?,
            in_recovery: row[4].trim() == "t",
            now: row[5].trim().parse().map_err(|_| Error::Tool {
                program: "psql".into(),
                message: format!("server time {:?} does not parse", row[5]),
            })?,
        })
    }

    /// The server's clock (UTC).
    ///
    /// # Errors
    /// The query fails.
    pub fn now(&self, tools: &Tools) -> Result<jiff::Timestamp, Error> {
        let rows = self.query(
            tools,
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )?;
        rows.first().and_then(|r| r.first()).and_then(|t| t.trim().parse().ok()).ok_or_else(|| {
            Error::Tool {
                program: "psql".into(),
                message: format!("unexpected answer to now(): {rows:?}"),
            }
        })
    }
}

/// What the server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `server_version_num` (150018).
    pub version_num: u32,
    /// `server_version` without the distribution's suffix (`15.18`).
    pub version: String,
    /// Page size in bytes (`block_size`, 8192 unless built otherwise).
    pub block_size: u64,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// Whether it is a standby.
    pub in_recovery: bool,
    /// Its clock at the query.
    pub now: jiff::Timestamp,
}
