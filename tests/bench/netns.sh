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

cmd="${1:?usage: netns.sh up|down PREFIX}"
prefix="${2:?usage: netns.sh up|down PREFIX}"
delay_ms="${BEELINE_BENCH_DELAY_MS:-125}"
names=("$prefix-lo" "$prefix-browser" "$prefix-vps" "$prefix-home")

down() {
    for ns in "${names[@]}"; do
        local pids
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -9 $pids 2>/dev/null || true
        fi
        ip netns delete "$ns" 2>/dev/null || true
    done
}

link() { # link NS_A IF_A ADDR_A NS_B IF_B ADDR_B
    ip -n "$1" link add "$2" type veth peer name "$5" netns "$4"
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$4" addr add "$6/24" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

up() {
    down
    for ns in "${names[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    local b="$prefix-browser" v="$prefix-vps" h="$prefix-home"
    link "$b" bh 10.77.1.1 "$h" hb 10.77.1.2
    link "$b" bv 10.77.2.1 "$v" vb 10.77.2.2
    link "$v" vh 10.77.3.1 "$h" hv 10.77.3.2
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
