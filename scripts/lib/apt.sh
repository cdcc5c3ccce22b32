# Sourced by the ensure-*.sh scripts.
#
# apt_install PKG...  installs Debian packages non-interactively, without
#                     recommends; refreshes the package lists only when the
#                     first attempt fails, since a fresh image often has
#                     stale or empty lists. apt-get's output goes to stderr,
#                     so a script whose stdout is its answer can call it.

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@" >&2; then
        echo "apt_install: apt-get install $* failed; running apt-get update and retrying" >&2
        apt-get update >&2
        apt-get install -y --no-install-recommends "$@" >&2
    fi
}
