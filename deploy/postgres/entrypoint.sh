#!/bin/sh
# The demo PostgreSQL of docker-compose.yml (Dockerfile target postgres):
# Debian's package, one cluster in /var/lib/postgresql/data. On first start
# it makes the cluster (the postgres user's password from
# POSTGRES_PASSWORD), the database POSTGRES_DB (default app) with the
# sample schema, and allows password (SCRAM) logins over the network; later
# starts use what is there.
set -eu
: "${POSTGRES_PASSWORD:?is required (docker-compose.yml passes DEMO_PG_PASSWORD from deploy/secrets/.env)}"
db=${POSTGRES_DB:-app}
data=/var/lib/postgresql/data
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

install -d -o postgres -g postgres -m 2775 /run/postgresql
if [ ! -e "$data/.airlock-demo-ready" ]; then
	if [ -e "$data/PG_VERSION" ]; then
		echo "entrypoint: $data holds a cluster this image did not finish making (an interrupted first start, or a volume from another image); remove the volume (docker-compose down -v) and start again" >&2
		exit 1
	fi
	echo "entrypoint: first start: making the cluster and database $db" >&2
	pw=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
	chown postgres "$pw"
	as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
		--auth-local=peer --auth-host=scram-sha-256 >/dev/null
	rm -f "$pw"
	echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
	# Set up through a private socket and no TCP listener, so the health
	# check (TCP) passes only once the real server runs.
	sock=$(mktemp -d)
	chown postgres "$sock"
	as_postgres "$bin/pg_ctl" -D "$data" -w -s -o "-c listen_addresses='' -c unix_socket_directories=$sock" start
	# psql quotes the name (:"db"); it interpolates only what it reads, not -c.
	echo 'CREATE DATABASE :"db";' |
		as_postgres "$bin/psql" -h "$sock" -U postgres -d postgres -v ON_ERROR_STOP=1 -q -v db="$db"
	as_postgres "$bin/psql" -h "$sock" -U postgres -d "$db" -v ON_ERROR_STOP=1 -q \
		-f /usr/share/airlock/sample_schema.sql
	as_postgres "$bin/pg_ctl" -D "$data" -w -s stop
	rm -rf "$sock"
	as_postgres touch "$data/.airlock-demo-ready"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" -D "$data" -c listen_addresses='*'
