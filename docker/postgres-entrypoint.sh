#!/usr/bin/env bash
# Start of docker/Dockerfile.postgres, the way the official postgres image starts: on first start (an empty
# PGDATA) it creates the cluster with the superuser POSTGRES_USER, password POSTGRES_PASSWORD (required;
# scram-sha-256 over the network) and the database POSTGRES_DB, then runs the server in the foreground.
set -euo pipefail
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (there is no default)}"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C > /dev/null
  rm -f "$pwfile"
  if [[ "$db" != postgres ]]; then
    # single-user mode runs as the bootstrap superuser (POSTGRES_USER)
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -D "$PGDATA" -j postgres > /dev/null
  fi
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"
