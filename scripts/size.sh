#!/usr/bin/env bash
# Measures what beeline-transport costs in a binary: the stripped size of
# the transport-only example `dc-echo`, built with the sans-I/O stack alone
# (without the 0.17 stack, which is what an embedder links once it is gone)
# and the `turn-tls` feature (TURN over TLS, on by default), against a
# baseline tokio binary that does the same I/O plumbing (stdin/stdout lines,
# tokio runtime, the same tracing-subscriber set-up as dc-echo) without the
# transport, both in the `size` profile (opt-level z, fat LTO, one codegen
# unit, panic=abort, stripped). It also prints the delta without
# `turn-tls` (no rustls client, no Mozilla roots). The goal is a delta of
# at most 1.3 MB, what the specification measured for pion's components.
#
# Set BEELINE_SIZE_TOP=N to also list the N largest symbols of an unstripped
# build of dc-echo (what dominates, by crate).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
dc="$target_dir/size/examples/dc-echo"
base="$target_dir/size/examples/size-baseline"
# Without turn-tls first: both builds write the same example path, so each
# size is read right after its build (the dependencies they share are
# built once).
cargo build -q --profile size -p beeline-transport --no-default-features --example dc-echo
lean_size=$(stat -c %s "$dc")
features=(--no-default-features --features turn-tls)
cargo build -q --profile size -p beeline-transport "${features[@]}" --example dc-echo --example size-baseline
dc_size=$(stat -c %s "$dc")
base_size=$(stat -c %s "$base")
delta=$((dc_size - base_size))
lean_delta=$((lean_size - base_size))
goal=$((1300 * 1000))

mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1000000 }'; }
printf '%-34s %10d bytes (%s)\n' "baseline tokio binary:" "$base_size" "$(mb "$base_size")"
printf '%-34s %10d bytes (%s)\n' "dc-echo (beeline-transport):" "$dc_size" "$(mb "$dc_size")"
printf '%-34s %10d bytes (%s)\n' "transport delta:" "$delta" "$(mb "$delta")"
printf '%-34s %10d bytes (%s)\n' "dc-echo without turn-tls:" "$lean_size" "$(mb "$lean_size")"
printf '%-34s %10d bytes (%s)\n' "delta without turn-tls:" "$lean_delta" "$(mb "$lean_delta")"
if [ "$delta" -le "$goal" ]; then
    echo "goal (<= 1.30 MB): met"
else
    echo "goal (<= 1.30 MB): not met"
fi

if [ -n "${BEELINE_SIZE_TOP:-}" ]; then
    # Same profile, symbols kept, to see which crates dominate.
    CARGO_PROFILE_SIZE_STRIP=false CARGO_PROFILE_SIZE_DEBUG=false \
        cargo build -q --profile size -p beeline-transport "${features[@]}" --example dc-echo \
        --target-dir "$target_dir/size-symbols"
    sym="$target_dir/size-symbols/size/examples/dc-echo"
    echo "largest symbols in dc-echo:"
    nm --size-sort --radix=d -C "$sym" | tail -n "$BEELINE_SIZE_TOP"
    echo "bytes by crate (text symbols, demangled path prefix):"
    nm --size-sort --radix=d -C "$sym" | awk '{ size=$1; $1=""; $2=""; sub(/^  */, ""); name=$0;
        sub(/^</, "", name); sub(/^_</, "", name); split(name, parts, "::"); crate=parts[1];
        sub(/^.* /, "", crate); bytes[crate]+=size } END { for (c in bytes) printf "%10d %s\n", bytes[c], c }' \
        | sort -rn | head -25
fi
