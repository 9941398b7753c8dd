#!/usr/bin/env bash
# System packages the tests need beyond pip: PostgreSQL's server binaries
# (initdb, pg_ctl), which the PostgreSQL store tests start as a throwaway server.
# Idempotent: a quick no-op when they are already installed. Debian/Ubuntu only.
set -euo pipefail

have_pg() {
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
    done
    return 1
}

if have_pg; then
    echo "test-deps: PostgreSQL server binaries present ($(ls -d /usr/lib/postgresql/*/bin | tail -1))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test-deps: need root or sudo to install postgresql" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null || { echo "test-deps: apt-get not found; install PostgreSQL's server binaries yourself and set RECOVERY_PG_BIN" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends postgresql
# The package starts a cluster on port 5432; the tests start their own, so leave it be.
have_pg && echo "test-deps: PostgreSQL server binaries installed"
