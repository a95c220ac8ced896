#!/usr/bin/env bash
# Backup benchmark: holdfast against restic, borg (Debian packages) and rustic (crates.io).
#
#   bench/run.sh [--work DIR] [--big-mib N] [--small-files N] [--insert-mib N] [--runs N]
#                [--tools holdfast,restic,borg,rustic] [--no-build]
#
# RUSTIC=/path/to/rustic uses an existing rustic binary instead of installing one under WORK.
#
# Generates the data sets deterministically (bench/gen.py), installs what is missing, builds the
# release `holdfast` binary, then runs every tool on the same data in one run (bench/bench.py) and
# writes WORK/results/results.{json,md}. Defaults: WORK=/var/tmp/holdfast-bench (or
# $HOLDFAST_BENCH_DIR), a 2 GiB set of large and medium files, 200,000 small files, a 64 MiB
# insertion, the 30,004-file mixed set, and five runs of every step per tool (the results give
# each figure's range over the runs).
#
# Caches: each step is preceded by `sync` and, when run as root, by dropping the page cache, so
# every tool reads its source and repository from disk; the results say whether it was dropped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="${HOLDFAST_BENCH_DIR:-/var/tmp/holdfast-bench}"
big_mib=2048
small_files=200000
insert_mib=64
tools="holdfast,restic,borg,rustic"
runs=5
build=1
cmdline="bench/run.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --big-mib) big_mib="$2"; shift 2 ;;
        --small-files) small_files="$2"; shift 2 ;;
        --insert-mib) insert_mib="$2"; shift 2 ;;
        --tools) tools="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$work/tools"

# Bench-only dependencies, installed here rather than by scripts/install-deps.sh.
apt_missing=()
[ -x /usr/bin/time ] || apt_missing+=(time)
case ",$tools," in *,restic,*) command -v restic >/dev/null || apt_missing+=(restic) ;; esac
case ",$tools," in *,borg,*) command -v borg >/dev/null || apt_missing+=(borgbackup) ;; esac
if [ ${#apt_missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${apt_missing[@]}"
fi

rustic="${RUSTIC:-$work/tools/rustic/bin/rustic}"
case ",$tools," in *,rustic,*)
    if [ ! -x "$rustic" ]; then
        if command -v rustic >/dev/null; then
            rustic="$(command -v rustic)"
        else
            # Long compile on 2 cores; the optional server/TUI features are left out.
            echo "installing rustic-rs from crates.io (slow)" >&2
            CARGO_TARGET_DIR="$work/tools/rustic-target" nice -n 19 \
                cargo install rustic-rs --locked --no-default-features --root "$work/tools/rustic"
        fi
    fi ;;
esac

target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
holdfast="$target_dir/release/holdfast"
if [ "$build" = 1 ]; then
    (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --release -p holdfast)
fi

# Data (big + changed + small + mixed) plus one tool's repository and one restore at a time.
need_mib=$(( big_mib * 4 + small_files / 45 + 2000 ))
free_mib=$(df -Pm "$work" | awk 'NR==2 {print $4}')
if [ "$free_mib" -lt "$need_mib" ]; then
    echo "warning: $free_mib MiB free under $work, the run may need about $need_mib MiB" >&2
fi

python3 "$here/gen.py" "$work" --big-mib "$big_mib" --small-files "$small_files" \
    --insert-mib "$insert_mib"
{
    echo "holdfast: $("$holdfast" --version 2>/dev/null || echo "$holdfast")"
    case ",$tools," in *,restic,*) echo "restic: $(restic version)" ;; esac
    case ",$tools," in *,borg,*) echo "borg: $(borg --version)" ;; esac
    case ",$tools," in *,rustic,*) echo "rustic: $("$rustic" --version)" ;; esac
    echo "cpus: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$work/versions.txt" >&2
python3 "$here/bench.py" "$work" --tools "$tools" --holdfast "$holdfast" --rustic "$rustic" \
    --runs "$runs" --command "$cmdline"
