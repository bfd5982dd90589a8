#!/usr/bin/env bash
# A throwaway PostgreSQL server for the storage/worker tests, on 127.0.0.1 and a free port.
#
#   source .ci/postgres.sh; pg_start; trap pg_stop EXIT
#
# pg_start installs the Debian package when no server binaries are found, runs initdb in a
# fresh temporary directory (as the `postgres` user when running as root: PostgreSQL refuses to
# run as root), starts the server, creates the database `lightning_tune_test` owned by the user
# `lightning_tune` with a random password, and exports LIGHTNING_TUNE_TEST_POSTGRES_URL.
# If that variable is already set (an external server), pg_start uses it and starts nothing.
# The password is never printed.

_pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$dir" ]] && command -v pg_ctl >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    fi
    echo "$dir"
}

_pg_as_owner() {
    # Run a server binary as the user that owns the data directory.
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    if [[ -n "${LIGHTNING_TUNE_TEST_POSTGRES_URL:-}" ]]; then
        echo "== PostgreSQL: using LIGHTNING_TUNE_TEST_POSTGRES_URL from the environment"
        return 0
    fi
    PG_BINDIR=$(_pg_bindir)
    if [[ -z "$PG_BINDIR" ]]; then
        echo "== PostgreSQL: installing the Debian package"
        local sudo=""
        if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
        PG_BINDIR=$(_pg_bindir)
    fi
    if [[ -z "$PG_BINDIR" ]]; then
        echo "pg_start: no PostgreSQL server binaries after installing the package" >&2
        return 1
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home postgres
    fi

    PG_TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/lightning-tune-pg.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$PG_TMPDIR"; fi
    chmod 700 "$PG_TMPDIR"
    local password port pwfile
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    pwfile="$PG_TMPDIR/pwfile"
    (umask 077; printf '%s\n' "$password" >"$pwfile")
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$pwfile"; fi

    _pg_as_owner "$PG_BINDIR/initdb" -D "$PG_TMPDIR/data" -U lightning_tune --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync >"$PG_TMPDIR/initdb.log" 2>&1 \
        || { cat "$PG_TMPDIR/initdb.log" >&2; return 1; }
    rm -f "$pwfile"
    # fsync off: a test server, thrown away at the end; max_connections: workers x tests.
    _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$PG_TMPDIR/data" -l "$PG_TMPDIR/server.log" -w -t 60 \
        -o "-p $port -k $PG_TMPDIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null || { cat "$PG_TMPDIR/server.log" >&2; return 1; }
    _pg_as_owner "$PG_BINDIR/createdb" -h "$PG_TMPDIR" -p "$port" -U lightning_tune lightning_tune_test
    export PG_BINDIR PG_TMPDIR
    export LIGHTNING_TUNE_TEST_POSTGRES_URL="postgresql://lightning_tune:${password}@127.0.0.1:${port}/lightning_tune_test"
    echo "== PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (database lightning_tune_test)"
}

pg_stop() {
    if [[ -n "${PG_TMPDIR:-}" && -d "$PG_TMPDIR/data" ]]; then
        _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$PG_TMPDIR/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_TMPDIR"
        unset LIGHTNING_TUNE_TEST_POSTGRES_URL PG_TMPDIR
        echo "== PostgreSQL stopped"
    fi
}
