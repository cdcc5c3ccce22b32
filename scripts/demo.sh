#!/usr/bin/env bash
# Starts the whole chain on loopback: demo-chat (the "home" service),
# signal-api (the public server) and home-peer (answering WebRTC offers and
# keeping the home link, over which signal-api relays the normal path: no
# tunnel), then prints the URL to open.
#
# Usage: scripts/demo.sh [ALLOW]   ALLOW: comma-separated IPs/CIDRs for ICE
# Env: BEELINE_DEMO_PORT (8080), BEELINE_DEMO_CHAT_PORT (3000),
#      BEELINE_DEMO_DIR (data directory; a temp dir by default),
#      BEELINE_BIN_DIR (target/debug),
#      BEELINE_DEMO_RELAY (link: the normal path goes over home-peer's home
#      link, the default; upstream: signal-api relays straight to demo-chat
#      with --relay-upstream, as a deployment with its own tunnel does).
set -euo pipefail
cd "$(dirname "$0")/.."
allow=${1:-}
port=${BEELINE_DEMO_PORT:-8080}
chat_port=${BEELINE_DEMO_CHAT_PORT:-3000}
bin=${BEELINE_BIN_DIR:-target/debug}
data=${BEELINE_DEMO_DIR:-$(mktemp -d -t beeline-demo.XXXXXX)}
mkdir -p "$data"
token_file="$data/home-token"
[[ -s "$token_file" ]] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token_file")

case ${BEELINE_DEMO_RELAY:-link} in
    link) relay_upstream= ;;
    upstream) relay_upstream="http://127.0.0.1:$chat_port" ;;
    *) echo "BEELINE_DEMO_RELAY must be link or upstream" >&2; exit 2 ;;
esac

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/demo-chat" --listen "127.0.0.1:$chat_port" &
pids+=($!)
"$bin/signal-api" --listen "127.0.0.1:$port" --db "$data/signal.db" \
    --home-token-file "$token_file" --browser-auth open \
    ${relay_upstream:+--relay-upstream "$relay_upstream"} &
pids+=($!)

for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
# home-peer once signal-api answers, so its first poll does not fail.
"$bin/home-peer" --signal-url "http://127.0.0.1:$port/webrtc" --token-file "$token_file" \
    --upstream "http://127.0.0.1:$chat_port" ${allow:+--allow-ip "$allow"} &
pids+=($!)
# The normal path needs the home link (unless relaying to the upstream).
for _ in $(seq 100); do
    [[ -n $relay_upstream ]] && break
    curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null \
        | grep -q 'beeline_home_link_connected{home="home"} 1' && break
    sleep 0.1
done
cat <<MSG

  beeline demo is running (data in $data)
  Open  http://127.0.0.1:$port/          (direct path: ⚡ direct appears in the header)
        http://127.0.0.1:$port/?webrtc=0 (WebRTC off: the same chat through the relay, ${relay_upstream:-over the home link})
        http://127.0.0.1:$port/live      (a live WebSocket: watch its path)
  Ctrl-C stops everything.

MSG
wait
