#!/usr/bin/env bash
# The transport's own tests a second time, on the 0.17 stack
# (BEELINE_TEST_STACK=0.17), running the test binaries that
# `cargo test --workspace` already built. `cargo test -p beeline-transport`
# would resolve features for that package alone and rebuild much of the
# dependency tree (about 3 minutes of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh
# python3 reads cargo's JSON below; installed when missing, as
# ensure-python-deps.sh does.
command -v python3 >/dev/null 2>&1 || apt_install python3

mapfile -t binaries < <(
    cargo test --workspace --no-run --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and m["manifest_path"].endswith("crates/transport/Cargo.toml"):
        print(m["executable"])
')
if [ "${#binaries[@]}" -eq 0 ]; then
    echo "test-transport-017: no test binary of beeline-transport found" >&2
    exit 1
fi

# cargo runs a package's tests from its directory; so does this.
cd crates/transport
status=0
for binary in "${binaries[@]}"; do
    echo "# BEELINE_TEST_STACK=0.17 $(basename "$binary")"
    BEELINE_TEST_STACK=0.17 "$binary" || status=1
done
exit "$status"
