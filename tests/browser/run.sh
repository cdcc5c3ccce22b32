#!/usr/bin/env bash
# Entry point for the browser tests (what CI calls).
#
# Installs what is missing (scripts/ensure-browser-deps.sh), then runs the
# node unit tests and the headless Chromium and Firefox end-to-end tests
# inside a fresh network namespace, so no WebRTC packet can reach any other
# address. The namespace has loopback and one veth link, 198.18.0.1/30, whose
# other end (198.18.0.2, the default route) sits in a second namespace of
# this run that holds nothing else: Firefox gathers no host candidate
# without a default route. The tests get the address as BEELINE_NS_ADDR
# (home-peer's --allow-ip for Firefox runs). Expects signal-api, home-peer
# and demo-chat already
# built in ${BEELINE_BIN_DIR:-target/debug} (relative to the repo root).
# Must run as root (apt-get, ip netns). Extra arguments go to `node --test`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/netns.sh
. "$repo_root/tests/lib/netns.sh"

bash "$repo_root/scripts/ensure-browser-deps.sh"

bin_dir="${BEELINE_BIN_DIR:-target/debug}"
case "$bin_dir" in
    /*) ;;
    *) bin_dir="$repo_root/$bin_dir" ;;
esac
for bin in signal-api home-peer demo-chat; do
    if [ ! -x "$bin_dir/$bin" ]; then
        echo "run.sh: warning: $bin_dir/$bin is missing; tests that need it will fail (cargo build --bins)" >&2
    fi
done

ns="beeline-br-$$"
gw="beeline-brgw-$$"
ns_addr=198.18.0.1
cleanup() { netns_destroy "$ns" "$gw"; }
netns_traps cleanup
netns_add "$ns" "$gw"
netns_default_route "$ns" eth0 "$ns_addr/30" "$gw" eth0 198.18.0.2/30

# BEELINE_BROWSER_TESTS picks test files (space-separated); default: all.
tests="${BEELINE_BROWSER_TESTS:-client.unit.test.mjs client.v2.test.mjs client.bodies.test.mjs client.cookies.test.mjs client.loopback.test.mjs vectors.test.mjs e2e.test.mjs protocol-v2.test.mjs bodies.test.mjs cookies.test.mjs websocket.test.mjs loopback.test.mjs client.resume.test.mjs migration.test.mjs ice-restart.test.mjs balancer.test.mjs nginx.test.mjs}"

cd "$here"
# shellcheck disable=SC2086
ip netns exec "$ns" env BEELINE_BIN_DIR="$bin_dir" BEELINE_NS_ADDR="$ns_addr" \
    node --test "$@" $tests
