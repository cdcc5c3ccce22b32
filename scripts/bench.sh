#!/usr/bin/env bash
# `just bench`: beeline's benchmark suite, end to end.
#
# 1. installs what is missing (Chromium, iproute2, playwright-core) and
#    builds the release binaries;
# 2. creates the bench's network namespaces (tests/bench/netns.sh): one with
#    only loopback, and the browser/vps/home triangle for near vs far, with
#    125 ms each way on the far link (tc netem, or the bench's userspace
#    delay proxy when the kernel has no sch_netem);
# 3. runs the signaling bench (signal-api's `signal` bench, target/bench/signal.json), the size figure
#    (scripts/size.sh), the loopback figures (Rust, then headless Chromium)
#    and near vs far;
# 4. prints one table with goal and met/not met per row, and writes
#    target/bench/report.json, target/bench/latency.svg, docs/bench/latency.svg
#    and the README's bench section.
#
# Environment:
#   BEELINE_BENCH_SKIP      comma-separated phases to skip: signal,size,loopback,far,readme
#   BEELINE_BENCH_LOOPBACK  extra flags for `beeline-bench loopback`
#                           (e.g. "--sse-events 250 --transfer-reps 1")
#
# Every phase is bounded in time; namespaces and processes are removed on
# exit, also on failure or Ctrl-C. Must run as root (apt-get, ip netns).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
started=$(date +%s)
load_at_start="$(cut -d' ' -f1-3 /proc/loadavg)"
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
out="$target_dir/bench"
bench="$target_dir/release/beeline-bench"
skip=",${BEELINE_BENCH_SKIP:-},"
skipped() { [[ "$skip" == *",$1,"* ]]; }
log() { echo "bench.sh: $*" >&2; }

bash scripts/ensure-browser-deps.sh
command -v tc >/dev/null 2>&1 || { log "installing iproute2 (tc)"; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2; }

# One build for the binaries and signal-api's bench: built separately (as
# `cargo bench` would), the bench's dev-dependency features make cargo compile
# every shared dependency a second time, which costs minutes on a fresh machine.
log "building release binaries and signal-api's bench"
build_json="$(cargo build --release --bins --bench signal --message-format=json-render-diagnostics)"
signal_bench="$(printf '%s\n' "$build_json" | sed -n 's/.*"kind":\["bench"\].*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
mkdir -p "$out"
# Results of an earlier run must not pass for this one's.
rm -f "$out"/{rust-loopback,chromium-loopback,far-rust,far-chromium,size,report}.json

prefix="blb$$"
cleanup() { bash tests/bench/netns.sh down "$prefix" || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
delay="$(bash tests/bench/netns.sh up "$prefix" | sed -n 's/^delay=//p')"
if [ "$delay" = "proxy" ]; then
    log "tc netem is not available here (no sch_netem in this kernel); the far link is delayed by beeline-bench's userspace proxy"
fi

if ! skipped signal; then
    log "signaling bench"
    if [ -n "$signal_bench" ]; then
        timeout 300 "$signal_bench" || log "signaling bench failed; its rows show as not measured"
    else
        log "signal-api's bench was not built; its rows show as not measured"
    fi
fi

if ! skipped size; then
    if [ -x scripts/size.sh ] || [ -f scripts/size.sh ]; then
        log "size (scripts/size.sh)"
        if size_out="$(timeout 900 bash scripts/size.sh)"; then
            echo "$size_out" >&2
            delta="$(echo "$size_out" | awk '/^transport delta:/ { print $3 }')"
            base="$(echo "$size_out" | awk '/^baseline/ { print $4 }')"
            example="$(echo "$size_out" | awk '/^dc-echo \(/ { print $3 }')"
            lean="$(echo "$size_out" | awk '/^delta without turn-tls:/ { print $4 }')"
            if [ -n "$delta" ]; then
                printf '{"source": "scripts/size.sh (dc-echo vs size-baseline, size profile)", "baseline_bytes": %s, "example_bytes": %s, "delta_bytes": %s, "delta_mb": %s, "delta_without_turn_tls_bytes": %s, "delta_without_turn_tls_mb": %s}\n' \
                    "${base:-null}" "${example:-null}" "$delta" "$(awk -v d="$delta" 'BEGIN { print d / 1000000 }')" \
                    "${lean:-null}" "$( [ -n "$lean" ] && awk -v d="$lean" 'BEGIN { print d / 1000000 }' || echo null)" >"$out/size.json"
            fi
        else
            log "scripts/size.sh failed; the size row shows as not measured"
        fi
    else
        log "scripts/size.sh is missing; the size row shows as not measured"
    fi
fi

if ! skipped loopback; then
    log "loopback figures (Rust, then Chromium) in namespace $prefix-lo"
    # shellcheck disable=SC2086
    timeout 720 ip netns exec "$prefix-lo" "$bench" loopback --bin-dir "$target_dir/release" --out-dir "$out" \
        --chromium-script tests/bench/chromium.mjs ${BEELINE_BENCH_LOOPBACK:-} ||
        log "the loopback run failed; its rows show as not measured"
fi

if ! skipped far; then
    log "near vs far"
    timeout 420 "$bench" far --bin-dir "$target_dir/release" --out-dir "$out" --delay "$delay" \
        --ns-browser "$prefix-browser" --ns-vps "$prefix-vps" --ns-home "$prefix-home" \
        --chromium-script tests/bench/chromium.mjs ||
        log "the near/far run failed; its rows show as not measured"
fi

readme_args=(--readme README.md --chart-copy docs/bench/latency.svg)
if skipped readme; then readme_args=(); fi
"$bench" report --dir "$out" --far-delay "$delay" --elapsed-secs "$(( $(date +%s) - started ))" \
    --load-at-start "$load_at_start" "${readme_args[@]}"
log "done in $(( $(date +%s) - started )) s"
