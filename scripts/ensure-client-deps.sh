#!/usr/bin/env bash
# Installs what building and checking the browser client needs when it is
# missing: node and npm (Debian's), and client/'s pinned devDependencies
# (esbuild, typescript) from client/package-lock.json with `npm ci`.
# Idempotent: when everything is present it only checks and exits.
# The client itself has no runtime dependencies; cargo never needs npm
# (the built bundle is committed).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
client_dir="$repo_root/client"

log() { echo "ensure-client-deps: $*" >&2; }
# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    apt_install nodejs npm
fi

# True when node_modules holds every devDependency at the version the lock
# file asks for.
node_modules_current() {
    (cd "$client_dir" && node -e '
        const fs = require("fs");
        const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
        const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"));
        for (const name of Object.keys(pkg.devDependencies)) {
            const installed = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version;
            if (installed !== lock.packages[`node_modules/${name}`].version) process.exit(1);
        }
    ' 2>/dev/null)
}

if ! node_modules_current; then
    log "installing client/ devDependencies (npm ci)"
    (cd "$client_dir" && npm ci --no-audit --no-fund)
fi
