#!/usr/bin/env python3
"""Deterministic data sets for the backup benchmark (bench/run.sh).

    gen.py WORKDIR [--big-mib N] [--small-files N] [--insert-mib N] [--seed S]

Writes, under WORKDIR/data:
  big/      a mixed set of about N MiB: a few large files (text-like logs and CSV, incompressible
            random, a disk-image-like mix of zero runs, random and text) and medium files of 1-16 MiB
  changed/  a copy of big/ with 1% of its 4 KiB blocks rewritten with new random bytes, plus a
            --insert-mib insertion of new data in the middle of the largest file
  small/    --small-files files of 0-16 KiB (half text-like, half random) in nested directories
  mixed/    the shape of a web or mail store: 300 directories of 100 files of 0.5-16 KiB plus
            four files of 100-150 MiB (text and random), 30,004 files in all

Every byte comes from seeded PRNGs, so two runs with the same arguments produce identical files.
A marker file records the arguments; a set whose marker matches is not generated again.
"""

import argparse
import json
import os
import random
import shutil
import sys

MIB = 1 << 20
WORDS = (
    "the of and to in is was for on that with as by at from his an were are which this be or "
    "has had not but its have new first one their after also two been other who they more "
    "time into her all when during than some would about most can over between only under "
    "error warning info debug request response user session commit rollback checkpoint vacuum "
    "select insert update delete where join index table value row column primary key foreign "
    "2026-11-21T00:00:00Z 200 404 500 GET POST PUT /api/v1/namespaces /healthz latency_ms= "
    "pod node volume snapshot backup restore replica leader follower term heartbeat"
).split()


class Gen:
    """Data generators driven by one seeded PRNG."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def random(self, n):
        return self.rng.randbytes(n)

    def text(self, n):
        """Log/CSV-like text: compresses about 3-5x, never repeats a block."""
        out = []
        size = 0
        rng = self.rng
        while size < n:
            if rng.random() < 0.5:
                line = "%d,%s,%s,%d,%.3f\n" % (
                    rng.randrange(10**9),
                    rng.choice(WORDS),
                    rng.choice(WORDS),
                    rng.randrange(100000),
                    rng.random() * 1000,
                )
            else:
                line = " ".join(rng.choices(WORDS, k=rng.randrange(4, 16))) + "\n"
            out.append(line)
            size += len(line)
        return "".join(out).encode()[:n]

    def image(self, n):
        """Disk-image-like: 4 MiB segments of zeros, random, or text."""
        parts = []
        left = n
        while left > 0:
            seg = min(left, 4 * MIB)
            kind = self.rng.randrange(3)
            if kind == 0:
                parts.append(bytes(seg))
            elif kind == 1:
                parts.append(self.random(seg))
            else:
                parts.append(self.text(seg))
            left -= seg
        return b"".join(parts)


def write_file(path, gen, kind, n):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = n
        while left > 0:
            step = min(left, 16 * MIB)
            f.write(getattr(gen, kind)(step))
            left -= step


def big_layout(big_mib):
    """(relative path, kind, bytes) of the big set."""
    total = big_mib * MIB
    files = [
        ("large/app.log", "text", total * 20 // 100),
        ("large/media.bin", "random", total * 20 // 100),
        ("large/disk.img", "image", total * 20 // 100),
        ("large/table.csv", "text", total * 10 // 100),
    ]
    rng = random.Random(7)
    left = total - sum(f[2] for f in files)
    i = 0
    while left > 0:
        n = min(left, rng.randrange(1, 17) * MIB)
        kind = ["text", "random", "image"][i % 3]
        files.append(("medium/d%02d/file-%04d.%s" % (i % 8, i, kind[:3]), kind, n))
        left -= n
        i += 1
    return files


def gen_big(root, big_mib, seed):
    gen = Gen(seed)
    for rel, kind, n in big_layout(big_mib):
        write_file(os.path.join(root, rel), gen, kind, n)


def gen_changed(big, changed, big_mib, insert_mib, seed):
    if os.path.exists(changed):
        shutil.rmtree(changed)
    shutil.copytree(big, changed)
    gen = Gen(seed + 1)
    layout = big_layout(big_mib)
    # 1% of the 4 KiB blocks of every file, rewritten in place with new random bytes.
    for rel, _kind, n in layout:
        blocks = n // 4096
        count = max(1, blocks // 100) if blocks else 0
        path = os.path.join(changed, rel)
        fd = os.open(path, os.O_WRONLY)
        try:
            for b in gen.rng.sample(range(blocks), count):
                os.pwrite(fd, gen.random(4096), b * 4096)
        finally:
            os.close(fd)
    # A 64 MiB insertion in the middle of the largest file: shifts everything after it.
    rel, _kind, n = max(layout, key=lambda f: f[2])
    path = os.path.join(changed, rel)
    tmp = path + ".tmp"
    mid = (n // 2) // 4096 * 4096
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        left = mid
        while left > 0:
            buf = src.read(min(left, 16 * MIB))
            dst.write(buf)
            left -= len(buf)
        for _ in range(0, insert_mib, 16):
            dst.write(gen.text(16 * MIB) if gen.rng.random() < 0.5 else gen.random(16 * MIB))
        shutil.copyfileobj(src, dst, 16 * MIB)
    os.replace(tmp, path)


def gen_small(root, count, seed):
    gen = Gen(seed + 2)
    pool = gen.text(32 * MIB)
    per_dir = 100
    for i in range(count):
        d = os.path.join(root, "a%03d" % (i // (per_dir * 20)), "b%02d" % ((i // per_dir) % 20))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        size = gen.rng.randrange(0, 16 * 1024 + 1)
        if i % 2 == 0:
            off = gen.rng.randrange(0, len(pool) - size)
            data = pool[off : off + size]
            name = "f%06d.txt" % i
        else:
            data = gen.random(size)
            name = "f%06d.bin" % i
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def gen_mixed(root, seed):
    gen = Gen(seed + 3)
    for d in range(300):
        path = os.path.join(root, "site%03d" % d)
        os.makedirs(path, exist_ok=True)
        for i in range(100):
            size = gen.rng.randrange(512, 16 * 1024 + 1)
            kind = "text" if gen.rng.random() < 0.5 else "random"
            with open(os.path.join(path, "page%03d" % i), "wb") as f:
                f.write(getattr(gen, kind)(size))
    for i in range(4):
        write_file(os.path.join(root, "archive", "part%d" % i), gen,
                   ["text", "random"][i % 2], gen.rng.randrange(100, 151) * MIB)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--big-mib", type=int, default=2048)
    ap.add_argument("--small-files", type=int, default=200_000)
    ap.add_argument("--insert-mib", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    data = os.path.join(a.workdir, "data")
    os.makedirs(data, exist_ok=True)
    want = {"big_mib": a.big_mib, "small_files": a.small_files, "insert_mib": a.insert_mib,
            "seed": a.seed, "generator": 2}
    marker = os.path.join(data, "params.json")
    try:
        with open(marker) as f:
            if json.load(f) == want:
                print("data sets already generated with these parameters", file=sys.stderr)
                return
    except (OSError, ValueError):
        pass
    for d in ("big", "changed", "small", "mixed"):
        shutil.rmtree(os.path.join(data, d), ignore_errors=True)
    if os.path.exists(marker):
        os.remove(marker)
    print("generating big set (%d MiB)" % a.big_mib, file=sys.stderr)
    gen_big(os.path.join(data, "big"), a.big_mib, a.seed)
    print("generating changed set", file=sys.stderr)
    gen_changed(os.path.join(data, "big"), os.path.join(data, "changed"), a.big_mib,
                a.insert_mib, a.seed)
    print("generating %d small files" % a.small_files, file=sys.stderr)
    gen_small(os.path.join(data, "small"), a.small_files, a.seed)
    print("generating the mixed set", file=sys.stderr)
    gen_mixed(os.path.join(data, "mixed"), a.seed)
    with open(marker, "w") as f:
        json.dump(want, f)


if __name__ == "__main__":
    main()
