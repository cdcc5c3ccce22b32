#!/usr/bin/env bash
# The proxy suite (`just test-proxy`): signal-api, home-peer, beeline-proxy
# and a Python http.server home service, driven by curl and the official
# OpenAI Python SDK, all inside a fresh network namespace that has only
# loopback. Installs curl and the `openai` package when missing. Expects the
# binaries built in ${BEELINE_BIN_DIR:-target/debug}. Needs root.
# Extra arguments go to the test driver (unittest names, e.g. ProxyTest.test_methods).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/netns.sh
. "$repo_root/tests/lib/netns.sh"

command -v curl >/dev/null 2>&1 || { apt-get install -y --no-install-recommends curl || { apt-get update && apt-get install -y --no-install-recommends curl; }; }
command -v ip >/dev/null 2>&1 || { apt-get install -y --no-install-recommends iproute2 || { apt-get update && apt-get install -y --no-install-recommends iproute2; }; }
if ! python3 -c 'import openai' 2>/dev/null; then
    echo "tests/proxy: installing the openai package" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<3'
fi

bin_dir="${BEELINE_BIN_DIR:-target/debug}"
case "$bin_dir" in
    /*) ;;
    *) bin_dir="$repo_root/$bin_dir" ;;
esac
for bin in signal-api home-peer beeline-proxy; do
    [ -x "$bin_dir/$bin" ] || { echo "tests/proxy: $bin_dir/$bin is missing (cargo build --bins)" >&2; exit 1; }
done

ns="beeline-px-$$"
cleanup() { netns_destroy "$ns"; }
netns_traps cleanup
netns_add "$ns"

ip netns exec "$ns" env BEELINE_BIN_DIR="$bin_dir" \
    timeout 900 python3 "$here/test_proxy.py" -v "$@"
