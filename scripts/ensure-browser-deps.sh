#!/usr/bin/env bash
# Installs what tests/browser needs when it is missing: Debian's chromium
# and firefox-esr, iproute2 (for `ip netns`), python3 (the plain upstream),
# postgresql and haproxy (balancer.test.mjs: three signal-api instances on
# one PostgreSQL behind haproxy; scripts/ensure-postgres.sh and
# scripts/ensure-haproxy.sh), nginx and openssl (nginx.test.mjs;
# scripts/ensure-nginx.sh), and playwright-core (drives Chromium) and
# puppeteer-core (drives Firefox over WebDriver BiDi) under tests/browser.
# Idempotent: when everything is present it only checks and exits.
# Runs as root (it calls apt-get). Never downloads a browser build of its own.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$repo_root/tests/browser"

log() { echo "ensure-browser-deps: $*" >&2; }

# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# iptables: the migration test cuts the UDP path inside its namespace.
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# balancer.test.mjs runs its own PostgreSQL cluster and haproxy,
# nginx.test.mjs its own nginx.
bash "$repo_root/scripts/ensure-postgres.sh"
bash "$repo_root/scripts/ensure-haproxy.sh"
bash "$repo_root/scripts/ensure-nginx.sh"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    apt_install nodejs npm
fi

# True when node_modules holds the versions of playwright-core and
# puppeteer-core that the lock file asks for.
node_modules_current() {
    (cd "$browser_dir" && node -e '
        const fs = require("fs");
        const lock = fs.existsSync("package-lock.json") ? JSON.parse(fs.readFileSync("package-lock.json", "utf8")) : null;
        for (const name of ["playwright-core", "puppeteer-core"]) {
            const installed = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version;
            const locked = lock ? lock.packages[`node_modules/${name}`].version : installed;
            if (installed !== locked) process.exit(1);
        }
    ' 2>/dev/null)
}

if ! node_modules_current; then
    log "installing playwright-core and puppeteer-core"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD and PUPPETEER_SKIP_DOWNLOAD keep npm
    # from fetching browser builds; the tests use Debian's /usr/bin/chromium
    # and /usr/bin/firefox-esr.
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1
    if [ -f "$browser_dir/package-lock.json" ]; then
        (cd "$browser_dir" && npm ci --no-audit --no-fund)
    else
        (cd "$browser_dir" && npm install --no-audit --no-fund)
    fi
fi
