#!/usr/bin/env bash
# Fails if any crate of the WebRTC media stack is in the dependency graph.
set -euo pipefail
cd "$(dirname "$0")/.."
banned='^(webrtc|rtp|rtcp|webrtc-srtp|interceptor|webrtc-media|webrtc-dtls|rtc|rtc-rtp|rtc-rtcp|rtc-srtp|rtc-interceptor|rtc-media)$'
found=$(cargo metadata --format-version 1 --locked | python3 -c '
import json, re, sys
banned = re.compile(sys.argv[1])
meta = json.load(sys.stdin)
print("\n".join(sorted({p["name"] for p in meta["packages"] if banned.match(p["name"])})))
' "$banned")
if [[ -n "$found" ]]; then
    echo "media-stack crates in the dependency graph:" >&2
    echo "$found" >&2
    exit 1
fi
echo "no media-stack crates in the dependency graph"
