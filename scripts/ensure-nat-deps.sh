#!/usr/bin/env bash
# Installs what tests/nat needs when it is missing: iproute2 (`ip netns`),
# iptables (NAT and packet drops inside the test's namespaces), openssl (TURN
# REST credentials, and the CA and certificate of the TURN-over-TLS case) and
# coturn (through scripts/ensure-coturn.sh; it brings turnutils_uclient, the
# TCP/TLS control client). Idempotent: when everything is present
# it only checks and exits. Runs as root (it calls apt-get).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "ensure-nat-deps: $*" >&2; }
# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
bash "$repo_root/scripts/ensure-coturn.sh"
