#!/usr/bin/env bash
# Velero's node agent on holdfast (PodVolumeBackup/Restore through the API) against
# `holdfast repo backup/restore` and restic on the same data (bench/velero.py says how).
#
#   bench/velero.sh [--work DIR] [--big-mib N] [--small-files N] [--runs N] [--no-build]
#
# Defaults: WORK=/var/tmp/holdfast-bench (or $HOLDFAST_BENCH_DIR), a 1 GiB set of large files,
# 200,000 small files, 3 runs. Needs root to drop the page cache before each step.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="${HOLDFAST_BENCH_DIR:-/var/tmp/holdfast-bench}"
big_mib=1024
small_files=200000
runs=3
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --big-mib) big_mib="$2"; shift 2 ;;
        --small-files) small_files="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$work"
missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v restic >/dev/null || missing+=(restic)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
command -v kubectl >/dev/null || "$root/scripts/install-deps.sh"

target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
if [ "$build" = 1 ]; then
    (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --release -p holdfast)
fi
python3 "$here/gen.py" "$work" --big-mib "$big_mib" --small-files "$small_files"
echo "cpus: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg), restic: $(restic version)" >&2
python3 "$here/velero.py" "$work" --holdfast "$target_dir/release/holdfast" --runs "$runs"
