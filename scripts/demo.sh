#!/usr/bin/env bash
# Try airlock on one machine: a throwaway PostgreSQL with sample data, three
# identities (an agent, an approver, a reviewer) and the gateway in the
# foreground. Everything lives in ./demo; Ctrl-C stops the gateway and the
# demo PostgreSQL.
#
#   scripts/demo.sh          set up and run the gateway (what `make demo` runs)
#   scripts/demo.sh stop     stop a demo PostgreSQL left running
#
# Environment:
#   DEMO_NO_GATEWAY=1   set up, print the instructions and exit, leaving
#                       PostgreSQL running (stop it with: scripts/demo.sh stop)
#   DEMO_SKIP_BUILD=1   use the existing bin/airlock instead of building it
#   DEMO_RESET=1        new API tokens and empty gateway data; by default a
#                       re-run keeps both, so an already sourced demo/env.sh
#                       and earlier grants and sessions stay valid
#
# The PostgreSQL cluster itself is recreated on every run, so the sample
# orders' dates ("yesterday") are relative to today.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO=$ROOT/demo
SCHEMA=$ROOT/testenv/sample_schema.sql
PG_PORT=55432
PG_DB=app
PG_USER=postgres
# Where the current cluster lives: demo/pg, or a directory under /tmp when
# the postgres user cannot reach demo/ (running as root from a private home).
PG_DIR_FILE=$DEMO/pg-dir

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# PostgreSQL refuses to run as root, so as root its programs run as the
# postgres user that the Debian package creates.
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

apt_updated=
# apt_install PKG...: as root install with apt-get (updating the package lists
# only if the first try fails: a fresh machine may have none); otherwise
# stop with the command to run.
apt_install() {
	if ! is_root; then
		die "missing $1: install with: sudo apt-get install -y $*"
	fi
	say "installing $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; then
		[ -z "$apt_updated" ] || die "apt-get install -y $* failed"
		apt-get update
		apt_updated=1
		DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
	fi
}

# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/MAJOR/bin, off
# PATH; take them from PATH if there, else the newest installed major.
find_pg_bin() {
	local p dir
	if p=$(command -v initdb); then
		dir=$(dirname "$(readlink -f "$p")")
		if [ -x "$dir/pg_ctl" ]; then
			echo "$dir"
			return
		fi
	fi
	while IFS= read -r dir; do
		if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
			echo "$dir"
			return
		fi
	done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
	return 1
}

require_tools() {
	if [ -z "${DEMO_SKIP_BUILD:-}" ] && ! command -v go >/dev/null; then
		die "missing go: install the Go toolchain named in go.mod and put it on PATH"
	fi
	local pkgs=()
	find_pg_bin >/dev/null || pkgs+=(postgresql)
	command -v psql >/dev/null || pkgs+=(postgresql-client)
	command -v openssl >/dev/null || pkgs+=(openssl)
	if is_root && ! command -v runuser >/dev/null; then
		pkgs+=(util-linux)
	fi
	if [ ${#pkgs[@]} -gt 0 ]; then
		apt_install "${pkgs[@]}"
	fi
	PG_BIN=$(find_pg_bin) || die "initdb and pg_ctl not found even after installing postgresql"
}

# stop_pg stops the demo cluster recorded in $PG_DIR_FILE, if it runs.
stop_pg() {
	local dir
	[ -f "$PG_DIR_FILE" ] || return 0
	dir=$(cat "$PG_DIR_FILE")
	if [ -f "$dir/data/postmaster.pid" ]; then
		say "stopping the demo PostgreSQL in $dir"
		(cd "$dir" && as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null) ||
			say "could not stop it (already gone?)"
	fi
}

random_hex() { od -An -N20 -tx1 /dev/urandom | tr -d ' \n'; }
sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# pg_dir chooses and creates an empty directory the postgres user owns.
pg_dir() {
	local dir=$DEMO/pg
	rm -rf "$dir"
	mkdir -p "$dir"
	if is_root; then
		chown postgres: "$dir"
		if ! runuser -u postgres -- test -w "$dir"; then
			dir=/tmp/airlock-demo-pg
			rm -rf "$dir"
			mkdir -m 700 "$dir"
			chown postgres: "$dir"
		fi
	fi
	chmod 700 "$dir"
	echo "$dir"
}

start_pg() {
	local dir
	dir=$(pg_dir)
	echo "$dir" >"$PG_DIR_FILE"
	say "creating PostgreSQL in $dir (127.0.0.1:$PG_PORT, database $PG_DB)"

	# initdb reads the password from a file so it never shows in ps.
	(umask 077 && printf '%s\n' "$DEMO_PG_PASSWORD" >"$dir/pwfile")
	if is_root; then chown postgres: "$dir/pwfile"; fi
	# Run from $dir: the postgres user may not be able to read our cwd.
	(cd "$dir" && as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --pwfile "$dir/pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync \
		>"$dir/initdb.log" 2>&1) || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
	rm -f "$dir/pwfile"

	# A self-signed certificate, so the gateway's upstream TLS (sslmode
	# prefer, its default) is used for real.
	(cd "$dir" && as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=127.0.0.1 \
		-keyout "$dir/data/server.key" -out "$dir/data/server.crt" >/dev/null 2>&1) ||
		die "openssl could not make the server certificate"
	# postgres refuses a key that others can read.
	chmod 600 "$dir/data/server.key"

	cat >>"$dir/data/postgresql.conf" <<-EOF

		# airlock demo
		listen_addresses = '127.0.0.1'
		port = $PG_PORT
		# TCP only: no socket path to outgrow or permission to get wrong.
		unix_socket_directories = ''
		max_connections = 200
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		ssl = on
	EOF

	(cd "$dir" && as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -t 60 >/dev/null) || {
		tail -n 20 "$dir/postgres.log" >&2 || true
		die "PostgreSQL did not start (is port $PG_PORT taken?)"
	}

	local conn="host=127.0.0.1 port=$PG_PORT user=$PG_USER sslmode=disable"
	# Quiet the schema's "table does not exist, skipping" notices.
	export PGOPTIONS="-c client_min_messages=warning"
	PGPASSWORD=$DEMO_PG_PASSWORD psql "$conn dbname=postgres" -q -v ON_ERROR_STOP=1 \
		-c "CREATE DATABASE $PG_DB" >/dev/null
	PGPASSWORD=$DEMO_PG_PASSWORD psql "$conn dbname=$PG_DB" -q -v ON_ERROR_STOP=1 \
		-f "$SCHEMA" >/dev/null
	say "loaded $(PGPASSWORD=$DEMO_PG_PASSWORD psql "$conn dbname=$PG_DB" -Atc 'select count(*) from orders') sample orders"
}

# tokens keeps the API tokens of an earlier run unless DEMO_RESET=1.
tokens() {
	AGENT_TOKEN="" ALICE_TOKEN="" RITA_TOKEN=""
	if [ -z "${DEMO_RESET:-}" ] && [ -f "$DEMO/env.sh" ]; then
		# shellcheck source=/dev/null
		. "$DEMO/env.sh"
	fi
	if [ -z "$AGENT_TOKEN" ] || [ -z "$ALICE_TOKEN" ] || [ -z "$RITA_TOKEN" ]; then
		say "generating API tokens for agent-1, alice and rita"
		AGENT_TOKEN=$(random_hex) ALICE_TOKEN=$(random_hex) RITA_TOKEN=$(random_hex)
	fi
	(umask 077 && cat >"$DEMO/env.sh") <<-EOF
		# airlock demo: API tokens of the demo identities. Source it: . demo/env.sh
		export AIRLOCK_SERVER=http://127.0.0.1:8080
		export AGENT_TOKEN=$AGENT_TOKEN
		export ALICE_TOKEN=$ALICE_TOKEN
		export RITA_TOKEN=$RITA_TOKEN
	EOF
}

write_config() {
	cat >"$DEMO/airlock.yaml" <<-EOF
		# airlock demo configuration, written by scripts/demo.sh (re-running it
		# rewrites this file). Tokens are in demo/env.sh; only their SHA-256 is here.
		data_dir: $DEMO/airlock-data
		listen:
		  postgres: 127.0.0.1:15432
		  http: 127.0.0.1:8080
		recorder:
		  nats_url: ""          # embedded JetStream in data_dir
		  stream: AIRLOCK_EVENTS
		  mode: strict
		identities:
		  - { name: agent-1, role: agent, token_sha256: "$(sha256 "$AGENT_TOKEN")" }
		  - { name: alice, role: approver, token_sha256: "$(sha256 "$ALICE_TOKEN")" }
		  - { name: rita, role: reviewer, token_sha256: "$(sha256 "$RITA_TOKEN")" }
		resources:
		  - name: demo-pg
		    protocol: postgres
		    address: 127.0.0.1:$PG_PORT
		    database: $PG_DB
		    user: $PG_USER
		    auth: { type: password, password_env: DEMO_PG_PASSWORD }
	EOF
}

instructions() {
	cat <<-EOF

		airlock demo is ready.
		  upstream PostgreSQL  127.0.0.1:$PG_PORT, database $PG_DB (only the gateway has its password)
		  gateway              Postgres on 127.0.0.1:15432, HTTP API on http://127.0.0.1:8080
		  files                demo/airlock.yaml (config), demo/env.sh (API tokens)

		Try it from another terminal, in $ROOT:

		  . demo/env.sh

		  # 1. The agent asks for read access for its task. Note the request ID
		  #    and the connection token; the token works once the request is approved.
		  AIRLOCK_TOKEN=\$AGENT_TOKEN bin/airlock request --resource demo-pg --task "INC-42: count yesterday's failed orders" --access read

		  # 2. Alice, an approver, approves it.
		  AIRLOCK_TOKEN=\$ALICE_TOKEN bin/airlock grants list
		  AIRLOCK_TOKEN=\$ALICE_TOKEN bin/airlock grants approve ID

		  # 3. The agent connects with plain psql; the connection token is the
		  #    password (psql asks for it, or set PGPASSWORD).
		  psql "host=127.0.0.1 port=15432 user=agent-1 dbname=demo-pg sslmode=require"
		    select count(*) from orders where status = 'failed'
		      and created_at >= current_date - 1 and created_at < current_date;   -- 8
		    delete from orders;   -- denied: the grant is read-only, and the denial is recorded

		  # 4. Rita, a reviewer, reads what happened: who, why, every statement
		  #    with its decision, including the denied one.
		  AIRLOCK_TOKEN=\$RITA_TOKEN bin/airlock sessions list
		  AIRLOCK_TOKEN=\$RITA_TOKEN bin/airlock sessions show SESSION_ID

		  # Or approve in the web console, http://127.0.0.1:8080/ui/ (docs/console.md):
		  # a one-time sign-in link for alice is printed below once the gateway is up;
		  # for a new one (each works once, for 60 seconds):
		  AIRLOCK_TOKEN=\$ALICE_TOKEN bin/airlock console

	EOF
}

# stop_gateway stops the gateway started in the background, if it runs.
stop_gateway() {
	if [ -n "${GW_PID:-}" ] && kill -0 "$GW_PID" 2>/dev/null; then
		kill -INT "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
}

# console_link waits for the gateway to answer, then prints the console's
# address and a one-time sign-in link for the demo approver.
console_link() {
	local link i
	for i in $(seq 1 120); do
		kill -0 "$GW_PID" 2>/dev/null || return 0
		if link=$(AIRLOCK_TOKEN=$ALICE_TOKEN "$ROOT/bin/airlock" console --server http://127.0.0.1:8080 2>/dev/null); then
			cat >&2 <<-EOF

				==> web console: http://127.0.0.1:8080/ui/
				==> sign in as alice (approver) within 60 seconds, once:
				    $link
				    (a new link: AIRLOCK_TOKEN=\$ALICE_TOKEN bin/airlock console; or paste \$ALICE_TOKEN at /ui/signin)

			EOF
			return 0
		fi
		sleep 0.5
	done
	say "the gateway did not answer within 60s; make a sign-in link later with: AIRLOCK_TOKEN=\$ALICE_TOKEN bin/airlock console"
}

main() {
	if [ "${1:-}" = stop ]; then
		PG_BIN=$(find_pg_bin) || die "pg_ctl not found"
		stop_pg
		return
	fi
	[ $# -eq 0 ] || die "usage: scripts/demo.sh [stop]"
	require_tools

	if [ -z "${DEMO_SKIP_BUILD:-}" ]; then
		say "building bin/airlock"
		go build -o bin/airlock ./cmd/airlock
	fi

	mkdir -p "$DEMO"
	stop_pg # a cluster from an earlier run still holds the port
	rm -f "$DEMO/pg-password"
	if [ -n "${DEMO_RESET:-}" ]; then
		rm -rf "$DEMO/airlock-data"
	fi
	DEMO_PG_PASSWORD=$(random_hex)
	export DEMO_PG_PASSWORD
	# From here on the cluster runs: stop it however the script ends, unless
	# it is deliberately left running below.
	trap stop_pg EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	start_pg
	tokens
	write_config
	instructions

	if [ -n "${DEMO_NO_GATEWAY:-}" ]; then
		trap - EXIT
		(umask 077 && printf '%s\n' "$DEMO_PG_PASSWORD" >"$DEMO/pg-password")
		say "DEMO_NO_GATEWAY set: PostgreSQL keeps running. Start the gateway with"
		say "  DEMO_PG_PASSWORD=\$(cat demo/pg-password) bin/airlock gateway --config demo/airlock.yaml"
		say "and stop PostgreSQL with: scripts/demo.sh stop"
		return
	fi

	say "starting the gateway (Ctrl-C stops it and the demo PostgreSQL)"
	# In the background, so the console link can be printed once it is up;
	# the EXIT trap stops it, then PostgreSQL.
	"$ROOT/bin/airlock" gateway --config "$DEMO/airlock.yaml" &
	GW_PID=$!
	trap 'stop_gateway; stop_pg' EXIT
	console_link
	local rc=0
	wait "$GW_PID" || rc=$?
	GW_PID=
	return "$rc"
}

main "$@"
