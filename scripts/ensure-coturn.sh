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

# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
log "installing coturn"
apt_install coturn
command -v turnserver >/dev/null 2>&1 || { log "coturn installed but turnserver is not on PATH"; exit 1; }
