#!/usr/bin/env bash
# Network namespaces for `just bench` (see bins/beeline-bench/src/far.rs):
#
#   netns.sh up   PREFIX   creates PREFIX-lo (loopback only) and the near/far
#                          triangle PREFIX-browser, PREFIX-vps, PREFIX-home;
#                          prints `delay=netem` when the browser–vps link got
#                          125 ms each way from tc netem, `delay=proxy` when
#                          the kernel has no sch_netem (the bench then delays
#                          that link with its userspace proxy instead)
#   netns.sh down PREFIX   kills whatever still runs in them and deletes them
#
#   browser 10.77.1.1 ──── direct, no delay ──── 10.77.1.2 home
#   browser 10.77.2.1 ── far link, +125 ms ──── 10.77.2.2 vps
#   vps     10.77.3.1 ──── tunnel, no delay ──── 10.77.3.2 home
#
# No namespace has a default route or a link to the host, so no packet of
# the bench can leave them. Must run as root.
set -euo pipefail

# shellcheck source=../lib/netns.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/netns.sh"

cmd="${1:?usage: netns.sh up|down PREFIX}"
prefix="${2:?usage: netns.sh up|down PREFIX}"
delay_ms="${BEELINE_BENCH_DELAY_MS:-125}"
names=("$prefix-lo" "$prefix-browser" "$prefix-vps" "$prefix-home")

down() {
    netns_destroy "${names[@]}"
}

up() {
    down
    netns_add "${names[@]}"
    local b="$prefix-browser" v="$prefix-vps" h="$prefix-home"
    netns_link "$b" bh 10.77.1.1/24 "$h" hb 10.77.1.2/24
    netns_link "$b" bv 10.77.2.1/24 "$v" vb 10.77.2.2/24
    netns_link "$v" vh 10.77.3.1/24 "$h" hv 10.77.3.2/24
    if ip netns exec "$b" tc qdisc add dev bv root netem delay "${delay_ms}ms" 2>/dev/null &&
        ip netns exec "$v" tc qdisc add dev vb root netem delay "${delay_ms}ms" 2>/dev/null; then
        echo "delay=netem"
    else
        echo "delay=proxy"
    fi
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: netns.sh up|down PREFIX" >&2; exit 2 ;;
esac
