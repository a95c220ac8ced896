#!/usr/bin/env bash
# The metadata cache on S3: the same commands with the cache (second run onwards) and with
# --no-cache, against a local moto S3 server, five runs each; prints min–max seconds.
#
#   bench/cache.sh [HOLDFAST_BINARY]     (default: target/release/holdfast, built if missing)
#
# moto answers on localhost in well under a millisecond, so these times count requests and bytes
# moved, not network latency; against a real S3 endpoint each avoided request saves its round trip.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
bin="${1:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release -p holdfast >/dev/null)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/holdfast"
fi
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
moto_server -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$port" >/dev/null && break; sleep 0.1; done

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench HOLDFAST_PASSWORD=bench
export HOLDFAST_REPOSITORY="s3://bench/repo" HOLDFAST_CACHE_DIR="$work/cache"
hf() { "$bin" repo --quiet --s3-endpoint "http://127.0.0.1:$port" "$@"; }
hf init >/dev/null 2>&1

# 2,000 directories of 5 small files; 30 snapshots, each changing one directory.
python3 - "$work/data" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(2000):
    p = os.path.join(root, f"d{d // 100}", f"e{d}")
    os.makedirs(p, exist_ok=True)
    for f in range(5):
        with open(os.path.join(p, f"f{f}"), "w") as out:
            out.write(f"{d}-{f}\n" * 200)
PY
for i in $(seq 30); do
    echo "change $i" > "$work/data/d0/e0/f0"
    hf backup "$work/data" >/dev/null
done

time_it() { # label, command...
    local label="$1"; shift
    local times=()
    for _ in 1 2 3 4 5; do
        local start end
        start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc)")
    done
    printf '| %s | %s |\n' "$label" "$(printf '%s\n' "${times[@]}" | sort -n | awk 'NR==1{min=$1} {max=$1} END{printf "%.2f–%.2f", min, max}')"
}
echo "| command (5 runs) | seconds |"
echo "|---|---|"
hf snapshots >/dev/null   # fills the cache
time_it "snapshots, cached" hf snapshots
time_it "snapshots, --no-cache" hf snapshots --no-cache
time_it "ls -l latest, cached" hf ls --long latest
time_it "ls -l latest, --no-cache" hf ls --long latest --no-cache
time_it "backup, one file changed, cached" hf backup "$work/data"
time_it "backup, one file changed, --no-cache" hf backup --no-cache "$work/data"
