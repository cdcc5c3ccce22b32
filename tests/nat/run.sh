#!/usr/bin/env bash
# NAT traversal and dead-path tests for beeline-transport, in network
# namespaces this script creates (and deletes on exit). Nothing here can
# reach an address outside them: the namespaces are wired only to each
# other, never to the host's network.
#
#              public (203.0.113.0/24, coturn on 203.0.113.1:3478)
#             /                                                  \
#   nat-home (MASQUERADE)                              nat-browser (MASQUERADE)
#        |  198.51.100.0/24                               |  192.0.2.0/24
#      home: dc-echo answers                          browser: dc-drive offers
#
# Scenarios (each a fresh set of namespaces):
#   direct   STUN + TURN available, nothing blocked: a direct
#            (host/srflx/prflx) pair must win, never the relay.
#   relay    UDP between the two NATs dropped in "public": TURN relay.
#   blocked  all UDP dropped at both NATs: failure reported within 8 s.
#   deadpath direct path cut mid-transfer: Disconnected within 5 s; after
#            the path heals an ICE restart brings the channel back.
#
# Signaling between the two peers is two pipes (see the examples'
# support/signal.rs). Must run as root. Usage: tests/nat/run.sh [scenario...]
#
# Debugging: BEELINE_NAT_LOGS=DIR keeps every log; BEELINE_NAT_DEBUG=1 adds
# iptables counters; BEELINE_NAT_HOME_WRAP / BEELINE_NAT_TURN_WRAP prefix the
# home peer's / coturn's command (e.g. "strace -f -o FILE"); RUST_LOG is
# honoured by dc-drive. BEELINE_EXAMPLES_DIR skips the cargo build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/netns.sh
. "$repo_root/tests/lib/netns.sh"
bash "$repo_root/scripts/ensure-nat-deps.sh"

if [ -z "${BEELINE_EXAMPLES_DIR:-}" ]; then
    (cd "$repo_root" && cargo build -q -p beeline-transport --example dc-echo --example dc-drive)
    BEELINE_EXAMPLES_DIR="$repo_root/target/debug/examples"
fi
echo_bin="$BEELINE_EXAMPLES_DIR/dc-echo"
drive_bin="$BEELINE_EXAMPLES_DIR/dc-drive"

tag="$$"
# BEELINE_NAT_LOGS=DIR keeps every log (coturn, both peers) in DIR.
work="${BEELINE_NAT_LOGS:-$(mktemp -d)}"
mkdir -p "$work"
secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
namespaces=()

teardown() {
    netns_destroy "${namespaces[@]}"
    namespaces=()
}
cleanup() {
    teardown
    [ -n "${BEELINE_NAT_LOGS:-}" ] || rm -rf "$work"
}
netns_traps cleanup

pub="bl-pub-$tag"; nath="bl-nath-$tag"; natb="bl-natb-$tag"; home="bl-home-$tag"; browser="bl-brow-$tag"; sink="bl-sink-$tag"

in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }

setup() {
    namespaces=("$pub" "$nath" "$natb" "$home" "$browser" "$sink")
    netns_add "${namespaces[@]}"
    netns_link "$pub" ph 203.0.113.1/30 "$nath" wan 203.0.113.2/30
    netns_link "$pub" pb 203.0.113.5/30 "$natb" wan 203.0.113.6/30
    netns_link "$nath" lan 198.51.100.1/24 "$home" eth0 198.51.100.2/24
    netns_link "$natb" lan 192.0.2.1/24 "$browser" eth0 192.0.2.2/24
    # Like the internet, the public side swallows packets to private
    # networks (a "sink" namespace that does not forward) instead of
    # refusing them: coturn gives up relaying for an allocation once a send
    # on its relay socket fails with ENETUNREACH.
    netns_link "$pub" void 203.0.113.9/30 "$sink" eth0 203.0.113.10/30
    ip -n "$pub" route add 192.0.2.0/24 via 203.0.113.10
    ip -n "$pub" route add 198.51.100.0/24 via 203.0.113.10
    ip -n "$nath" route add default via 203.0.113.1
    ip -n "$natb" route add default via 203.0.113.5
    ip -n "$home" route add default via 198.51.100.1
    ip -n "$browser" route add default via 192.0.2.1
    for ns in "$pub" "$nath" "$natb"; do
        in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
    done
    for ns in "$nath" "$natb"; do
        in_ns "$ns" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
        # Like a home router, drop unsolicited inbound packets. Dropping them
        # also keeps their conntrack entries from being confirmed; otherwise a
        # peer's early check would claim the tuple the NAT needs for our own
        # outbound mapping, MASQUERADE would pick another port, and the NAT
        # would behave as a symmetric one.
        in_ns "$ns" iptables -A INPUT -i wan -p udp -m conntrack --ctstate NEW -j DROP
    done

    cat >"$work/turnserver.conf" <<CONF
listening-ip=203.0.113.1
relay-ip=203.0.113.1
listening-port=3478
min-port=49152
max-port=49999
realm=beeline.test
use-auth-secret
static-auth-secret=$secret
fingerprint
no-tls
no-dtls
no-tcp
no-tcp-relay
no-cli
no-multicast-peers
pidfile=$work/turnserver.pid
log-file=$work/turnserver.log
simple-log

CONF
    in_ns "$pub" ${BEELINE_NAT_TURN_WRAP:-} turnserver -c "$work/turnserver.conf" >/dev/null 2>&1 &
    local i
    for i in $(seq 1 50); do
        if in_ns "$pub" ss -uln 2>/dev/null | grep -q '203.0.113.1:3478'; then
            return 0
        fi
        sleep 0.1
    done
    echo "coturn did not start:" >&2
    cat "$work/turnserver.log" >&2 || true
    return 1
}

ice_flags=(--allow 198.51.100.0/24 --allow 192.0.2.0/24 --allow 203.0.113.0/24
           --stun stun:203.0.113.1:3478 --turn "turn:203.0.113.1:3478?transport=udp")
# coturn REST credentials for the home side, as signal-api issues them
# (dc-drive derives its own from the secret, in Rust).
turn_user="$(( $(date +%s) + 600 )):home"
turn_pass="$(printf '%s' "$turn_user" | openssl dgst -sha1 -hmac "$secret" -binary | base64)"

passed=0
failed=0

# run_case NAME [dc-drive args...]: one home/browser pair over two pipes.
run_case() {
    local name="$1"; shift
    local dir="$work/$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    mkfifo "$dir/to-home" "$dir/to-browser"
    in_ns "$home" timeout 90 ${BEELINE_NAT_HOME_WRAP:-} "$echo_bin" answer "${ice_flags[@]}" --turn-user "$turn_user" --turn-pass "$turn_pass" \
        <"$dir/to-home" >"$dir/to-browser" 2>"$dir/home.log" &
    local home_pid=$!
    local status=0
    in_ns "$browser" timeout 90 "$drive_bin" "${ice_flags[@]}" --turn-secret "$secret" "$@" \
        >"$dir/to-home" <"$dir/to-browser" 2>"$dir/browser.log" || status=$?
    wait "$home_pid" 2>/dev/null || true
    if [ -n "${BEELINE_NAT_DEBUG:-}" ]; then
        for ns in "$pub" "$nath" "$natb"; do
            echo "== $ns"; in_ns "$ns" iptables -L -v -n -x; in_ns "$ns" iptables -t nat -L -v -n -x
        done >"$dir/iptables.txt" 2>&1
    fi
    grep -h '^RESULT\|^connected\|^ICE restart' "$dir/browser.log" | sed "s/^/  [$name] /"
    grep -h '^pair' "$dir/home.log" | sed "s/^/  [$name] home: /" || true
    if [ "$status" -eq 0 ]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name (exit $status)"
        sed "s/^/  browser| /" "$dir/browser.log" | tail -40
        sed "s/^/  home| /" "$dir/home.log" | tail -20
        failed=$((failed + 1))
    fi
}

scenario() {
    case "$1" in
        direct)
            run_case direct --expect direct
            ;;
        relay)
            # Nothing the NATs send each other gets through; coturn (INPUT/OUTPUT of
            # "public") still does.
            in_ns "$pub" iptables -A FORWARD -p udp -j DROP
            if [ -n "${BEELINE_NAT_DEBUG:-}" ]; then
                in_ns "$pub" iptables -A INPUT -p udp --dport 49152:49999
                in_ns "$pub" iptables -A INPUT -p udp --dport 3478
                in_ns "$pub" iptables -A OUTPUT -p udp --sport 49152:49999
                in_ns "$pub" iptables -A OUTPUT -p udp --sport 3478
            fi
            run_case relay --expect relay
            ;;
        blocked)
            in_ns "$nath" iptables -A FORWARD -p udp -j DROP
            in_ns "$natb" iptables -A FORWARD -p udp -j DROP
            run_case blocked --expect fail --budget-ms 8000
            ;;
        deadpath)
            run_case deadpath --expect direct \
                --cut "ip netns exec $pub iptables -I FORWARD 1 -j DROP" \
                --heal "ip netns exec $pub iptables -D FORWARD 1"
            ;;
        *)
            echo "unknown scenario $1" >&2
            return 1
            ;;
    esac
}

scenarios=("$@")
[ "${#scenarios[@]}" -gt 0 ] || scenarios=(direct relay blocked deadpath)
for s in "${scenarios[@]}"; do
    setup
    scenario "$s"
    teardown
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
