#!/usr/bin/env python3
"""Velero's node agent on holdfast against the same engine from the command line, and restic.

    velero.py WORKDIR --holdfast BIN [--runs N] [--shapes small,big] [--no-restic]

For each data shape of gen.py (small: 200,000 files of 0-16 KiB in 2,000 directories; big: a
few large files) and each run:

- **pvb/pvr**: a fresh `holdfast server` (its own data directory) and location; a Pod with a
  hostPath volume on the data set, another Pod with one on an empty directory; a PodVolumeBackup
  of an empty volume first (it creates the repository, which the command-line runs do untimed),
  then a PodVolumeBackup of the data set and a PodVolumeRestore of its snapshot into the empty
  directory, each created with kubectl and timed from the moment the create returns until a
  watch (`kubectl get -w`, started before) reports the terminal phase, so the time includes
  everything the controller does: accepting, preparing (opening the repository), the move, and
  the status writes; the server's CPU time is read from /proc;
- **repo**: `holdfast repo backup` and `holdfast repo restore` of the same data into a fresh
  repository (bench.py's runner, under /usr/bin/time);
- **restic**: the same with restic.

The page cache is written back and dropped before every step. Every restore is checked against
its source by content (bench.py's Tree digest). Writes WORKDIR/results/velero.{json,md}, prints
the table, and exits non-zero when a step fails or a restore differs.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the sibling module: Tree, cold_cache, run_timed, the tools)

BANNER = "holdfast server listening on "
TERMINAL = {"Completed", "Failed", "Canceled"}


class Server:
    """A `holdfast server` on a private data directory, driven through its kubeconfig."""

    def __init__(self, binary, data_dir, log):
        os.makedirs(data_dir, exist_ok=True)
        self.logf = open(log, "ab")
        self.proc = subprocess.Popen(
            [binary, "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            stdout=subprocess.PIPE,
            stderr=self.logf,
            env=dict(os.environ, RUST_LOG="warn"),
        )
        first = self.proc.stdout.readline().decode()
        if not first.startswith(BANNER):
            raise RuntimeError("unexpected banner from holdfast server: %r" % first)
        self.env = dict(os.environ, KUBECONFIG=os.path.join(data_dir, "kubeconfig"))
        # The API is up once the banner is printed; the node registers just after.
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")

    def kubectl(self, *args, stdin=None):
        p = subprocess.run(
            ["kubectl"] + list(args),
            input=stdin.encode() if stdin else None,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if p.returncode != 0:
            raise RuntimeError("kubectl %s: %s" % (" ".join(args), p.stderr.decode().strip()))
        return p.stdout.decode()

    def apply(self, obj):
        self.kubectl("apply", "-f", "-", stdin=json.dumps(obj))

    def cpu_seconds(self):
        """User+system CPU the server process has used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def run_to_end(self, kind, obj):
        """Creates obj and waits (watching, not polling) for its terminal phase.
        Returns (wall seconds, server CPU seconds, final object)."""
        name = obj["metadata"]["name"]
        watch = subprocess.Popen(
            ["kubectl", "-n", "velero", "get", kind, name, "-w", "--output-watch-events=false",
             "-o", "jsonpath={.status.phase}{\"\\n\"}"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        bench.cold_cache()
        cpu0 = self.cpu_seconds()
        # Timed from the moment the object exists (kubectl's own start-up, slow with a cold
        # page cache, is the client's time, not the controller's).
        self.apply(obj)
        t0 = time.monotonic()
        # The watch starts before the object exists: retry until it is found.
        phase = ""
        while phase not in TERMINAL:
            line = watch.stdout.readline()
            if not line:
                if watch.poll() is None:
                    continue
                watch = subprocess.Popen(
                    ["kubectl", "-n", "velero", "get", kind, name, "-w",
                     "--output-watch-events=false", "-o", "jsonpath={.status.phase}{\"\\n\"}"],
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                continue
            phase = line.decode().strip()
        wall = time.monotonic() - t0
        cpu = self.cpu_seconds() - cpu0
        watch.kill()
        watch.wait()
        final = json.loads(self.kubectl("-n", "velero", "get", kind, name, "-o", "json"))
        if phase != "Completed":
            raise RuntimeError("%s %s ended %s: %s" % (kind, name, phase,
                                                       final["status"].get("message")))
        return wall, cpu, final

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


def pod(name, volumes):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": [
                {"name": v, "mountPath": "/" + v} for v in volumes]}],
            "volumes": [{"name": v, "hostPath": {"path": p}} for v, p in volumes.items()],
        },
    }


def velero_run(binary, work, shape, src, run, log):
    """One PodVolumeBackup and one PodVolumeRestore of src on a fresh server."""
    base = os.path.join(work, "velero", "%s-%d" % (shape, run))
    shutil.rmtree(base, ignore_errors=True)
    target = os.path.join(base, "restored")
    os.makedirs(target)
    server = Server(binary, os.path.join(base, "server"), log)
    try:
        node = server.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
        for ns in ("velero", "apps"):
            server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        server.apply({
            "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "velero"},
            "spec": {"provider": "local", "objectStorage": {"bucket": "bench"},
                     "config": {"fspath": os.path.join(base, "bsl")}},
        })
        empty = os.path.join(base, "empty")
        os.makedirs(empty)
        server.apply(pod("app", {"data": src, "empty": empty}))
        server.apply(pod("app-restored", {"data": target}))

        def pvb(name, volume):
            return {
                "apiVersion": "velero.io/v1", "kind": "PodVolumeBackup",
                "metadata": {"name": name, "namespace": "velero"},
                "spec": {"node": node, "pod": {"kind": "Pod", "namespace": "apps", "name": "app"},
                         "volume": volume, "backupStorageLocation": "default",
                         "repoIdentifier": "", "uploaderType": "kopia"},
            }

        # The repository is created on first use; the command-line runs create theirs untimed,
        # so a backup of an empty volume creates this one first.
        server.run_to_end("podvolumebackups", pvb("warm-up", "empty"))
        b_wall, b_cpu, pvb = server.run_to_end("podvolumebackups", pvb("bench", "data"))
        r_wall, r_cpu, _ = server.run_to_end("podvolumerestores", {
            "apiVersion": "velero.io/v1", "kind": "PodVolumeRestore",
            "metadata": {"name": "bench", "namespace": "velero",
                         "labels": {"velero.io/restore-uid": "bench"}},
            "spec": {"pod": {"kind": "Pod", "namespace": "apps", "name": "app-restored"},
                     "volume": "data", "backupStorageLocation": "default",
                     "repoIdentifier": "", "uploaderType": "kopia", "sourceNamespace": "apps",
                     "snapshotID": pvb["status"]["snapshotID"]},
        })
    finally:
        server.stop()
    marker = os.path.join(target, ".velero")
    if not os.path.isfile(os.path.join(marker, "bench")):
        raise RuntimeError("the restore left no done marker")
    shutil.rmtree(marker)
    restored = bench.Tree(target)
    shutil.rmtree(base)
    return (b_wall, b_cpu), (r_wall, r_cpu), restored


def cli_run(tool, work, shape, src, log):
    """One backup and one restore of src with a command-line tool, into a fresh repository."""
    shutil.rmtree(tool.repo, ignore_errors=True)
    shutil.rmtree(os.path.join(work, "cache", tool.name), ignore_errors=True)
    os.makedirs(os.path.dirname(tool.repo), exist_ok=True)
    tool.init()
    out, b_wall, b_cpu, _ = bench.run_timed(tool.backup_cmd(src), tool.env, None, log)
    snap = tool.snapshot_id(out, src)
    target = os.path.join(work, "restore-" + tool.name)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    _, r_wall, r_cpu, _ = bench.run_timed(
        tool.restore_cmd(snap, target), tool.env, tool.restore_cwd(target), log)
    restored = bench.Tree(tool.restored_root(target, src))
    shutil.rmtree(target)
    shutil.rmtree(tool.repo)
    return (b_wall, sum(b_cpu)), (r_wall, sum(r_cpu)), restored


def spread(values):
    return "%.1f–%.1f (median %.1f)" % (min(values), max(values), statistics.median(values))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--holdfast", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shapes", default="small,big")
    ap.add_argument("--no-restic", action="store_true")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(os.path.join(work, "results"), exist_ok=True)
    log = os.path.join(work, "results", "velero.log")
    pwfile = os.path.join(work, "password")
    with open(pwfile, "w") as f:
        f.write("benchmark password\n")
    tools = [bench.Holdfast(work, pwfile, args.holdfast)]
    if not args.no_restic:
        tools.append(bench.Restic(work, pwfile))

    dropped = bench.cold_cache()
    results = []
    failed = False
    for shape in args.shapes.split(","):
        src = os.path.join(work, "data", shape)
        want = bench.Tree(src)
        digest = want.digest()
        row = {"shape": shape, "files": want.files, "mib": want.bytes / (1 << 20), "runs": {}}
        for run in range(args.runs):
            measured = [("pvb/pvr", velero_run(args.holdfast, work, shape, src, run, log))]
            for tool in tools:
                name = "repo" if tool.name == "holdfast" else tool.name
                measured.append((name, cli_run(tool, work, shape, src, log)))
            for name, (backup, restore, restored) in measured:
                ok = restored.digest() == digest
                if not ok:
                    failed = True
                    print("%s %s run %d: restore differs: %s" % (
                        name, shape, run, "; ".join(want.differences(restored))), file=sys.stderr)
                runs = row["runs"].setdefault(name, [])
                runs.append({"backup": backup, "restore": restore, "ok": ok})
                print("%s %s run %d: backup %.1f s, restore %.1f s, ok=%s" % (
                    shape, name, run, backup[0], restore[0], ok), flush=True)
        results.append(row)

    lines = [
        "Page cache dropped before every step: %s. Runs per cell: %d. Load after: %s." % (
            "yes" if dropped else "no", args.runs, " ".join("%.2f" % x for x in os.getloadavg())),
        "",
        "| data | how | backup wall s | backup CPU s | restore wall s | restore CPU s | ok |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in results:
        label = "%s (%d files, %.0f MiB)" % (row["shape"], row["files"], row["mib"])
        for name, runs in row["runs"].items():
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                label, name,
                spread([r["backup"][0] for r in runs]), spread([r["backup"][1] for r in runs]),
                spread([r["restore"][0] for r in runs]), spread([r["restore"][1] for r in runs]),
                "yes" if all(r["ok"] for r in runs) else "NO"))
    lines += ["", "Controller overhead (median pvb/pvr wall over median repo wall, minus 1):", ""]
    for row in results:
        cli, crd = row["runs"]["repo"], row["runs"]["pvb/pvr"]
        for op in ("backup", "restore"):
            a = statistics.median(r[op][0] for r in crd)
            b = statistics.median(r[op][0] for r in cli)
            lines.append("- %s %s: %+.1f%% (%.1f s against %.1f s)" % (
                row["shape"], op, (a / b - 1) * 100, a, b))
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(work, "results", "velero.md"), "w") as f:
        f.write(text)
    with open(os.path.join(work, "results", "velero.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
