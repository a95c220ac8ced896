#!/usr/bin/env python3
"""Runs the backup tools over the data sets of gen.py and reports the numbers (see bench/run.sh).

    bench.py WORKDIR --tools holdfast,restic,borg,rustic [--holdfast BIN] [--rustic BIN] [--runs N]

For each tool and each of N runs (default 5), a fresh repository: backup of big/, backup of
changed/ (deduplicating against big/; both are backed up from one path, WORKDIR/volume/current,
as one volume changed in place, so each tool takes the first as the parent of the second), backup
of small/ and of mixed/, then a restore of each
snapshot. The tables give each figure's range over the runs (min-max) and the ratios both at the
medians and at the worst case for holdfast. Every step runs under `/usr/bin/time -v`
(wall, user+sys CPU, peak RSS); the repository is measured with `du -sb` after each backup.
Each restore is checked against its source by content: a digest over every entry's path, type,
permission bits and content (or link target). Writes WORKDIR/results/results.json and results.md,
prints the table, and exits non-zero when any step failed or any restore differs from its source.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

OPS = [
    ("backup", "big"),
    ("backup", "changed"),
    ("backup", "small"),
    ("backup", "mixed"),
    ("restore", "big"),
    ("restore", "changed"),
    ("restore", "small"),
    ("restore", "mixed"),
]
DATASETS = ("big", "changed", "small", "mixed")


DROP_CACHES = "/proc/sys/vm/drop_caches"


def cold_cache():
    """Writes back and drops the page cache (when permitted), so every step starts cold.

    On this class of machine (a VM whose kernel reclaims cold pages and hands free memory back to
    the host) what is cached depends on timing; dropping it before each step gives every tool the
    same start: sources and repositories read from disk, as a nightly backup reads them.
    Returns whether the cache was dropped."""
    subprocess.run(["sync"], check=True)
    try:
        with open(DROP_CACHES, "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_timed(cmd, env, cwd, log):
    """Runs cmd under /usr/bin/time -v; returns (stdout, wall, (user, sys), peak_kib)."""
    tfile = log + ".time"
    cold_cache()
    with open(log, "ab") as errf:
        errf.write(("\n$ " + " ".join(cmd) + "\n").encode())
        errf.flush()
        p = subprocess.run(
            ["/usr/bin/time", "-v", "-o", tfile] + cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=errf,
        )
    with open(log, "ab") as errf:
        errf.write(p.stdout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (exit %d); see %s" % (" ".join(cmd), p.returncode, log))
    t = open(tfile).read()

    def field(name):
        m = re.search(re.escape(name) + r":\s*(.+)", t)
        if not m:
            raise RuntimeError("no %r in %s" % (name, tfile))
        return m.group(1).strip()

    wall_s = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(x) for x in wall_s.split(":")]
    wall = 0.0
    for x in parts:
        wall = wall * 60 + x
    cpu = (float(field("User time (seconds)")), float(field("System time (seconds)")))
    peak = int(field("Maximum resident set size (kbytes)"))
    return p.stdout.decode(errors="replace"), wall, cpu, peak


def du(path):
    out = subprocess.run(["du", "-sb", path], check=True, stdout=subprocess.PIPE).stdout
    return int(out.split()[0])


class Tree:
    """What a restore must reproduce below a directory (the directory itself excluded): per entry,
    keyed by relative path, its type, permission bits and a BLAKE2b of its content (a regular
    file) or its target (a symlink); plus the regular file count and apparent bytes for the
    report. Times and owners are left out: the tools differ in what they restore there by
    default, and the comparison is of the data."""

    def __init__(self, path):
        self.entries = {}
        self.files = 0
        self.bytes = 0
        top = os.fsencode(path)
        for root, dirs, names in os.walk(top):
            for n in dirs + names:
                full = os.path.join(root, n)
                st = os.lstat(full)
                rel = os.path.relpath(full, top)
                if stat.S_ISLNK(st.st_mode):
                    entry = ("link", 0, hashlib.blake2b(os.readlink(full)).hexdigest())
                elif stat.S_ISREG(st.st_mode):
                    self.files += 1
                    self.bytes += st.st_size
                    entry = ("file", stat.S_IMODE(st.st_mode), file_digest(full))
                elif stat.S_ISDIR(st.st_mode):
                    entry = ("dir", stat.S_IMODE(st.st_mode), "")
                else:
                    entry = ("other", stat.S_IMODE(st.st_mode), "")
                self.entries[rel] = entry

    def digest(self):
        """One BLAKE2b over the sorted entries."""
        h = hashlib.blake2b()
        for rel in sorted(self.entries):
            kind, mode, content = self.entries[rel]
            h.update(b"%s\0%s\0%o\0%s\n" % (rel, kind.encode(), mode, content.encode()))
        return h.hexdigest()

    def differences(self, restored, limit=5):
        """Up to `limit` lines saying how `restored` differs from this tree."""
        out = []
        for rel in sorted(set(self.entries) | set(restored.entries)):
            want, got = self.entries.get(rel), restored.entries.get(rel)
            if want != got:
                out.append("%s: want %s, got %s" % (os.fsdecode(rel), want, got))
                if len(out) == limit:
                    break
        return out


def file_digest(path):
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class Tool:
    name = ""

    def __init__(self, work, pwfile):
        self.work = work
        self.repo = os.path.join(work, "repos", self.name)
        self.pwfile = pwfile
        self.env = dict(os.environ)
        self.snaps = {}

    def init(self):
        raise NotImplementedError

    def backup_cmd(self, src):
        raise NotImplementedError

    def snapshot_id(self, stdout, src):
        raise NotImplementedError

    def restore_cmd(self, snap, target):
        raise NotImplementedError

    def restored_root(self, target, src):
        """Where the restored copy of src ends up below target."""
        return os.path.join(target, src.lstrip("/"))

    def restore_cwd(self, target):
        return None


class Holdfast(Tool):
    name = "holdfast"

    def __init__(self, work, pwfile, binary):
        super().__init__(work, pwfile)
        self.bin = binary
        self.env["HOLDFAST_PASSWORD_FILE"] = pwfile

    def base(self):
        return [self.bin, "repo", "--repo", self.repo, "--quiet"]

    def init(self):
        subprocess.run(self.base() + ["init"], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def backup_cmd(self, src):
        return self.base() + ["--json", "backup", src]

    def snapshot_id(self, stdout, src):
        return json.loads(stdout)["snapshot_id"]

    def restore_cmd(self, snap, target):
        return self.base() + ["restore", snap, "--target", target]

    def restored_root(self, target, src):
        # holdfast names the root entry by the path's last component.
        return os.path.join(target, os.path.basename(src))


class Restic(Tool):
    name = "restic"

    def __init__(self, work, pwfile, binary="restic"):
        super().__init__(work, pwfile)
        self.bin = binary
        self.env["RESTIC_PASSWORD_FILE"] = pwfile
        self.env["RESTIC_CACHE_DIR"] = os.path.join(work, "cache", self.name)

    def base(self):
        return [self.bin, "--repo", self.repo, "--quiet"]

    def init(self):
        subprocess.run(self.base() + ["init"], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def backup_cmd(self, src):
        return self.base() + ["backup", "--json", src]

    def snapshot_id(self, stdout, src):
        for line in stdout.splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if m.get("message_type") == "summary":
                return m["snapshot_id"]
        raise RuntimeError("no snapshot id in restic output")

    def restore_cmd(self, snap, target):
        return self.base() + ["restore", snap, "--target", target]


class Rustic(Tool):
    name = "rustic"

    def __init__(self, work, pwfile, binary):
        super().__init__(work, pwfile)
        self.bin = binary
        self.env["RUSTIC_PASSWORD_FILE"] = pwfile
        self.env["RUSTIC_REPOSITORY"] = self.repo
        self.env["RUSTIC_CACHE_DIR"] = os.path.join(work, "cache", self.name)

    def base(self):
        return [self.bin, "--no-progress"]

    def init(self):
        subprocess.run(self.base() + ["init"], env=self.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def backup_cmd(self, src):
        return self.base() + ["backup", "--json", src]

    def snapshot_id(self, stdout, src):
        start = stdout.find("{")
        return json.loads(stdout[start:])["id"]

    def restore_cmd(self, snap, target):
        return self.base() + ["restore", snap, target]



class Borg(Tool):
    name = "borg"

    def __init__(self, work, pwfile):
        super().__init__(work, pwfile)
        self.env["BORG_PASSCOMMAND"] = "cat " + pwfile
        self.env["BORG_BASE_DIR"] = os.path.join(work, "cache", self.name)
        self.env["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "yes"
        self.env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        self.count = 0

    def init(self):
        # borg makes the mode a required choice; repokey (AES-CTR + HMAC-SHA256) is the
        # documented default choice and uses this CPU's SHA extensions.
        subprocess.run(["borg", "init", "--encryption=repokey", self.repo], env=self.env,
                       check=True, stdout=subprocess.DEVNULL)

    def backup_cmd(self, src):
        self.count += 1
        self.pending = "s%d-%s" % (self.count, os.path.basename(src))
        return ["borg", "create", "%s::%s" % (self.repo, self.pending), src]

    def snapshot_id(self, stdout, src):
        return self.pending

    def restore_cmd(self, snap, target):
        return ["borg", "extract", "%s::%s" % (self.repo, snap)]

    def restore_cwd(self, target):
        return target


def password_file(work):
    """WORK/password, made on first use: every tool's repository password."""
    path = os.path.join(work, "password")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("holdfast-bench-password\n")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--tools", default="holdfast,restic,borg,rustic")
    ap.add_argument("--holdfast", default="holdfast")
    ap.add_argument("--rustic", default="rustic")
    ap.add_argument("--command", default="", help="the command line, recorded in the results")
    ap.add_argument("--runs", type=int, default=5, help="runs of every step per tool")
    a = ap.parse_args()
    work = os.path.abspath(a.workdir)
    data = os.path.join(work, "data")
    pwfile = password_file(work)
    results_dir = os.path.join(work, "results")
    os.makedirs(results_dir, exist_ok=True)
    sources = {s: Tree(os.path.join(data, s)) for s in DATASETS}
    tools = []
    for t in a.tools.split(","):
        if t == "holdfast":
            tools.append(Holdfast(work, pwfile, a.holdfast))
        elif t == "restic":
            tools.append(Restic(work, pwfile))
        elif t == "rustic":
            tools.append(Rustic(work, pwfile, a.rustic))
        elif t == "borg":
            tools.append(Borg(work, pwfile))
        else:
            sys.exit("unknown tool " + t)
    results = {
        "command": a.command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_before": open("/proc/loadavg").read().split()[:3],
        "cold_cache": cold_cache(),
        "datasets": {k: {"files": v.files, "bytes": v.bytes, "digest": v.digest()}
                     for k, v in sources.items()},
        "versions": {},
        "runs_per_tool": a.runs,
        "runs": {},
    }
    for tool in tools:
        log = os.path.join(results_dir, tool.name + ".log")
        if os.path.exists(log):
            os.remove(log)
        runs = {}
        try:
            for n in range(a.runs):
                print("[%s] run %d of %d" % (tool.name, n + 1, a.runs), file=sys.stderr, flush=True)
                shutil.rmtree(tool.repo, ignore_errors=True)
                shutil.rmtree(os.path.join(work, "cache", tool.name), ignore_errors=True)
                os.makedirs(os.path.dirname(tool.repo), exist_ok=True)
                tool.count = 0
                tool.init()
                one = {}
                run_ops(tool, work, data, sources, log, one)
                for key, v in one.items():
                    runs.setdefault(key, []).append(v)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            # Report the failure and go on with the other tools: one broken tool (or a full disk)
            # should not discard the whole run.
            print("[%s] FAILED: %s" % (tool.name, e), file=sys.stderr, flush=True)
            results.setdefault("failures", {})[tool.name] = str(e)
        results["runs"][tool.name] = runs
        # Keep disk use bounded: each repository is only needed for its own tool's steps.
        shutil.rmtree(tool.repo, ignore_errors=True)
        shutil.rmtree(os.path.join(work, "cache", tool.name), ignore_errors=True)
        shutil.rmtree(os.path.join(work, "restore", tool.name), ignore_errors=True)
    results["load_after"] = open("/proc/loadavg").read().split()[:3]
    md = table(results)
    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write(md)
    print(md)
    unverified = ["%s %s" % (tool, key) for tool, runs in results["runs"].items()
                  for key, vs in runs.items() if not all(v["verified"] for v in vs)]
    if results.get("failures") or unverified:
        sys.exit("bench failed: %s" % "; ".join(
            ["%s: %s" % kv for kv in results.get("failures", {}).items()] +
            ["%s: restore differs from its source" % k for k in unverified]))


# The big and the changed sets are one volume on two days: both are backed up from the same
# path, as a volume changed in place is, so every tool sees the first as the parent of the second.
SAME_PATH = ("big", "changed")


def backed_up_from(work, data, ds):
    """The path a data set is backed up from."""
    if ds in SAME_PATH:
        return os.path.join(work, "volume", "current")
    return os.path.join(data, ds)


def run_ops(tool, work, data, sources, log, runs):
    """Runs the six steps of one tool, filling runs."""
    for op, ds in OPS:
        src = backed_up_from(work, data, ds)
        key = "%s %s" % (op, ds)
        print("[%s] %s ..." % (tool.name, key), file=sys.stderr, flush=True)
        if op == "backup":
            home = os.path.join(data, ds)
            if src != home:
                os.makedirs(os.path.dirname(src), exist_ok=True)
                os.rename(home, src)
            try:
                out, wall, cpu, peak = run_timed(tool.backup_cmd(src), tool.env, None, log)
            finally:
                if src != home:
                    os.rename(src, home)
            tool.snaps[ds] = tool.snapshot_id(out, src)
            repo = du(tool.repo)
            ok = True
        else:
            target = os.path.join(work, "restore", tool.name)
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            out, wall, cpu, peak = run_timed(
                tool.restore_cmd(tool.snaps[ds], target), tool.env,
                tool.restore_cwd(target), log)
            restored = Tree(tool.restored_root(target, src))
            ok = restored.digest() == sources[ds].digest()
            if not ok:
                print("  restore differs from its source:\n    %s" % "\n    ".join(
                    sources[ds].differences(restored)), file=sys.stderr)
            shutil.rmtree(target, ignore_errors=True)
            repo = None
        user, system = cpu
        cpu = user + system
        runs[key] = {"wall_s": wall, "cpu_s": cpu, "user_s": user, "sys_s": system,
                     "peak_mib": peak / 1024.0,
                     "repo_mib": None if repo is None else repo / 2**20,
                     "mib_per_s": sources[ds].bytes / 2**20 / wall if wall > 0 else None,
                     "verified": ok}
        print("  %.1f s wall, %.1f s cpu, %.0f MiB peak%s" % (
            wall, cpu, peak / 1024.0,
            "" if repo is None else ", repo %.0f MiB" % (repo / 2**20)),
            file=sys.stderr, flush=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def span(vs, field, fmt="%.1f"):
    """A field's range over the runs: "min-max", or the one value."""
    xs = [v[field] for v in vs if v.get(field) is not None]
    if not xs:
        return ""
    lo, hi = min(xs), max(xs)
    return fmt % lo if fmt % lo == fmt % hi else (fmt + "-" + fmt) % (lo, hi)


def table(r):
    lines = []
    ds = r["datasets"]
    lines.append("Data: %s. Load before %s, after %s. Runs per tool: %s.\n" % (
        "; ".join("%s %d files %.0f MiB" % (k, ds[k]["files"], ds[k]["bytes"] / 2**20)
                  for k in DATASETS if k in ds),
        "/".join(r["load_before"]), "/".join(r.get("load_after", [])), r.get("runs_per_tool", 1)))
    if "cold_cache" in r:
        lines.append("Page cache dropped before every step: %s.\n"
                     % ("yes" if r["cold_cache"] else "no (not permitted)"))
    lines.append("Each figure is the range over the runs (min-max).\n")
    lines.append("| tool | operation | wall s | CPU s | of it sys s | peak MiB | repo MiB | MiB/s | ok |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for tool, runs in r["runs"].items():
        for key, vs in runs.items():
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                tool, key, span(vs, "wall_s"), span(vs, "cpu_s"), span(vs, "sys_s"),
                span(vs, "peak_mib", "%.0f"), span(vs, "repo_mib", "%.0f"),
                span(vs, "mib_per_s", "%.0f"),
                "yes" if all(v["verified"] for v in vs) else "**NO**"))
    runs = r["runs"]
    if "holdfast" in runs and len(runs) > 1:
        others = [t for t in runs if t != "holdfast"]
        lines.append("")
        lines.append("Speed ratios (other tool's wall time / holdfast's; higher is better for "
                     "holdfast) at the medians, and in brackets at holdfast's worst case (the "
                     "other's fastest run / holdfast's slowest); peak memory (worst runs) against "
                     "restic:\n")
        lines.append("| operation | vs restic (target >= 2) | vs best other (target >= 1.5) | "
                     "best other | peak MiB holdfast / restic |")
        lines.append("|---|---:|---:|---|---|")
        h = runs["holdfast"]

        def walls(t, key):
            return [v["wall_s"] for v in runs[t][key]]

        for key in h:
            have = [t for t in others if key in runs[t]]
            if not have:
                continue
            best = min(have, key=lambda t: median(walls(t, key)))
            hw = walls("holdfast", key)

            def ratio(t):
                return "%.2f (%.2f)" % (median(walls(t, key)) / median(hw),
                                        min(walls(t, key)) / max(hw))

            has_r = key in runs.get("restic", {})
            mem = ("%.0f / %.0f" % (max(v["peak_mib"] for v in h[key]),
                                    max(v["peak_mib"] for v in runs["restic"][key]))
                   if has_r else "")
            lines.append("| %s | %s | %s | %s | %s |" % (
                key, ratio("restic") if has_r else "", ratio(best), best, mem))

        def repo(t, key):
            return median([v["repo_mib"] for v in runs[t][key]])

        last = "backup mixed"
        sizes = ", ".join("%s %.0f MiB" % (t, repo(t, last)) for t in runs if last in runs[t])
        lines.append("\nFinal repository sizes (after all four backups, medians): %s.\n" % sizes)
        growth = ", ".join(
            "%s %.0f MiB" % (t, repo(t, "backup changed") - repo(t, "backup big"))
            for t in runs if "backup changed" in runs[t] and "backup big" in runs[t])
        lines.append("Growth of the repository from the changed set (1%% of the big set's 4 KiB "
                     "blocks rewritten in place plus an insertion; target for holdfast <= 400 "
                     "MiB): %s.\n" % growth)
    for tool, why in r.get("failures", {}).items():
        lines.append("**%s failed:** %s\n" % (tool, why))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
