#!/usr/bin/env bash
# Installs what tests/browser needs when it is missing: Debian's chromium,
# iproute2 (for `ip netns`) and playwright-core under tests/browser.
# Idempotent: when everything is present it only checks and exits.
# Runs as root (it calls apt-get). Never downloads a browser build of its own.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$repo_root/tests/browser"

log() { echo "ensure-browser-deps: $*" >&2; }

# Installs Debian packages; refreshes the package lists only when the first
# attempt fails, since a fresh image often has stale or empty lists.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@"; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update
        apt-get install -y --no-install-recommends "$@"
    fi
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    apt_install nodejs npm
fi

# True when node_modules holds the playwright-core version the lock file asks for.
playwright_current() {
    (cd "$browser_dir" && node -e '
        const fs = require("fs");
        const installed = JSON.parse(fs.readFileSync("node_modules/playwright-core/package.json", "utf8")).version;
        const locked = fs.existsSync("package-lock.json")
            ? JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages["node_modules/playwright-core"].version
            : installed;
        process.exit(installed === locked ? 0 : 1);
    ' 2>/dev/null)
}

if ! playwright_current; then
    log "installing playwright-core"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD keeps npm from fetching a browser build;
    # the tests use Debian's /usr/bin/chromium.
    if [ -f "$browser_dir/package-lock.json" ]; then
        (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    else
        (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund)
    fi
fi
