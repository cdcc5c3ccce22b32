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
#   outage   direct path cut for 30 s during a 100 MB echo, with data queued
#            both ways, then healed, with no ICE restart: echoed bytes must
#            flow again within 2 s of the heal (printed), and all 100 MB
#            come back intact. Sans-I/O stack only: webrtc-sctp 0.17 waits
#            out its backed-off retransmission timer (docs/transport.md).
#   outage-20s the same with a 20 s cut. The 30 s cut happens to end just
#            before SCTP's fifth backed-off retransmission (1+2+4+8+16 s), so
#            it passes even without bringing the timer forward; after 20 s
#            the timer would wait ~11 s more (measured with the resume
#            disabled), so this case fails without it.
#   turn-tcp all UDP dropped at both NATs; coturn also listens on TCP 3478
#            and both peers get only turn:203.0.113.1:3478?transport=tcp.
#   turn-tls the same with coturn on TLS 5349 (a CA and a certificate for
#            203.0.113.1 that the test makes with openssl) and only
#            turns:203.0.113.1:5349?transport=tcp.
#            In both, a control proves the path works for a TURN client
#            that speaks TCP/TLS (coturn's turnutils_uclient, two clients
#            relaying to each other; TLS verified against the test's CA).
#            On the sans-I/O stack both peers allocate over TCP (resp. TLS,
#            trusting the test's CA through --turn-ca): the connection must
#            use a relayed pair, carry the data, log the allocation over the
#            right transport and log no WARN; then, without --turn-ca, the
#            TLS case must fail (certificate not trusted, said at WARN). On
#            webrtc-ice 0.17, which gathers no relayed candidate over TCP or
#            TLS (docs/transport.md, "TURN over TCP and TLS"), the cases
#            assert that the URL is skipped with a WARN line naming it and
#            that the connection fails within the 8 s budget.
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

# tls_material DIR: a throwaway CA and a certificate for 203.0.113.1 it
# signs (coturn's TLS listener); nothing else trusts the CA.
tls_material() {
    local dir="$1"
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=beeline NAT test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=203.0.113.1" \
        -keyout "$dir/turn.key" -out "$dir/turn.csr" 2>/dev/null
    printf 'subjectAltName=IP:203.0.113.1\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
    openssl x509 -req -in "$dir/turn.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 1 -extfile "$dir/ext.cnf" -out "$dir/turn.pem" 2>/dev/null
}

# setup [SCENARIO]: the namespaces and coturn (TURN over UDP only, plus TCP
# for turn-tcp and TLS for turn-tls).
setup() {
    local scenario="${1:-}"
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

    local listeners="no-tls
no-tcp" wait_for="udp 203.0.113.1:3478"
    case "$scenario" in
        turn-tcp)
            listeners="no-tls"
            wait_for="tcp 203.0.113.1:3478"
            ;;
        turn-tls)
            tls_material "$work/tls"
            listeners="tls-listening-port=5349
cert=$work/tls/turn.pem
pkey=$work/tls/turn.key
no-tcp"
            wait_for="tcp 203.0.113.1:5349"
            ;;
    esac
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
$listeners
no-dtls
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
        if in_ns "$pub" ss -"${wait_for:0:1}"ln 2>/dev/null | grep -q "${wait_for#* }"; then
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
# Both peers get "${ice_flags[@]}" (a case may set case_ice_flags instead),
# and dc-drive gets the environment in drive_env (VAR=VALUE words).
# With case_expect_log=(A B ...) set, dc-drive's log must have a line
# holding every one of the strings; with case_reject_log=(A ...) set, no
# line holding any of them.
case_ice_flags=()
case_timeout=90
drive_env=()
case_expect_log=()
case_reject_log=()
run_case() {
    local name="$1"; shift
    local dir="$work/$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    mkfifo "$dir/to-home" "$dir/to-browser"
    local flags=("${ice_flags[@]}")
    [ "${#case_ice_flags[@]}" -eq 0 ] || flags=("${case_ice_flags[@]}")
    in_ns "$home" timeout "$case_timeout" ${BEELINE_NAT_HOME_WRAP:-} "$echo_bin" answer "${flags[@]}" --turn-user "$turn_user" --turn-pass "$turn_pass" \
        <"$dir/to-home" >"$dir/to-browser" 2>"$dir/home.log" &
    local home_pid=$!
    local status=0
    in_ns "$browser" env "${drive_env[@]}" timeout "$case_timeout" "$drive_bin" "${flags[@]}" --turn-secret "$secret" "$@" \
        >"$dir/to-home" <"$dir/to-browser" 2>"$dir/browser.log" || status=$?
    wait "$home_pid" 2>/dev/null || true
    if [ -n "${BEELINE_NAT_DEBUG:-}" ]; then
        for ns in "$pub" "$nath" "$natb"; do
            echo "== $ns"; in_ns "$ns" iptables -L -v -n -x; in_ns "$ns" iptables -t nat -L -v -n -x
        done >"$dir/iptables.txt" 2>&1
    fi
    grep -h '^RESULT\|^connected\|^ICE restart' "$dir/browser.log" | sed "s/^/  [$name] /" || true
    grep -h '^pair' "$dir/home.log" | sed "s/^/  [$name] home: /" || true
    # dc-drive's log with ANSI colours off, for the two checks below.
    local plain_log
    plain_log="$(sed 's/\x1b\[[0-9;]*m//g' "$dir/browser.log")"
    if [ "$status" -eq 0 ] && [ "${#case_expect_log[@]}" -gt 0 ]; then
        # Keep the lines holding every string.
        local lines="$plain_log" want
        for want in "${case_expect_log[@]}"; do
            lines="$(printf '%s\n' "$lines" | grep -F -- "$want" || true)"
        done
        if [ -n "$lines" ]; then
            echo "  [$name] dc-drive logged: $(printf '%s\n' "$lines" | head -1)"
        else
            echo "  [$name] dc-drive's log has no line with all of: ${case_expect_log[*]}"
            status=99
        fi
    fi
    local reject hit
    for reject in "${case_reject_log[@]}"; do
        hit="$(printf '%s\n' "$plain_log" | grep -F -- "$reject" | head -1 || true)"
        if [ "$status" -eq 0 ] && [ -n "$hit" ]; then
            echo "  [$name] dc-drive logged $reject: $hit"
            status=98
        fi
    done
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

# turn_control NAME [turnutils_uclient flags...]: from the browser's
# namespace, two coturn test clients allocate relays over the given
# transport and send each other 20 messages each through them, with the REST
# credentials the home peer gets. Proves the TURN path itself works, so a
# failure of the peers is theirs.
turn_control() {
    local name="$1"; shift
    local out="$work/$name-control.log" status=0
    in_ns "$browser" timeout 30 turnutils_uclient "$@" -y -c -n 20 -m 1 -l 200 \
        -u "$turn_user" -w "$turn_pass" 203.0.113.1 >"$out" 2>&1 || status=$?
    local received
    received="$(grep -o 'tot_recv_msgs=[0-9]*' "$out" | tail -1 | cut -d= -f2)"
    # Relaying is UDP between coturn's relay sockets: a message sent before
    # the other side's permission is in place may be dropped.
    if [ "$status" -eq 0 ] && [ "${received:-0}" -ge 36 ]; then
        echo "  [$name] control: turnutils_uclient $* relayed ${received} of 40 messages"
        echo "ok   $name-control"
        passed=$((passed + 1))
    else
        echo "FAIL $name-control (exit $status, received ${received:-0})"
        sed "s/^/  uclient| /" "$out" | tail -20
        failed=$((failed + 1))
    fi
}

# tls_control: coturn's TLS listener presents the test's certificate, and it
# verifies against the test's CA for the address 203.0.113.1.
tls_control() {
    local out="$work/turn-tls-verify.log"
    if in_ns "$browser" timeout 10 openssl s_client -connect 203.0.113.1:5349 \
        -CAfile "$work/tls/ca.pem" -verify_ip 203.0.113.1 -verify_return_error \
        </dev/null >"$out" 2>&1 && grep -q 'Verify return code: 0 (ok)' "$out"; then
        echo "  [turn-tls] control: coturn's certificate verifies against the test's CA"
        echo "ok   turn-tls-certificate"
        passed=$((passed + 1))
    else
        echo "FAIL turn-tls-certificate"
        sed "s/^/  s_client| /" "$out" | tail -20
        failed=$((failed + 1))
    fi
}

# turn_only_case NAME URL VIA [--turn-ca FILE]: all UDP dropped at both
# NATs; both peers get only URL. On the sans-I/O stack the connection must
# go through the relay reached over VIA (tcp or tls): dc-drive expects a
# relayed pair and moves the usual data, its DEBUG log must show the
# allocation over VIA, and nothing at WARN. What webrtc-ice 0.17 does with
# the URL is asserted too: skipped, said so at WARN, and the connection
# fails within its budget.
turn_only_case() {
    local name="$1" url="$2" via="$3"; shift 3
    in_ns "$nath" iptables -A FORWARD -p udp -j DROP
    in_ns "$natb" iptables -A FORWARD -p udp -j DROP
    case_ice_flags=(--allow 198.51.100.0/24 --allow 192.0.2.0/24 --allow 203.0.113.0/24 --turn "$url" "$@")
    if [ "$BEELINE_STACK" = "0.17" ]; then
        drive_env=("RUST_LOG=beeline_transport=warn")
        case_expect_log=("WARN" "skipping TURN server URL: this transport gathers relayed candidates over UDP only (no TURN over TCP or TLS)" "$url")
        run_case "$name" --expect fail --budget-ms 8000
    else
        drive_env=("RUST_LOG=beeline_transport=debug")
        case_expect_log=("TURN allocation" "server=$url" "via=\"$via\"")
        case_reject_log=(" WARN ")
        run_case "$name" --expect relay
    fi
    case_ice_flags=()
    drive_env=()
    case_expect_log=()
    case_reject_log=()
}

# turn_untrusted_case NAME URL: after turn_only_case on the sans-I/O stack
# (UDP still dropped), the same URL without --turn-ca: nothing trusts
# coturn's certificate, so the TLS handshake must fail, be said so at WARN,
# and the connection fail within its budget.
turn_untrusted_case() {
    local name="$1" url="$2"
    case_ice_flags=(--allow 198.51.100.0/24 --allow 192.0.2.0/24 --allow 203.0.113.0/24 --turn "$url")
    drive_env=("RUST_LOG=beeline_transport=warn")
    case_expect_log=("WARN" "TURN server refused over TLS" "server=$url" "invalid peer certificate")
    run_case "$name" --expect fail --budget-ms 8000
    case_ice_flags=()
    drive_env=()
    case_expect_log=()
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
        outage | outage-20s)
            if [ "$BEELINE_STACK" = 0.17 ]; then
                echo "skip outage on 0.17: webrtc-sctp 0.17's retransmission timer cannot be brought forward (docs/transport.md)"
                return 0
            fi
            local secs=30
            [ "$1" = outage ] || secs=20
            case_timeout=150
            run_case "$1" --expect direct --bytes 100000000 --small 0 --outage-secs "$secs" \
                --cut "ip netns exec $pub iptables -I FORWARD 1 -j DROP" \
                --heal "ip netns exec $pub iptables -D FORWARD 1"
            case_timeout=90
            ;;
        turn-tcp)
            turn_control turn-tcp -t
            turn_only_case turn-tcp "turn:203.0.113.1:3478?transport=tcp" tcp
            ;;
        turn-tls)
            tls_control
            turn_control turn-tls -t -S -E "$work/tls/ca.pem" -p 5349
            turn_only_case turn-tls "turns:203.0.113.1:5349?transport=tcp" tls --turn-ca "$work/tls/ca.pem"
            if [ "$BEELINE_STACK" != "0.17" ]; then
                turn_untrusted_case turn-tls-untrusted "turns:203.0.113.1:5349?transport=tcp"
            fi
            ;;
        *)
            echo "unknown scenario $1" >&2
            return 1
            ;;
    esac
}

scenarios=("$@")
[ "${#scenarios[@]}" -gt 0 ] || scenarios=(direct relay blocked deadpath outage outage-20s turn-tcp turn-tls)
# Every scenario once per transport stack (dc-echo and dc-drive read
# BEELINE_STACK; BEELINE_STACKS narrows the list).
for stack in ${BEELINE_STACKS:-0.17 sansio}; do
    export BEELINE_STACK="$stack"
    echo "# transport stack: $stack"
    for s in "${scenarios[@]}"; do
        setup "$s"
        scenario "$s"
        teardown
    done
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
