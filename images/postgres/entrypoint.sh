#!/bin/sh
# Initialise the cluster on first start, then run the server as `postgres` (never as container root).
set -eu
BIN=/usr/local/lib/pgbin
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

major=$("$BIN/postgres" --version | sed 's/.* \([0-9]*\)\..*/\1/')
if [ -s "$PGDATA/PG_VERSION" ]; then
    have=$(cat "$PGDATA/PG_VERSION")
    if [ "$have" != "$major" ]; then
        echo "devbox-postgres: the volume holds PostgreSQL $have data; this image runs PostgreSQL $major, which cannot open it." >&2
        echo "devbox-postgres: use a profile with PostgreSQL $have, or dump and restore into a volume for $major." >&2
        exit 1
    fi
else
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != "postgres" ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" | as_postgres "$BIN/postgres" --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$PGDATA"
