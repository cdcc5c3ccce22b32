#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries when they are missing, for
# the tests that run the PostgreSQL store (the store contract suite and the
# multi-instance tests). Idempotent: with /usr/lib/postgresql/*/bin/initdb
# present it only checks and exits.
# Runs as root (it calls apt-get). No cluster is created and no service is
# started: the tests run their own throwaway cluster as an unprivileged user
# in a temporary directory, on loopback (crates/test-support/src/postgres.rs).
set -euo pipefail

log() { echo "ensure-postgres: $*" >&2; }

have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

if have_initdb; then
    exit 0
fi

# Debian's package would create and start a "main" cluster; the tests want
# none.
mkdir -p /etc/postgresql-common
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
fi
# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
log "installing postgresql"
apt_install postgresql
have_initdb || { log "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"; exit 1; }
