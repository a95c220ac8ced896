#!/usr/bin/env python3
"""Restores of several data shapes into fresh file systems, and peak memory against file count.

    shapes.py WORKDIR [--holdfast BIN] [--runs N] [--restore small,mixed,big]
                      [--memory 100000,1000000,5000000] [--restic-memory-max N] [--many-dir D]

Needs root (loop mounts, dropping the page cache). Two parts:

restore  For each shape (the data sets of gen.py under WORKDIR/data), one holdfast and one restic
         repository and a tar archive of the source; then N runs in which each of holdfast,
         restic and `tar -x` restores into a freshly made ext4 file system (so no tool pays for
         the inodes another just deleted), after the page cache is dropped and the repository or
         archive read back in (the state right after a backup). Each restore is checked against
         its source by content (bench.py's digest).
memory   Files of 1-60 random bytes, 100 per directory, 100 directories per top directory, on an
         ext4 file system with inline data (a file costs an inode, no data block), made once for
         the largest size; the set of n files is the first n / 10,000 top directories. `backup`,
         `ls` and `check` of each by holdfast (and by restic up to --restic-memory-max files),
         with the page cache dropped before each, peak RSS from /usr/bin/time.

Prints Markdown tables and writes WORKDIR/results/shapes.{json,md}.
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the tools, timing and content digests)


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


class FreshFs:
    """An ext4 file system in a sparse image, made new for each use."""

    def __init__(self, image, mountpoint, size, extra=()):
        self.image, self.mountpoint, self.size, self.extra = image, mountpoint, size, extra

    def __enter__(self):
        self.remove()
        with open(self.image, "wb") as f:
            f.truncate(self.size)
        sh("mkfs.ext4", "-q", "-F", *self.extra, self.image)
        os.makedirs(self.mountpoint, exist_ok=True)
        sh("mount", "-o", "loop", self.image, self.mountpoint)
        return self.mountpoint

    def __exit__(self, *exc):
        self.remove()

    def remove(self):
        if os.path.ismount(self.mountpoint):
            sh("umount", self.mountpoint)
        if os.path.exists(self.image):
            os.remove(self.image)


def read_in(path):
    """Reads every file below path (or path itself) so it sits in the page cache."""
    files = [path] if os.path.isfile(path) else [
        os.path.join(r, n) for r, _, ns in os.walk(path) for n in ns]
    for p in files:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def timed(cmd, env, log, cwd=None):
    out, wall, (user, system), peak = bench.run_timed(cmd, env, cwd, log)
    return out, {"wall_s": wall, "user_s": user, "sys_s": system, "peak_mib": peak / 1024.0}


def restore_part(work, a, log, results):
    data = os.path.join(work, "data")
    pw = bench.password_file(work)
    tools = {"holdfast": bench.Holdfast(work, pw, a.holdfast), "restic": bench.Restic(work, pw)}
    for shape in a.restore.split(","):
        src = os.path.join(data, shape)
        want = bench.Tree(src)
        archive = os.path.join(work, "shapes-%s.tar" % shape)
        sh("tar", "-C", data, "-cf", archive, shape)
        for t in tools.values():
            t.repo = os.path.join(work, "repos", "shapes-" + t.name)
            shutil.rmtree(t.repo, ignore_errors=True)
            os.makedirs(os.path.dirname(t.repo), exist_ok=True)
            t.init()
            out, _ = timed(t.backup_cmd(src), t.env, log)
            t.snaps[shape] = t.snapshot_id(out, src)
        size = int(want.bytes * 1.5) + (len(want.entries) + 1000) * 8192
        for run in range(a.runs):
            for name in ("holdfast", "restic", "tar"):
                with FreshFs(os.path.join(work, "restore.img"), os.path.join(work, "rt"),
                             size) as mnt:
                    target = os.path.join(mnt, "out")
                    os.makedirs(target)
                    bench.cold_cache()
                    if name == "tar":
                        read_in(archive)
                        cmd, env, root = ["tar", "-C", target, "-xf", archive], None, \
                            os.path.join(target, shape)
                    else:
                        t = tools[name]
                        read_in(t.repo)
                        cmd, env = t.restore_cmd(t.snaps[shape], target), t.env
                        root = t.restored_root(target, src)
                    # Not bench.run_timed: that drops the cache again, undoing the read-in.
                    p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M"] + cmd, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    if p.returncode != 0:
                        raise RuntimeError("%s failed: %s" % (cmd, p.stderr.decode()[-500:]))
                    wall, user, system, peak = p.stderr.decode().split()[-4:]
                    ok = bench.Tree(root).digest() == want.digest()
                    results.setdefault("restore", {}).setdefault(shape, {}).setdefault(
                        name, []).append({"wall_s": float(wall), "user_s": float(user),
                                          "sys_s": float(system),
                                          "peak_mib": int(peak) / 1024.0, "verified": ok})
                    print("[%s run %d] %s %s s%s" % (shape, run + 1, name, wall,
                                                      "" if ok else " DIFFERS"),
                          file=sys.stderr, flush=True)
        os.remove(archive)
        for t in tools.values():
            shutil.rmtree(t.repo, ignore_errors=True)


def make_many(root, count):
    """count files of 1-60 random bytes, 100 per directory, 100 directories per top directory."""
    rng = random.Random(5)
    for i in range(0, count, 100):
        d = os.path.join(root, "t%03d" % (i // 10_000), "d%02d" % (i // 100 % 100))
        os.makedirs(d, exist_ok=True)
        for f in range(100):
            with open(os.path.join(d, "f%02d" % f), "wb") as fh:
                fh.write(rng.randbytes(rng.randrange(1, 61)))


def memory_part(work, a, log, results):
    pw = bench.password_file(work)
    sizes = sorted(int(n) for n in a.memory.split(","))
    fs = FreshFs(os.path.join(work, "many.img"), os.path.join(work, "many"),
                 sizes[-1] * 600 + (1 << 30),
                 ("-b", "1024", "-I", "256", "-O", "inline_data", "-N", str(sizes[-1] + 100_000)))
    with (contextlib.nullcontext(a.many_dir) if a.many_dir else fs) as src:
        if not a.many_dir:
            print("[memory] making %d files" % sizes[-1], file=sys.stderr, flush=True)
            make_many(src, sizes[-1])
        for n in sizes:
            # The set of n files is the first n / 10,000 top directories of the largest.
            paths = [os.path.join(src, "t%03d" % i) for i in range(n // 10_000)]
            print("[memory] %d files" % n, file=sys.stderr, flush=True)
            row = {}
            for t in (bench.Holdfast(work, pw, a.holdfast), bench.Restic(work, pw)):
                if t.name == "restic" and n > a.restic_memory_max:
                    continue
                t.repo = os.path.join(work, "repos", "many-" + t.name)
                shutil.rmtree(t.repo, ignore_errors=True)
                os.makedirs(os.path.dirname(t.repo), exist_ok=True)
                t.init()
                backup = t.backup_cmd(paths[0])[:-1] + paths
                out, row[t.name + " backup"] = timed(backup, t.env, log)
                snap = t.snapshot_id(out, paths[0])
                _, row[t.name + " ls"] = timed(t.base() + ["ls", snap], t.env, log)
                _, row[t.name + " check"] = timed(t.base() + ["check"], t.env, log)
                shutil.rmtree(t.repo, ignore_errors=True)
                print("  %s" % {k: round(v["peak_mib"]) for k, v in row.items()},
                      file=sys.stderr, flush=True)
            results.setdefault("memory", {})[str(n)] = row


def table(results):
    lines = []
    for shape, tools in results.get("restore", {}).items():
        lines.append("\nRestore of `%s` (range over %d runs):\n" % (
            shape, len(next(iter(tools.values())))))
        lines.append("| tool | wall s | user s | sys s | peak MiB | ok |")
        lines.append("|---|---:|---:|---:|---:|---|")
        for name, vs in tools.items():
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                name, bench.span(vs, "wall_s", "%.2f"), bench.span(vs, "user_s"),
                bench.span(vs, "sys_s"), bench.span(vs, "peak_mib", "%.0f"),
                "yes" if all(v["verified"] for v in vs) else "**NO**"))
        h = [v["wall_s"] for v in tools["holdfast"]]
        for other in ("restic", "tar"):
            o = [v["wall_s"] for v in tools[other]]
            lines.append("\n%s / holdfast: %.2f at the medians, %.2f at holdfast's worst case."
                         % (other, bench.median(o) / bench.median(h), min(o) / max(h)))
    if "memory" in results:
        lines.append("\nPeak memory (MiB) against the number of files:\n")
        cols = sorted({k for row in results["memory"].values() for k in row})
        lines.append("| files | " + " | ".join(cols) + " |")
        lines.append("|---:|" + "---:|" * len(cols))
        for n, row in results["memory"].items():
            lines.append("| %s | %s |" % ("{:,}".format(int(n)), " | ".join(
                "%.0f" % row[c]["peak_mib"] if c in row else "" for c in cols)))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--holdfast", default="holdfast")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--restore", default="small,mixed,big")
    ap.add_argument("--memory", default="100000,1000000,5000000")
    ap.add_argument("--restic-memory-max", type=int, default=1_000_000)
    ap.add_argument("--many-dir", help="an existing set made as make_many makes it (else one is "
                    "made on a loop-mounted file system)")
    a = ap.parse_args()
    work = os.path.abspath(a.workdir)
    bench.password_file(work)
    out = os.path.join(work, "results")
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "shapes.log")
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(sys.argv)}
    if a.restore:
        restore_part(work, a, log, results)
    if a.memory:
        memory_part(work, a, log, results)
    md = table(results)
    with open(os.path.join(out, "shapes.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "shapes.md"), "w") as f:
        f.write(md)
    print(md)
    bad = [s for s, tools in results.get("restore", {}).items()
           for vs in tools.values() if not all(v["verified"] for v in vs)]
    if bad:
        sys.exit("restores differ from their source: %s" % ", ".join(bad))


if __name__ == "__main__":
    main()
