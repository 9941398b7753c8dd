#!/usr/bin/env bash
# System packages the tests need beyond pip:
#  - PostgreSQL's server binaries (initdb, pg_ctl): the PostgreSQL store tests
#    start a throwaway server;
#  - Chromium and its WebDriver: the web page is tested in a headless browser.
# Idempotent: a quick no-op when they are already installed. Debian/Ubuntu only.
set -euo pipefail

have_pg() {
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
    done
    return 1
}

have_chromium() {
    { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1 &&
        { command -v chromedriver || [ -x /usr/lib/chromium/chromedriver ]; } >/dev/null 2>&1
}

want=()
have_pg || want+=(postgresql)
have_chromium || want+=(chromium chromium-driver)

if [ ${#want[@]} -eq 0 ]; then
    echo "test-deps: PostgreSQL server binaries ($(ls -d /usr/lib/postgresql/*/bin | tail -1)) and Chromium present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test-deps: need root or sudo to install ${want[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null || {
    echo "test-deps: apt-get not found; install ${want[*]} yourself (set RECOVERY_PG_BIN for PostgreSQL)" >&2
    exit 1
}

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# postgresql starts a cluster on port 5432; the tests start their own, so leave it be.
$SUDO apt-get install -y --no-install-recommends "${want[@]}"
have_pg && have_chromium && echo "test-deps: installed ${want[*]}"
