# beeline's tasks. `just --list` shows them; `just ci` is exactly what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := env_var('HOME') + "/.cargo/bin:" + env_var('PATH')

# List the recipes.
default:
    @just --list

# --- main job ----------------------------------------------------------------

# Run signal-api, home-peer and the demo chat on loopback; prints the URL to open.
# `allow` confines ICE to addresses/CIDRs, e.g. `just demo 127.0.0.1`.
[group('run')]
demo allow="":
    cargo build --bins
    scripts/demo.sh "{{allow}}"

# --- tests -------------------------------------------------------------------

# Every test: formatting and lints, the browser client's bundle and types, Rust unit/integration tests, headless Chromium, dependency policy.
[group('test')]
test: lint client-check test-rust test-browser test-proxy test-interop test-nat deny

# Rust unit and integration tests (all WebRTC traffic on loopback); a real
# coturn proves the TURN credentials, and a throwaway PostgreSQL cluster runs
# the shared store's tests (three signal-api instances behind haproxy among them).
# The transport's own suite runs a second time on the 0.17 stack, from the
# test binaries the first run built.
[group('test')]
test-rust: ensure-coturn ensure-postgres ensure-haproxy
    BEELINE_REQUIRE_COTURN=1 BEELINE_REQUIRE_POSTGRES=1 cargo test --workspace --no-fail-fast
    scripts/test-transport-017.sh

# Run each fuzz target (the decoders of network bytes) briefly (bounded; not part of `test`).
[group('test')]
fuzz-smoke seconds="20": ensure-cargo-fuzz
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_json -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_binary -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run request_path -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run open_seal -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ws_records -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run resume_envelope -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run remote_description -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run loopback_ticket -- -max_total_time={{seconds}} -rss_limit_mb=2048
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run remote_candidate -- -max_total_time={{seconds}} -rss_limit_mb=2048

# The browser client: the committed bundle is what client/src builds to, and client/examples/*.ts compiles against client/index.d.ts (tsc, strict).
[group('test')]
client-check: ensure-client-deps
    cd client && node scripts/build.mjs --check
    cd client && node_modules/.bin/tsc -p examples/tsconfig.json

# Headless Chromium against the real binaries, inside a network namespace (once through haproxy in front of three signal-api instances on a throwaway PostgreSQL, once behind nginx with TLS).
[group('test')]
test-browser: ensure-postgres ensure-haproxy ensure-nginx
    cargo build --bins
    BEELINE_REQUIRE_POSTGRES=1 BEELINE_REQUIRE_NGINX=1 tests/browser/run.sh

# beeline-proxy driven by curl and the OpenAI Python SDK, with a Python http.server home service, in a network namespace.
[group('test')]
test-proxy:
    cargo build --bins
    tests/proxy/run.sh

# Transport interop: headless Chromium (offerer and answerer) and aiortc against dc-echo, in a network namespace.
[group('test')]
test-interop:
    cargo build -p beeline-transport --example dc-echo
    tests/interop/run.sh

# Transport NAT traversal in namespaces: direct via STUN, TURN relay, all UDP blocked, dead path + ICE restart, and TURN over TCP/TLS only (coturn with a test-made CA; asserted unsupported on webrtc-ice 0.17: URL skipped with a WARN, connection fails). run.sh installs iptables, openssl and coturn when missing.
[group('test')]
test-nat:
    cargo build -p beeline-transport --example dc-echo --example dc-drive
    tests/nat/run.sh

# What CI runs (`.ci/run` calls the same test command).
[group('test')]
ci: test

# --- build -------------------------------------------------------------------

# Rebuild the browser client bundle (crates/signal-server/assets/client.js, committed) from client/src with esbuild.
[group('build')]
client-build: ensure-client-deps
    cd client && node scripts/build.mjs

# --- checks ------------------------------------------------------------------

# Dependency policy: no media stack, allowed licences and sources only.
[group('check')]
deny: ensure-cargo-deny
    scripts/check-no-media.sh
    cargo deny --all-features check bans licenses sources

# Security advisories (needs network access to the advisory database).
[group('check')]
deny-advisories: ensure-cargo-deny
    cargo deny check advisories

# Stripped size of the transport-only example vs a baseline tokio binary (size profile).
[group('check')]
size:
    scripts/size.sh

# Formatting and lints.
[group('check')]
lint: ensure-lint-tools
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    # The transport as a lean embedder builds it: sans-I/O alone, no TURN over TLS.
    cargo clippy -p beeline-transport --no-default-features --all-targets -- -D warnings
    # The library crates' API docs, as an embedder reads them: no broken links.
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p beeline-frame -p beeline-transport -p beeline-signal-client -p beeline-bridge -p beeline-client -p beeline-home -p beeline-seal -p beeline-signal-server

# --- benchmarks --------------------------------------------------------------

# The benchmark suite: one table with goals, target/bench/report.json, the
# latency chart and the README's bench section (see docs/performance.md).
[group('bench')]
bench: ensure-postgres
    scripts/bench.sh

# Signaling figures: posts/s, poll wake p50/p99, RSS at 1,000 waiting polls, alone on SQLite and three instances on PostgreSQL (target/bench/signal.json).
[group('bench')]
bench-signal: ensure-postgres
    cargo bench -p signal-api --bench signal

# --- setup -------------------------------------------------------------------

# Install Debian's coturn when missing (for the TURN credential test).
[group('setup')]
ensure-coturn:
    scripts/ensure-coturn.sh

# Install Debian's PostgreSQL server binaries when missing (for the PostgreSQL store's tests).
[group('setup')]
ensure-postgres:
    scripts/ensure-postgres.sh

# Install Debian's haproxy when missing (the balancer in front of three signal-api instances in a test).
[group('setup')]
ensure-haproxy:
    scripts/ensure-haproxy.sh

# Install Debian's nginx and openssl when missing (signal-api behind nginx with TLS in a test).
[group('setup')]
ensure-nginx:
    scripts/ensure-nginx.sh

# Install cargo-fuzz when missing (runs on stable through RUSTC_BOOTSTRAP).
[group('setup')]
ensure-cargo-fuzz:
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Install cargo-deny when missing.
[group('setup')]
ensure-cargo-deny:
    command -v cargo-deny >/dev/null || cargo install cargo-deny --locked

# Install rustfmt and clippy when missing.
[group('setup')]
ensure-lint-tools:
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# Install node, npm and client/'s pinned esbuild and typescript when missing.
[group('setup')]
ensure-client-deps:
    scripts/ensure-client-deps.sh

# Install chromium, iproute2 and playwright-core when missing.
[group('setup')]
ensure-browser-deps:
    scripts/ensure-browser-deps.sh
