#!/usr/bin/env bash
# The official postgres image's entrypoint contract, for containers/postgres/Dockerfile:
# * `postgres [option...]` (or options alone) runs the server; any other command runs as given;
# * started as root, it hands PGDATA to the postgres user (uid 999) and goes on as that user;
# * on a data directory without PG_VERSION: initdb with the superuser POSTGRES_USER (default
#   postgres), password POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust) and
#   POSTGRES_INITDB_ARGS; host connections from any address authenticate with
#   POSTGRES_HOST_AUTH_METHOD (default: the server's password_encryption, scram-sha-256); then, on
#   a server listening only on its socket, POSTGRES_DB (default POSTGRES_USER) is created and the
#   *.sql and *.sh files of /docker-entrypoint-initdb.d run, in name order;
# * a data directory that has PG_VERSION is used as it is;
# * each of those variables may instead name a file holding its value (POSTGRES_PASSWORD_FILE, ...).
set -Eeuo pipefail

if [ "${1:0:1}" = "-" ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

for variable in POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB POSTGRES_INITDB_ARGS; do
  file_variable=${variable}_FILE
  if [ -n "${!file_variable:-}" ]; then
    if [ -n "${!variable:-}" ]; then
      echo "error: both $variable and $file_variable are set (but are exclusive)" >&2
      exit 1
    fi
    export "$variable=$(<"${!file_variable}")"
  fi
  unset "$file_variable"
done
export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-}
POSTGRES_INITDB_ARGS=${POSTGRES_INITDB_ARGS:-}

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi
mkdir -p "$PGDATA"
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "$POSTGRES_PASSWORD" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "error: the database is uninitialized and POSTGRES_PASSWORD is empty: set it (or POSTGRES_HOST_AUTH_METHOD=trust, which lets anyone who reaches the port in)" >&2
    exit 1
  fi
  # POSTGRES_INITDB_ARGS is a list of options, split on spaces as the official image does.
  # shellcheck disable=SC2086
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
  printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-$(postgres -C password_encryption)}" \
    >>"$PGDATA/pg_hba.conf"

  pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses='' -p ${PGPORT:-5432}" --wait start
  sql=(psql --set=ON_ERROR_STOP=1 --username="$POSTGRES_USER" --no-password --no-psqlrc)
  exists=$("${sql[@]}" --dbname=postgres --set=db="$POSTGRES_DB" --tuples-only \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")
  if [ -z "$exists" ]; then
    "${sql[@]}" --dbname=postgres --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db"'
  fi
  shopt -s nullglob
  for file in /docker-entrypoint-initdb.d/*; do
    echo "$0: $file"
    case "$file" in
      *.sql) "${sql[@]}" --dbname="$POSTGRES_DB" --file="$file" ;;
      # An executable script runs; any other is sourced (it sees these variables and functions).
      *.sh) if [ -x "$file" ]; then "$file"; else . "$file"; fi ;;
      *) echo "$0: ignored (neither .sql nor .sh)" ;;
    esac
  done
  pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
