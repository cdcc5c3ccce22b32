#!/usr/bin/env bash
# Interop tests for beeline-transport against independent implementations:
# headless Chromium and Firefox ESR (each both as offerer and as answerer)
# and aiortc (offerer),
# each moving 10 MB and 1,000 small messages through `dc-echo`.
#
# Everything runs inside a fresh network namespace (loopback, plus a veth
# default route into a second, empty namespace for Firefox), so no WebRTC
# packet can reach any other address. Installs what is missing
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
gw="beeline-intgw-$$"
ns_addr=198.18.0.1
cleanup() { netns_destroy "$ns" "$gw"; }
netns_traps cleanup
netns_add "$ns" "$gw"
# Firefox gathers no host candidate without a default route: a veth to a
# second namespace that holds nothing else (as tests/browser/run.sh does).
netns_default_route "$ns" eth0 "$ns_addr/30" "$gw" eth0 198.18.0.2/30
# aioice skips 127.0.0.1 when it lists host addresses; a second loopback
# address gives it one.
ip -n "$ns" addr add 127.0.0.2/8 dev lo

cd "$here"
# Once per transport stack (dc-echo reads BEELINE_STACK; the tests check it).
for stack in ${BEELINE_STACKS:-0.17 sansio}; do
    echo "# transport stack: $stack"
    ip netns exec "$ns" env BEELINE_STACK="$stack" BEELINE_PYTHON="$python" BEELINE_NS_ADDR="$ns_addr" \
        node --test --test-concurrency=1 "$@" chromium.test.mjs firefox.test.mjs aiortc.test.mjs
done
