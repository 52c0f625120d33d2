#!/usr/bin/env bash
# Service postgres from Debian's postgresql-15 (deploy/podman/compose.host.yaml), doing what the official
# postgres image's entrypoint does for docker-compose.yaml: on an empty data volume, initdb with the
# superuser password from POSTGRES_PASSWORD and run /docker-entrypoint-initdb.d/*.sh once against a
# server that listens on its unix socket only; then serve on 127.0.0.1:$POSTGRES_PORT (host networking:
# the machine's own PostgreSQL keeps 5432).
set -euo pipefail
: "${POSTGRES_PASSWORD:?}" "${POSTGRES_PORT:?}"
export PGDATA=/var/lib/postgresql/data PGHOST=/tmp POSTGRES_USER="${POSTGRES_USER:-postgres}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  echo "== initdb (empty volume)"
  pwfile="$(mktemp)" && chown postgres "$pwfile" && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  as_postgres initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  as_postgres pg_ctl --wait --options="-c listen_addresses='' -k /tmp" start >/dev/null
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [[ -e "$script" ]] || continue
    echo "== $script"
    as_postgres env POSTGRES_USER="$POSTGRES_USER" PGHOST=/tmp bash "$script"
  done
  as_postgres pg_ctl --wait --mode=fast stop >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -c listen_addresses=127.0.0.1 -p "$POSTGRES_PORT" -k /tmp
