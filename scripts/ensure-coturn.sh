#!/usr/bin/env bash
# Installs Debian's coturn (the `turnserver` binary) when it is missing, for
# the signal-server test that proves TURN credentials against a real coturn.
# Idempotent: when turnserver is present it only checks and exits.
# Runs as root (it calls apt-get). The package's own service is never
# started: Debian ships it disabled, and the test runs its own instance on
# loopback with a temporary configuration.
set -euo pipefail

log() { echo "ensure-coturn: $*" >&2; }

if command -v turnserver >/dev/null 2>&1; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log "installing coturn"
# Refresh the package lists only when the first attempt fails, since a fresh
# image often has stale or empty lists.
if ! apt-get install -y --no-install-recommends coturn; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update
    apt-get install -y --no-install-recommends coturn
fi
command -v turnserver >/dev/null 2>&1 || { log "coturn installed but turnserver is not on PATH"; exit 1; }
