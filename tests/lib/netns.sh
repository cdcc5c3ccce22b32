# Network-namespace helpers shared by the test and bench scripts
# (tests/browser/run.sh, tests/interop/run.sh, tests/nat/run.sh,
# tests/bench/netns.sh). Source it; it defines functions only. Needs root.
#
#   netns_add NS...          creates each namespace with its loopback up and
#                            nothing else: no link to the host, no route
#   netns_link NS_A IF_A ADDR_A NS_B IF_B ADDR_B
#                            a veth pair between two namespaces, IF_A in NS_A
#                            and IF_B in NS_B, with ADDR_* (CIDR) and up
#   netns_default_route NS IF ADDR GW_NS GW_IF GW_ADDR
#                            netns_link, then a default route in NS via
#                            GW_ADDR, so NS has a route "out" that ends in
#                            GW_NS (a namespace the caller created, holding
#                            nothing else). Firefox gathers no host ICE
#                            candidate in a namespace without a default route
#   netns_destroy NS...      kills whatever still runs in the namespaces
#                            (all of it was started by the caller), then
#                            deletes them; missing ones are skipped
#   netns_traps CLEANUP      runs the function CLEANUP on exit, and exits
#                            130 on SIGINT and 143 on SIGTERM (so it runs)

netns_add() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
}

netns_link() {
    ip -n "$1" link add "$2" type veth peer name "$5" netns "$4"
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

netns_default_route() {
    netns_link "$@"
    ip -n "$1" route add default via "${6%/*}"
}

netns_destroy() {
    local ns pids
    for ns in "$@"; do
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -9 $pids 2>/dev/null || true
        fi
    done
    for ns in "$@"; do
        ip netns delete "$ns" 2>/dev/null || true
    done
}

netns_traps() {
    # shellcheck disable=SC2064
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
