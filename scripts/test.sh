#!/usr/bin/env bash
# The one test command: installs what the tests need, then format check, clippy, and every test
# of the workspace. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# A target dir outside the clone, so a fresh clone reuses earlier builds on the same machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One build from a clean tree gains nothing from incremental artifacts, which cost gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Test binaries spawn servers and clients; two cores run them best a few at a time.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"

step() { printf '\n==> %s\n' "$*"; }

step "install missing system packages"
bash scripts/install-deps.sh

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

step "summary"
# One line per test binary ("test result: ok. N passed; M failed; ..."), then the totals.
grep -E '^test result:' "$log" || true
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
