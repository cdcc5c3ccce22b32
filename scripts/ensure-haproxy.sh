#!/usr/bin/env bash
# Installs Debian's haproxy when it is missing, for the test that runs three
# signal-api instances behind a real load balancer
# (bins/signal-api/tests/multi_instance.rs). Idempotent: with haproxy
# present it only checks and exits. Runs as root (it calls apt-get). The
# package's own service is not used: the test runs its own haproxy as an
# unprivileged user with a temporary configuration on loopback.
set -euo pipefail

log() { echo "ensure-haproxy: $*" >&2; }

if command -v haproxy >/dev/null 2>&1; then
    exit 0
fi

# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
log "installing haproxy"
apt_install haproxy
command -v haproxy >/dev/null 2>&1 || { log "haproxy installed but not on PATH"; exit 1; }
