#!/usr/bin/env bash
# Entry point for the browser tests (what CI calls).
#
# Installs what is missing (scripts/ensure-browser-deps.sh), then runs the
# node unit tests and the headless-Chromium end-to-end tests inside a fresh
# network namespace that has only loopback, so no WebRTC packet can reach
# any other address. Expects signal-api, home-peer and demo-chat already
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
cleanup() { netns_destroy "$ns"; }
netns_traps cleanup
netns_add "$ns"

# BEELINE_BROWSER_TESTS picks test files (space-separated); default: all.
tests="${BEELINE_BROWSER_TESTS:-client.unit.test.mjs client.v2.test.mjs client.bodies.test.mjs vectors.test.mjs e2e.test.mjs protocol-v2.test.mjs}"

cd "$here"
# shellcheck disable=SC2086
ip netns exec "$ns" env BEELINE_BIN_DIR="$bin_dir" \
    node --test "$@" $tests
