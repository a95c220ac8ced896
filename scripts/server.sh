#!/usr/bin/env bash
# Builds holdfast from source and starts the embedded server (HTTPS on 127.0.0.1:6443, data in
# ${XDG_DATA_HOME:-$HOME/.local/share}/holdfast). Extra arguments go to `holdfast server`,
# e.g. `bash scripts/server.sh --data-dir ./data --listen 127.0.0.1:7443`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -p holdfast -- server "$@"
