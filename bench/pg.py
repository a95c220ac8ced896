#!/usr/bin/env python3
"""PostgreSQL benchmark: `holdfast pg` against pgBackRest (Debian's package) on one database.

    bench/pg.py [--work DIR] [--scale 100] [--days 7] [--restores 3] [--holdfast BIN]

Run as root (the page cache is dropped before every step; PostgreSQL, holdfast and pgBackRest run
as the `postgres` account). It makes a private cluster with `initdb` on a free port, loads
`pgbench -i -s SCALE`, and archives WAL into both tools (`archive_command` runs both pushes).
Then, for each simulated day, it rewrites 2% of the accounts table's pages (one row updated on
every 50th page, a different 2% each day), checkpoints, and takes:

  - a holdfast base backup (`holdfast pg backup`: a full backup every day, deduplicated),
  - a pgBackRest full backup into repo1 (zstd, process-max = cores),
  - a pgBackRest backup into repo2: full on day one, incremental after (zstd, process-max = cores).

After the last day it restores the newest backup with each tool `--restores` times. It reports
the time of every step (range over days 2..N for backups, over runs for restores) and the
storage each tool's backups take after every day (WAL archives reported apart), and writes
WORK/results.json and WORK/results.md.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

USER = "postgres"


def sh(args, user=USER, env=None, check=True, capture=False):
    cmd = ["runuser", "-u", user, "--"] + args if user else args
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(cmd, env=e, check=False, text=True,
                       stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}\n{r.stderr if capture else ''}")
    return r


def wait_for_archiver(data, timeout=1800):
    status = os.path.join(data, "pg_wal", "archive_status")
    deadline = time.monotonic() + timeout
    while any(n.endswith(".ready") for n in os.listdir(status)):
        if time.monotonic() > deadline:
            sys.exit(f"the archiver did not catch up within {timeout} s")
        time.sleep(0.5)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(args, env=None, data=None):
    if data:
        # The segment the previous backup switched to is archived by both tools: not while
        # the next one is timed.
        wait_for_archiver(data)
    drop_caches()
    t = time.monotonic()
    sh(args, env=env)
    return time.monotonic() - t


def du(path, exclude=()):
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in exclude]
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bindir():
    versions = sorted((int(v), v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit())
    return f"/usr/lib/postgresql/{versions[-1][1]}/bin"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("HOLDFAST_BENCH_DIR", "/var/tmp/holdfast-pg-bench"))
    ap.add_argument("--scale", type=int, default=100)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--restores", type=int, default=3)
    ap.add_argument("--holdfast", required=True, help="the release holdfast binary")
    ap.add_argument("--pages-per-chunk", default="1",
                    help="holdfast's --pages-per-chunk values to compare, comma-separated (one repository each)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the page cache is dropped before every step")
    cores = os.cpu_count() or 2
    work = a.work
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    shutil.chown(work, USER, USER)
    tools = os.path.join(work, "tools")
    os.makedirs(tools)
    hf = os.path.join(tools, "holdfast")
    shutil.copy(a.holdfast, hf)
    pw = os.path.join(tools, "pw")
    with open(pw, "w") as f:
        f.write("bench\n")
    for p in (tools, hf, pw):
        shutil.chown(p, USER, USER)
    pg_bin = bindir()
    data, hrepo, brepo1, brepo2, sock = (os.path.join(work, n) for n in ("data", "hf-repo", "pgbr-full", "pgbr-incr", "run"))
    for d in (sock, brepo1, brepo2, os.path.join(work, "pgbr-log")):
        os.makedirs(d)
        shutil.chown(d, USER, USER)
    port = free_port()
    conf = os.path.join(tools, "pgbackrest.conf")
    with open(conf, "w") as f:
        f.write(f"""[global]
repo1-path={brepo1}
repo1-retention-full=9999
repo2-path={brepo2}
repo2-retention-full=9999
compress-type=zst
process-max={cores}
start-fast=y
log-level-console=warn
log-path={work}/pgbr-log
lock-path={work}/pgbr-lock
spool-path={work}/pgbr-spool

[bench]
pg1-path={data}
pg1-port={port}
pg1-socket-path={sock}
""")
    shutil.chown(conf, USER, USER)
    ks = [int(k) for k in a.pages_per_chunk.split(",")]
    hrepos = {k: os.path.join(work, f"hf-repo-{k}") for k in ks}
    hfopts = lambda k: ["--repo", hrepos[k], "--password-file", pw, "--quiet"]
    hrepo, hfrepo = hrepos[ks[0]], hfopts(ks[0])
    pgbr = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
    sh([f"{pg_bin}/initdb", "-D", data, "-U", USER, "--auth=trust", "--no-sync"], capture=True)
    archive = f"{hf} pg wal-push {' '.join(hfrepo)} %p && pgbackrest --config={conf} --stanza=bench archive-push %p"
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"""
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock}'
archive_mode = on
archive_command = '{archive}'
max_wal_size = 4GB
checkpoint_timeout = 30min
shared_buffers = 512MB
""")
    for k in ks:
        sh([hf, "repo", "init"] + hfopts(k), capture=True)
    sh([f"{pg_bin}/pg_ctl", "-D", data, "-l", os.path.join(work, "pg.log"), "-w", "start"], capture=True)
    try:
        conn = ["-h", "127.0.0.1", "-p", str(port), "-U", USER]
        psql = lambda sql: sh(["psql", "-X", "-A", "-t", "-q"] + conn + ["-d", "postgres", "-c", sql], capture=True).stdout.strip()
        t = time.monotonic()
        sh(["pgbench", "-i", "-s", str(a.scale), "-q"] + conn + ["postgres"], capture=True)
        load = time.monotonic() - t
        db_bytes = int(psql("SELECT pg_database_size('postgres')"))
        sh(pgbr + ["stanza-create"], capture=True)
        days = []
        for day in range(1, a.days + 1):
            if day > 1:
                # One row on every 50th page, a different 2% of the pages each day.
                psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN ("
                     "SELECT min(aid) FROM pgbench_accounts GROUP BY (ctid::text::point)[0]::bigint "
                     f"HAVING (ctid::text::point)[0]::bigint % 50 = {day % 50})")
            psql("CHECKPOINT")
            # Let the archiver finish the day's WAL first (after the load, about 80
            # segments, each pushed into both tools): backups timed while it still runs measure
            # the contention for two cores, not the tools.
            wait_for_archiver(data)
            row = {"day": day}
            for k in ks:
                row[f"holdfast_{k}_s"] = timed([hf, "pg"] + hfopts(k) + ["backup", "--pages-per-chunk", str(k)] + conn, data=data)
                row[f"holdfast_{k}_bytes"] = du(hrepos[k], exclude=(os.path.join(hrepos[k], "archive"),))
            row["holdfast_s"], row["holdfast_bytes"] = row[f"holdfast_{ks[0]}_s"], row[f"holdfast_{ks[0]}_bytes"]
            row["pgbackrest_full_s"] = timed(pgbr + ["--repo=1", "--type=full", "backup"], data=data)
            row["pgbackrest_incr_s"] = timed(pgbr + ["--repo=2", "--type=" + ("full" if day == 1 else "incr"), "backup"], data=data)
            row["pgbackrest_full_bytes"] = du(os.path.join(brepo1, "backup"))
            row["pgbackrest_incr_bytes"] = du(os.path.join(brepo2, "backup"))
            row["holdfast_wal_bytes"] = du(os.path.join(hrepo, "archive"))
            row["pgbackrest_wal_bytes"] = du(os.path.join(brepo1, "archive"))
            days.append(row)
            print(json.dumps(row), flush=True)
        restores = {"holdfast": [], "pgbackrest_full": [], "pgbackrest_incr": []}
        target = os.path.join(work, "restored")
        for _ in range(a.restores):
            for tool, args in (
                ("holdfast", [hf, "pg", "restore"] + hfrepo + ["--json", "--pgdata", target]),
                ("pgbackrest_full", pgbr + ["--repo=1", f"--pg1-path={target}", "restore"]),
                ("pgbackrest_incr", pgbr + ["--repo=2", f"--pg1-path={target}", "restore"]),
            ):
                for p in (target, target + ".restore-wal"):
                    shutil.rmtree(p, ignore_errors=True)
                os.makedirs(target, mode=0o700)
                shutil.chown(target, USER, USER)
                restores[tool].append(timed(args))
                print(tool, "restore", round(restores[tool][-1], 2), flush=True)
    finally:
        sh([f"{pg_bin}/pg_ctl", "-D", data, "-m", "fast", "stop"], check=False, capture=True)
    version = sh(["pgbackrest", "version"], capture=True).stdout.strip()
    result = {"scale": a.scale, "db_bytes": db_bytes, "load_s": load, "cores": cores,
              "pgbackrest": version, "days": days, "restores": restores,
              "command": "bench/pg.py " + " ".join(sys.argv[1:])}
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    mib = lambda b: f"{b / 2**20:,.0f}"
    rng = lambda xs: f"{min(xs):.1f}–{max(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"
    later = days[1:] or days
    lines = [
        f"pgbench -i -s {a.scale}: database {mib(db_bytes)} MiB; {cores} cores; {version}",
        "",
        "| | holdfast | pgBackRest full | pgBackRest incr |",
        "|---|---|---|---|",
        f"| day-1 backup (s) | {days[0]['holdfast_s']:.1f} | {days[0]['pgbackrest_full_s']:.1f} | {days[0]['pgbackrest_incr_s']:.1f} |",
        f"| days 2–{len(days)} backups (s) | {rng([d['holdfast_s'] for d in later])} | {rng([d['pgbackrest_full_s'] for d in later])} | {rng([d['pgbackrest_incr_s'] for d in later])} |",
        f"| restore (s, {a.restores} runs) | {rng(restores['holdfast'])} | {rng(restores['pgbackrest_full'])} | {rng(restores['pgbackrest_incr'])} |",
        f"| backups after day 1 (MiB) | {mib(days[0]['holdfast_bytes'])} | {mib(days[0]['pgbackrest_full_bytes'])} | {mib(days[0]['pgbackrest_incr_bytes'])} |",
        f"| backups after day {len(days)} (MiB) | {mib(days[-1]['holdfast_bytes'])} | {mib(days[-1]['pgbackrest_full_bytes'])} | {mib(days[-1]['pgbackrest_incr_bytes'])} |",
    ] + [
        f"| holdfast --pages-per-chunk {k}: backups (s), storage after day 1 / day {len(days)} (MiB) | "
        f"{rng([d[f'holdfast_{k}_s'] for d in days])} s, {mib(days[0][f'holdfast_{k}_bytes'])} / {mib(days[-1][f'holdfast_{k}_bytes'])} | | |"
        for k in ks
    ] + [
        f"| WAL archive after day {len(days)} (MiB) | {mib(days[-1]['holdfast_wal_bytes'])} | {mib(days[-1]['pgbackrest_wal_bytes'])} | (shared with full) |",
    ]
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
