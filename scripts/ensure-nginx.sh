#!/usr/bin/env bash
# Installs Debian's nginx and openssl when they are missing, for the test
# that runs signal-api behind nginx with TLS (tests/browser/nginx.test.mjs,
# with docs/examples/nginx.conf and a certificate it makes with openssl).
# Idempotent: with both present it only checks and exits. Runs as root (it
# calls apt-get). Debian 12's nginx-light is enough; later releases ship
# only nginx. The package's own service is not used: the test runs its own
# nginx with a temporary configuration on loopback.
set -euo pipefail

log() { echo "ensure-nginx: $*" >&2; }

# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl"
    apt_install openssl
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    log "installing nginx"
    apt_install nginx-light || apt_install nginx
fi
