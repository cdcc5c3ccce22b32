#!/usr/bin/env bash
# Interop tests for beeline-transport against independent implementations:
# headless Chromium (both as offerer and as answerer) and aiortc (offerer),
# each moving 10 MB and 1,000 small messages through `dc-echo`.
#
# Everything runs inside a fresh network namespace with only loopback, so no
# WebRTC packet can reach any other address. Installs what is missing
# (Chromium and playwright-core via scripts/ensure-browser-deps.sh, aiortc in
# a venv via scripts/ensure-python-deps.sh). Must run as root. Extra
# arguments go to `node --test`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/netns.sh
. "$repo_root/tests/lib/netns.sh"

bash "$repo_root/scripts/ensure-browser-deps.sh"
python="$(bash "$repo_root/scripts/ensure-python-deps.sh")"
if [ -z "${BEELINE_EXAMPLES_DIR:-}" ]; then
    (cd "$repo_root" && cargo build -q -p beeline-transport --example dc-echo)
fi

ns="beeline-interop-$$"
cleanup() { netns_destroy "$ns"; }
netns_traps cleanup
netns_add "$ns"
# aioice skips 127.0.0.1 when it lists host addresses; a second loopback
# address gives it one.
ip -n "$ns" addr add 127.0.0.2/8 dev lo

cd "$here"
ip netns exec "$ns" env BEELINE_PYTHON="$python" node --test --test-concurrency=1 "$@" \
    chromium.test.mjs aiortc.test.mjs
