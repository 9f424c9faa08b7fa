#!/usr/bin/env bash
# Install the Debian packages the tests need, and only those that are missing (idempotent).
#
# Each entry of PACKAGES is "package:check", where check is a shell test that succeeds when the
# package is usable. `apt-get update` runs only when something is missing. To add a dependency,
# add one line to PACKAGES, e.g.
#     "mosquitto:command -v mosquitto"
#     "chromium:command -v chromium"
# Uses sudo only when not running as root. Set DRY_RUN=1 to print what would be installed.
set -euo pipefail

PACKAGES=(
    "postgresql:ls /usr/lib/postgresql/*/bin/initdb"
    "openjdk-17-jre-headless:java -version 2>&1 | grep -Eq 'version \"(1[7-9]|[2-9][0-9])'"
    "chromium:command -v chromium"
    "chromium-driver:command -v chromedriver"
    "openssl:command -v openssl"
    "mosquitto:test -x /usr/sbin/mosquitto"
)

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

missing=()
for entry in "${PACKAGES[@]}"; do
    pkg=${entry%%:*}
    check=${entry#*:}
    if bash -c "$check" >/dev/null 2>&1; then
        log "$pkg: present"
    else
        log "$pkg: missing"
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "nothing to install"
    exit 0
fi

if [ "${DRY_RUN:-0}" = 1 ]; then
    log "would install: ${missing[*]}"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found: install ${missing[*]} with your package manager"
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        log "not root and sudo is not available: install ${missing[*]} as root"
        exit 1
    fi
    SUDO=(sudo)
fi

log "installing: ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

failed=()
for entry in "${PACKAGES[@]}"; do
    pkg=${entry%%:*}
    check=${entry#*:}
    if ! bash -c "$check" >/dev/null 2>&1; then
        failed+=("$pkg")
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    log "still missing after install: ${failed[*]}"
    exit 1
fi
log "installed: ${missing[*]}"
