#!/bin/bash
# Scattered in-place changes: how much a repository holding the bench's `big` set grows when the
# `changed` set (1% of every file's 4 KiB blocks rewritten, a 64 MiB insertion in the largest
# file) is backed up from the same path, as a volume changed in place is, then a verified restore
# of the changed snapshot. holdfast and restic, each into a fresh repository, page cache dropped
# before every step (needs root).
#
#   bench/scatter.sh WORK HOLDFAST_BINARY [RUNS]
#
# WORK holds (or gets) the data: `python3 bench/gen.py WORK --big-mib 4096` makes data/big and
# data/changed (plus the small sets, unused here). Needs about 4 × the big set free besides.
set -euo pipefail
work=$(realpath "$1")
hf=$(realpath "$2")
runs=${3:-3}
data=$work/data
vol=$work/volume
[ -d "$data/big" ] && [ -d "$data/changed" ] || { echo "no data sets in $data: run bench/gen.py first" >&2; exit 1; }
mkdir -p "$vol" "$work/scatter"
echo bench-password > "$work/scatter/pw"
export HOLDFAST_PASSWORD_FILE=$work/scatter/pw RESTIC_PASSWORD_FILE=$work/scatter/pw
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
timed() { /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KiB peak" "$@" > /dev/null; }
# Puts a data set at the one path both backups read, runs the command, puts it back.
from_volume() {
    local set=$1; shift
    mv "$data/$set" "$vol/current"
    trap 'mv "$vol/current" "$data/$set"' EXIT
    "$@"
    mv "$vol/current" "$data/$set"
    trap - EXIT
}
repo=$work/scatter/repo
out=$work/scatter/out
for run in $(seq 1 "$runs"); do
    for tool in holdfast restic; do
        rm -rf "$repo" "$out"
        case $tool in
            holdfast)
                "$hf" repo --quiet --repo "$repo" init > /dev/null
                backup() { timed "$hf" repo --quiet --repo "$repo" backup "$vol/current"; }
                restore() { timed "$hf" repo --quiet --repo "$repo" restore latest --target "$out"; }
                restored=$out/current ;;
            restic)
                restic --quiet --repo "$repo" init > /dev/null
                backup() { timed restic --quiet --repo "$repo" backup "$vol/current"; }
                restore() { timed restic --quiet --repo "$repo" restore latest --target "$out"; }
                restored=$out$vol/current ;;
        esac
        drop; echo "run $run $tool backup big: $(from_volume big backup 2>&1)"
        before=$(du -sb "$repo" | cut -f1)
        drop; echo "run $run $tool backup changed: $(from_volume changed backup 2>&1)"
        after=$(du -sb "$repo" | cut -f1)
        echo "run $run $tool growth: $(( (after - before) / 1048576 )) MiB (repository after big: $(( before / 1048576 )) MiB)"
        drop; echo "run $run $tool restore changed: $(restore 2>&1)"
        if diff -rq "$data/changed" "$restored" > /dev/null; then
            echo "run $run $tool restore identical"
        else
            echo "run $run $tool restore DIFFERS" >&2
            exit 1
        fi
        rm -rf "$repo" "$out"
    done
done
