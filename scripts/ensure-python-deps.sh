#!/usr/bin/env bash
# Makes a Python virtualenv with aiortc (pinned) for the interop tests, and
# prints its python's path on stdout.
#
# The venv lives in ${BEELINE_PY_VENV:-target/interop-venv} (relative to the
# repo root), so it is cached with the build and never touches the system's
# site-packages. Idempotent and fast: when the venv already has the pinned
# version it only checks and exits.
set -euo pipefail

AIORTC_VERSION="1.16.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BEELINE_PY_VENV:-$repo_root/target/interop-venv}"
case "$venv" in
    /*) ;;
    *) venv="$repo_root/$venv" ;;
esac
py="$venv/bin/python"

log() { echo "ensure-python-deps: $*" >&2; }
# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

installed_version() {
    "$py" -c 'import importlib.metadata as m; print(m.version("aiortc"))' 2>/dev/null || true
}

if [ -x "$py" ] && [ "$(installed_version)" = "$AIORTC_VERSION" ]; then
    echo "$py"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    log "installing python3"
    apt_install python3 python3-venv
fi

if [ ! -x "$py" ]; then
    log "creating virtualenv in $venv"
    if ! python3 -m venv "$venv" >&2; then
        log "python3 -m venv failed; installing python3-venv and retrying"
        apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
    fi
fi

log "installing aiortc==$AIORTC_VERSION"
"$py" -m pip install --quiet --disable-pip-version-check "aiortc==$AIORTC_VERSION" >&2
[ "$(installed_version)" = "$AIORTC_VERSION" ] || { log "aiortc $AIORTC_VERSION did not install"; exit 1; }
echo "$py"
