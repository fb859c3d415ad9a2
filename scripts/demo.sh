#!/usr/bin/env bash
# Try airlock on one machine: a throwaway PostgreSQL and MariaDB with sample
# data, an sshd giving a box to ssh into, three identities (an agent, an
# approver, a reviewer) and the gateway in the foreground. Everything lives
# in ./demo; Ctrl-C stops the gateway and the demo's servers.
#
#   scripts/demo.sh          set up and run the gateway (what `make demo` runs)
#   scripts/demo.sh stop     stop the demo's servers left running
#
# Environment:
#   DEMO_NO_GATEWAY=1   set up, print the instructions and exit, leaving the
#                       servers running (stop them with: scripts/demo.sh stop)
#   DEMO_SKIP_BUILD=1   use the existing bin/airlock instead of building it
#   DEMO_BIN=PATH       use this airlock binary (implies DEMO_SKIP_BUILD)
#   DEMO_RESET=1        new API tokens, empty gateway data and a freshly
#                       written demo/airlock.yaml (an edited one is saved as
#                       demo/airlock.yaml.bak); by default a re-run keeps all
#                       three, so an already sourced demo/env.sh, earlier
#                       grants and sessions, and local edits stay
#   DEMO_DIR=DIR        the demo's directory instead of ./demo
#   DEMO_PG_PORT, DEMO_MYSQL_PORT, DEMO_BOX_PORT
#                       the upstream PostgreSQL, MariaDB and sshd ports
#                       (55432, 53306, 52222), all on 127.0.0.1
#   DEMO_LISTEN_PG, DEMO_LISTEN_MYSQL, DEMO_LISTEN_SSH, DEMO_LISTEN_HTTP
#                       the gateway's ports (15432, 13306, 2222, 8080)
#
# The database servers are recreated on every run, so the sample orders'
# dates ("yesterday") are relative to today. The SSH keys in demo/ssh are
# kept, so the pinned host keys in demo/airlock.yaml and in your known_hosts
# stay valid.
#
# As root, the box's login is the unprivileged account airlock-demo, created
# on first run (remove it with: userdel -r airlock-demo); otherwise it is
# the account running the demo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO=${DEMO_DIR:-$ROOT/demo}
case $DEMO in /*) ;; *) DEMO=$ROOT/$DEMO ;; esac
SCHEMA=$ROOT/testenv/sample_schema.sql
SCHEMA_MYSQL=$ROOT/testenv/sample_schema_mysql.sql
PG_PORT=${DEMO_PG_PORT:-55432}
MY_PORT=${DEMO_MYSQL_PORT:-53306}
BOX_PORT=${DEMO_BOX_PORT:-52222}
GW_PG=${DEMO_LISTEN_PG:-15432}
GW_MY=${DEMO_LISTEN_MYSQL:-13306}
GW_SSH=${DEMO_LISTEN_SSH:-2222}
GW_HTTP=${DEMO_LISTEN_HTTP:-8080}
PG_DB=app
PG_USER=postgres
MY_DB=app
MY_USER=root
BOX_ACCOUNT=airlock-demo
AIRLOCK=${DEMO_BIN:-$ROOT/bin/airlock}
# How the instructions name the demo directory (they run in $ROOT) and the
# CLI.
case $DEMO in "$ROOT"/*) SHOW_DEMO=${DEMO#"$ROOT"/} ;; *) SHOW_DEMO=$DEMO ;; esac
if [ -n "${DEMO_BIN:-}" ]; then CLI=$AIRLOCK; else CLI=bin/airlock; fi
SSH_DIR=$DEMO/ssh
CONFIG=$DEMO/airlock.yaml
# The sum of the configuration this script last wrote: a file that still
# has it was not edited and may be replaced by a newer one.
CONFIG_SUM=$DEMO/.airlock.yaml.sha256
# Where a server's directory goes when its user cannot reach demo/ (running
# as root from a private home), one per demo directory.
FALLBACK=/tmp/airlock-demo-$(printf '%s' "$DEMO" | sha256sum | cut -c1-8)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# as USER CMD...: run as USER when root (PostgreSQL refuses to run as root),
# as ourselves otherwise.
as() {
	local u=$1
	shift
	if is_root; then
		runuser -u "$u" -- "$@"
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
		die "missing $*: install with: sudo apt-get install -y $*"
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

# sbin PROG: PROG from PATH or /usr/sbin (off a non-root user's PATH).
sbin() {
	command -v "$1" 2>/dev/null && return
	[ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1" && return
	return 1
}

require_tools() {
	if [ -z "${DEMO_SKIP_BUILD:-}${DEMO_BIN:-}" ] && ! command -v go >/dev/null; then
		die "missing go: install the Go toolchain named in go.mod and put it on PATH"
	fi
	local pkgs=()
	find_pg_bin >/dev/null || pkgs+=(postgresql)
	command -v psql >/dev/null || pkgs+=(postgresql-client)
	sbin mariadbd >/dev/null || pkgs+=(mariadb-server)
	command -v mysql >/dev/null || pkgs+=(mariadb-client)
	# sshd re-executes itself: it must be started by its absolute path.
	[ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
	command -v ssh-keygen >/dev/null || pkgs+=(openssh-client)
	command -v openssl >/dev/null || pkgs+=(openssl)
	if is_root && ! command -v runuser >/dev/null; then
		pkgs+=(util-linux)
	fi
	if [ ${#pkgs[@]} -gt 0 ]; then
		apt_install "${pkgs[@]}"
	fi
	PG_BIN=$(find_pg_bin) || die "initdb and pg_ctl not found even after installing postgresql"
	MARIADBD=$(sbin mariadbd) || die "mariadbd not found even after installing mariadb-server"
	MARIADB_INSTALL_DB=$(command -v mariadb-install-db || command -v mysql_install_db) ||
		die "mariadb-install-db not found even after installing mariadb-server"
}

random_hex() { od -An -N20 -tx1 /dev/urandom | tr -d ' \n'; }
sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ssh_greets PORT: an SSH server answers on 127.0.0.1:PORT with its version.
ssh_greets() {
	timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && IFS= read -r l <&3 && [[ \$l == SSH-2.0-* ]]" 2>/dev/null
}

# healthy PORT: the gateway's API on 127.0.0.1:PORT answers /healthz with 200.
healthy() {
	timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 &&
		printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
		IFS= read -r l <&3 && [[ \$l == 'HTTP/1.'?' 200'* ]]" 2>/dev/null
}

# check_free NAME PORT: stop early, naming the port, when it is taken.
check_free() {
	if port_open "$2"; then
		die "port $2 on 127.0.0.1 ($1) is taken by another program; stop it or choose another port (see the top of scripts/demo.sh)"
	fi
}

# svc_dir NAME [OWNER]: a fresh, empty directory for a server, owned by
# OWNER when we are root: demo/NAME, or a directory under /tmp when OWNER
# cannot write there (or DEMO is too long for a socket path).
svc_dir() {
	local name=$1 owner=${2:-} dir=$DEMO/$1
	rm -rf "$dir" "${FALLBACK:?}/$name"
	mkdir -p "$dir"
	if [ -n "$owner" ] && is_root; then
		chown "$owner": "$dir"
		if [ ${#dir} -gt 80 ] || ! runuser -u "$owner" -- test -w "$dir"; then
			rmdir "$dir"
			dir=$FALLBACK/$name
			mkdir -p -m 711 "$FALLBACK"
			mkdir -m 700 "$dir"
			chown "$owner": "$dir"
		fi
	fi
	chmod 700 "$dir"
	echo "$dir"
}

# self_signed DIR OWNER: server.crt and server.key in DIR, for TLS between
# the gateway and its upstream (it uses TLS when offered, its default).
self_signed() {
	(cd "$1" && as "$2" openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=127.0.0.1 \
		-keyout "$1/server.key" -out "$1/server.crt" >/dev/null 2>&1) ||
		die "openssl could not make a server certificate in $1"
	chmod 600 "$1/server.key"
}

# --- PostgreSQL ----------------------------------------------------------

stop_pg() {
	local dir
	[ -f "$DEMO/pg-dir" ] || return 0
	dir=$(cat "$DEMO/pg-dir")
	if [ -f "$dir/data/postmaster.pid" ]; then
		say "stopping the demo PostgreSQL in $dir"
		(cd "$dir" && as postgres "$PG_BIN/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null) ||
			say "could not stop it (already gone?)"
	fi
}

start_pg() {
	local dir
	check_free "upstream PostgreSQL, DEMO_PG_PORT" "$PG_PORT"
	dir=$(svc_dir pg postgres)
	echo "$dir" >"$DEMO/pg-dir"
	say "creating PostgreSQL in $dir (127.0.0.1:$PG_PORT, database $PG_DB)"

	# initdb reads the password from a file so it never shows in ps.
	(umask 077 && printf '%s\n' "$DEMO_PG_PASSWORD" >"$dir/pwfile")
	if is_root; then chown postgres: "$dir/pwfile"; fi
	# Run from $dir: the postgres user may not be able to read our cwd.
	(cd "$dir" && as postgres "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --pwfile "$dir/pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync \
		>"$dir/initdb.log" 2>&1) || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
	rm -f "$dir/pwfile"
	self_signed "$dir/data" postgres

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

	(cd "$dir" && as postgres "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -t 60 >/dev/null) || {
		tail -n 20 "$dir/postgres.log" >&2 || true
		die "PostgreSQL did not start (is port $PG_PORT taken?)"
	}

	local conn="host=127.0.0.1 port=$PG_PORT user=$PG_USER sslmode=disable"
	# Quiet the schema's "table does not exist, skipping" notices.
	PGPASSWORD=$DEMO_PG_PASSWORD PGOPTIONS="-c client_min_messages=warning" \
		psql "$conn dbname=postgres" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
	PGPASSWORD=$DEMO_PG_PASSWORD PGOPTIONS="-c client_min_messages=warning" \
		psql "$conn dbname=$PG_DB" -q -v ON_ERROR_STOP=1 -f "$SCHEMA" >/dev/null
	say "loaded $(PGPASSWORD=$DEMO_PG_PASSWORD psql "$conn dbname=$PG_DB" -Atc 'select count(*) from orders') sample orders into PostgreSQL"
}

# --- MariaDB -------------------------------------------------------------

# stop_pid FILE WHAT: stop the process whose ID is on FILE's first line,
# waiting up to 30 seconds for it to exit; only if its command line still
# holds FILE's second line (a pid file outliving a reboot may name another
# program's process).
stop_pid() {
	local pid match i
	[ -f "$1" ] || return 0
	{ read -r pid && read -r match; } <"$1" || { rm -f "$1"; return 0; }
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
	if [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" != *"$match"* ]]; then
		rm -f "$1"
		return 0
	fi
	say "stopping the demo $2 (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$2 ignored SIGTERM for 30s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$1"
}

stop_mariadb() { stop_pid "$DEMO/mariadb.pid" MariaDB; }

start_mariadb() {
	local dir owner= user_opt=() i
	check_free "upstream MariaDB, DEMO_MYSQL_PORT" "$MY_PORT"
	if is_root; then
		owner=mysql
		user_opt=(--user=mysql)
	fi
	dir=$(svc_dir mariadb "$owner")
	say "creating MariaDB in $dir (127.0.0.1:$MY_PORT, database $MY_DB)"
	mkdir -m 700 "$dir/tmp"
	if is_root; then chown mysql: "$dir/tmp"; fi
	# root@localhost without a password over the socket, to set one below.
	(cd "$dir" && TMPDIR=$dir/tmp "$MARIADB_INSTALL_DB" --no-defaults --datadir="$dir/data" \
		--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve "${user_opt[@]}" \
		>"$dir/install.log" 2>&1) || { tail -n 20 "$dir/install.log" >&2; die "mariadb-install-db failed"; }
	self_signed "$dir" "${owner:-$(id -un)}"

	local sock=$dir/mysqld.sock
	(cd "$dir" && exec "$MARIADBD" --no-defaults "${user_opt[@]}" --datadir="$dir/data" \
		--bind-address=127.0.0.1 --port="$MY_PORT" --socket="$sock" --pid-file="$dir/mariadbd.pid" \
		--tmpdir="$dir/tmp" --log-error="$dir/mariadb.log" --skip-name-resolve \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
		--innodb-flush-log-at-trx-commit=0 --skip-innodb-doublewrite --innodb-buffer-pool-size=64M \
		--performance-schema=OFF \
		--ssl-cert="$dir/server.crt" --ssl-key="$dir/server.key" --ssl-ca="$dir/server.crt" \
		</dev/null >>"$dir/mariadb.log" 2>&1) &
	local pid=$!
	printf '%s\n%s\n' "$pid" "--datadir=$dir/data" >"$DEMO/mariadb.pid"
	for i in $(seq 1 600); do
		kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/mariadb.log" >&2; die "MariaDB exited at start"; }
		mysql --no-defaults -S "$sock" -u root -e 'select 1' >/dev/null 2>&1 && break
		[ "$i" -lt 600 ] || { tail -n 20 "$dir/mariadb.log" >&2; die "MariaDB did not answer within 60s"; }
		sleep 0.1
	done

	# The gateway's account, reachable over TCP; the installer's other
	# accounts go, and root@localhost (socket only) gets the same password.
	local pw=$SHOP_MYSQL_PASSWORD drops
	drops=$(mysql --no-defaults -S "$sock" -u root -N -e \
		"SELECT CONCAT('DROP USER ', QUOTE(User), '@', QUOTE(Host), ';') FROM mysql.user
		 WHERE User IN ('root', '') AND NOT (User = 'root' AND Host = 'localhost')")
	mysql --no-defaults -S "$sock" -u root -e "$drops
		CREATE USER '$MY_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
		GRANT ALL PRIVILEGES ON *.* TO '$MY_USER'@'127.0.0.1' WITH GRANT OPTION;
		CREATE DATABASE $MY_DB;
		ALTER USER root@localhost IDENTIFIED BY '$pw';" || die "could not set up MariaDB's accounts"
	MYSQL_PWD=$pw mysql --no-defaults -h 127.0.0.1 -P "$MY_PORT" -u "$MY_USER" "$MY_DB" <"$SCHEMA_MYSQL" ||
		die "could not load $SCHEMA_MYSQL into MariaDB"
	say "loaded $(MYSQL_PWD=$pw mysql --no-defaults -h 127.0.0.1 -P "$MY_PORT" -u "$MY_USER" -N -e 'select count(*) from orders' "$MY_DB") sample orders into MariaDB"
}

# --- the box: an sshd ----------------------------------------------------

stop_box() { stop_pid "$DEMO/sshd.pid" sshd; }

# ssh_key FILE COMMENT: an ed25519 key pair, made once and then kept.
ssh_key() {
	[ -f "$1" ] && [ -f "$1.pub" ] && return
	rm -f "$1" "$1.pub"
	ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1" || die "ssh-keygen could not make $1"
}

# box_account sets BOX_USER and BOX_HOME: the account the gateway logs in
# as on the box.
box_account() {
	if ! is_root; then
		BOX_USER=$(id -un)
		BOX_HOME=$DEMO/box
		return
	fi
	if ! id -u "$BOX_ACCOUNT" >/dev/null 2>&1; then
		say "creating the unprivileged account $BOX_ACCOUNT, the box's login (remove it with: userdel -r $BOX_ACCOUNT)"
		# Password '*': no password login, yet not locked ('!'), which sshd
		# without PAM would refuse even for a key.
		useradd --system --create-home --shell /bin/bash --password '*' \
			--comment "airlock demo box" "$BOX_ACCOUNT" || die "useradd $BOX_ACCOUNT failed"
	fi
	BOX_USER=$BOX_ACCOUNT
	BOX_HOME=$(getent passwd "$BOX_ACCOUNT" | cut -d: -f6)
	[ -d "$BOX_HOME" ] || die "the home of $BOX_ACCOUNT, $BOX_HOME, is missing: remove the account (userdel $BOX_ACCOUNT) and run again"
}

# standin_systemctl FILE: the box's systemctl. The demo machine may run no
# systemd (a container), so `systemctl status nginx` from the README gets a
# fixed answer instead of "System has not been booted with systemd".
standin_systemctl() {
	cat >"$1" <<-'EOF'
		#!/bin/sh
		# airlock demo: a stand-in for systemctl on the demo box (scripts/demo.sh).
		if [ "$1" = status ] && [ $# -ge 2 ]; then
		    shift
		    for unit in "$@"; do
		        unit=${unit%.service}
		        cat <<STATUS
		● $unit.service - $unit (airlock demo stand-in)
		     Loaded: loaded (/lib/systemd/system/$unit.service; enabled; preset: enabled)
		     Active: active (running) since $(date -d '-3 hours' '+%a %Y-%m-%d %H:%M:%S %Z'); 3h ago
		   Main PID: 4242 ($unit)
		      Tasks: 3 (limit: 4915)
		     Memory: 12.5M
		STATUS
		    done
		    exit 0
		fi
		echo "systemctl: this demo box only has a stand-in for 'systemctl status UNIT'" >&2
		exit 1
	EOF
	chmod 755 "$1"
}

start_box() {
	local dir bin
	check_free "upstream sshd, DEMO_BOX_PORT" "$BOX_PORT"
	box_account
	mkdir -p -m 700 "$SSH_DIR"
	ssh_key "$SSH_DIR/box_host_ed25519_key" "airlock demo box host key"
	ssh_key "$SSH_DIR/gateway_to_box_key" "airlock demo gateway's key for the box"
	ssh_key "$SSH_DIR/gateway_host_ed25519_key" "airlock demo gateway host key"
	# sshd runs as root (or as us) and reads everything from here.
	dir=$(svc_dir box)
	say "starting sshd for the box on 127.0.0.1:$BOX_PORT (login: $BOX_USER)"
	bin=$BOX_HOME/bin
	if is_root; then
		install -d -m 755 -o "$BOX_USER" -g "$(id -gn "$BOX_USER")" "$bin"
	else
		mkdir -p "$bin"
	fi
	standin_systemctl "$bin/systemctl"
	# sshd reads authorized_keys as the box's user.
	local keys=$dir/authorized_keys
	if is_root; then
		keys=$BOX_HOME/.ssh/authorized_keys
		install -d -m 700 -o "$BOX_USER" -g "$(id -gn "$BOX_USER")" "$BOX_HOME/.ssh"
	fi
	install -m 600 "$SSH_DIR/gateway_to_box_key.pub" "$keys"
	if is_root; then chown "$BOX_USER": "$keys"; fi
	# The privilege separation directory, missing where the system sshd
	# never ran.
	if is_root; then mkdir -p /run/sshd; fi
	cat >"$dir/sshd_config" <<-EOF
		# airlock demo box, written by scripts/demo.sh
		Port $BOX_PORT
		ListenAddress 127.0.0.1
		HostKey $SSH_DIR/box_host_ed25519_key
		PidFile $dir/sshd.pid
		AuthorizedKeysFile $keys
		AllowUsers $BOX_USER
		StrictModes no
		PubkeyAuthentication yes
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		PermitRootLogin no
		UsePAM no
		# The box's stand-ins first (see $bin).
		SetEnv PATH=$bin:/usr/local/bin:/usr/bin:/bin
		AllowTcpForwarding yes
		X11Forwarding no
		PrintMotd no
		PrintLastLog no
		Subsystem sftp internal-sftp
	EOF
	/usr/sbin/sshd -D -e -f "$dir/sshd_config" </dev/null >>"$dir/sshd.log" 2>&1 &
	local pid=$! i
	printf '%s\n%s\n' "$pid" "-f $dir/sshd_config" >"$DEMO/sshd.pid"
	for i in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/sshd.log" >&2; die "sshd exited at start"; }
		ssh_greets "$BOX_PORT" && return
		sleep 0.1
	done
	tail -n 20 "$dir/sshd.log" >&2
	die "sshd did not answer on 127.0.0.1:$BOX_PORT within 15s"
}

stop_servers() {
	stop_box
	stop_mariadb
	stop_pg
}

# --- the gateway's configuration ------------------------------------------

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
		export AIRLOCK_SERVER=http://127.0.0.1:$GW_HTTP
		export AGENT_TOKEN=$AGENT_TOKEN
		export ALICE_TOKEN=$ALICE_TOKEN
		export RITA_TOKEN=$RITA_TOKEN
	EOF
}

# gen_config prints the demo's configuration. It holds no per-run secret
# (passwords come from the environment, keys are files kept in demo/ssh),
# so it is the same on every run until tokens, ports or this script change.
gen_config() {
	cat <<-EOF
		# airlock demo configuration, written by scripts/demo.sh. Edit it freely:
		# a re-run keeps an edited file and writes its own next to it
		# (airlock.yaml.new). Tokens are in env.sh; only their SHA-256 is here.
		data_dir: $DEMO/airlock-data
		listen:
		  postgres: 127.0.0.1:$GW_PG
		  mysql: 127.0.0.1:$GW_MY
		  ssh: 127.0.0.1:$GW_SSH
		  ssh_host_key_file: $SSH_DIR/gateway_host_ed25519_key
		  http: 127.0.0.1:$GW_HTTP
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
		  - name: shop-mysql
		    protocol: mysql
		    address: 127.0.0.1:$MY_PORT
		    database: $MY_DB
		    user: $MY_USER
		    auth: { type: password, password_env: SHOP_MYSQL_PASSWORD }
		  - name: build-box
		    protocol: ssh
		    address: 127.0.0.1:$BOX_PORT
		    user: $BOX_USER
		    auth: { type: private_key, key_file: $SSH_DIR/gateway_to_box_key }
		    host_key: "$(cut -d' ' -f1,2 "$SSH_DIR/box_host_ed25519_key.pub")"
	EOF
}

# write_config writes demo/airlock.yaml unless it was edited since this
# script wrote it; then it keeps it, writes airlock.yaml.new and shows the
# difference.
write_config() {
	local new old_sum=
	new=$(gen_config)
	rm -f "$CONFIG.new"
	if [ -f "$CONFIG" ] && [ -n "${DEMO_RESET:-}" ] && [ "$(cat "$CONFIG")" != "$new" ] &&
		! { [ -f "$CONFIG_SUM" ] && [ "$(sha256sum <"$CONFIG" | cut -d' ' -f1)" = "$(cat "$CONFIG_SUM")" ]; }; then
		cp "$CONFIG" "$CONFIG.bak"
		say "DEMO_RESET: replacing the edited $CONFIG; the old one is saved as $CONFIG.bak"
	elif [ -f "$CONFIG" ] && [ -z "${DEMO_RESET:-}" ]; then
		if [ "$(cat "$CONFIG")" = "$new" ]; then
			say "configuration: $CONFIG (unchanged)"
			sha256sum <"$CONFIG" | cut -d' ' -f1 >"$CONFIG_SUM"
			return
		fi
		[ -f "$CONFIG_SUM" ] && old_sum=$(cat "$CONFIG_SUM")
		if [ "$(sha256sum <"$CONFIG" | cut -d' ' -f1)" != "$old_sum" ]; then
			printf '%s\n' "$new" >"$CONFIG.new"
			cat >&2 <<-EOF
				==> $CONFIG differs from what this run would write, and was edited
				    (or written by an older demo): KEEPING it, and the gateway runs with it.
				    This run's configuration is in $CONFIG.new; what differs (- yours, + new):
			EOF
			diff -u "$CONFIG" "$CONFIG.new" | sed -n '3,$p' | sed 's/^/    /' >&2 || true
			cat >&2 <<-EOF
				==> to use the new one: mv $CONFIG.new $CONFIG (then run the demo again);
				    to have the demo replace an edited file: DEMO_RESET=1 (new tokens, empty data).
				    The walkthrough below assumes the new one.
			EOF
			return
		fi
		say "configuration: $CONFIG replaced (written by an earlier run and not edited since)"
	else
		say "configuration: $CONFIG written"
	fi
	printf '%s\n' "$new" >"$CONFIG"
	sha256sum <"$CONFIG" | cut -d' ' -f1 >"$CONFIG_SUM"
}

# listen_ports prints "NAME PORT" for each listener in the configuration
# the gateway runs with (it may be a kept, edited one).
listen_ports() {
	awk '
		/^listen:/ { in_listen = 1; next }
		/^[^ #]/ { in_listen = 0 }
		in_listen && $1 ~ /^(postgres|mysql|ssh|http):$/ && $2 ~ /:[0-9]+$/ {
			name = substr($1, 1, length($1) - 1); n = split($2, a, ":"); print name, a[n]
		}' "$CONFIG"
}

instructions() {
	cat <<-EOF

		airlock demo is ready.
		  upstream PostgreSQL  127.0.0.1:$PG_PORT, database $PG_DB   (resource demo-pg)
		  upstream MariaDB     127.0.0.1:$MY_PORT, database $MY_DB   (resource shop-mysql)
		  upstream sshd        127.0.0.1:$BOX_PORT, user $BOX_USER   (resource build-box)
		                       only the gateway has their passwords and the box's key
		  gateway              Postgres 127.0.0.1:$GW_PG, MySQL 127.0.0.1:$GW_MY, SSH 127.0.0.1:$GW_SSH,
		                       HTTP API and console http://127.0.0.1:$GW_HTTP
		  files                $SHOW_DEMO/airlock.yaml (config), $SHOW_DEMO/env.sh (API tokens)
		  gateway's SSH host key  $(ssh-keygen -lf "$SSH_DIR/gateway_host_ed25519_key.pub" | cut -d' ' -f2)
		                       (ssh asks to confirm it on first connection)

		Try it from another terminal, in $ROOT:

		  . $SHOW_DEMO/env.sh

		  # 1. The agent asks for read access for its task. Note the request ID
		  #    and the connection token; the token works once the request is approved.
		  AIRLOCK_TOKEN=\$AGENT_TOKEN $CLI request --resource demo-pg --task "INC-42: count yesterday's failed orders" --access read

		  # 2. Alice, an approver, approves it.
		  AIRLOCK_TOKEN=\$ALICE_TOKEN $CLI grants list
		  AIRLOCK_TOKEN=\$ALICE_TOKEN $CLI grants approve ID

		  # 3. The agent connects with plain psql; the connection token is the
		  #    password (psql asks for it, or set PGPASSWORD).
		  psql "host=127.0.0.1 port=$GW_PG user=agent-1 dbname=demo-pg sslmode=require"
		    select count(*) from orders where status = 'failed'
		      and created_at >= current_date - 1 and created_at < current_date;   -- 8
		    delete from orders;   -- denied: the grant is read-only, and the denial is recorded

		  # MySQL and SSH work the same way: request, approve, then connect with
		  # the token as the password.
		  AIRLOCK_TOKEN=\$AGENT_TOKEN $CLI request --resource shop-mysql --task "INC-42: the same in the shop" --access read
		  mysql -h 127.0.0.1 -P $GW_MY -u agent-1 -p --ssl shop-mysql
		    select count(*) from orders where status = 'failed';   -- 25
		  AIRLOCK_TOKEN=\$AGENT_TOKEN $CLI request --resource build-box --task "INC-7: is nginx up" --command "systemctl status *"
		  ssh -p $GW_SSH agent-1+build-box@127.0.0.1 systemctl status nginx
		  ssh -p $GW_SSH agent-1+build-box@127.0.0.1 systemctl restart nginx   # denied: not in the grant

		  # 4. Rita, a reviewer, reads what happened: who, why, every statement
		  #    with its decision, including the denied one.
		  AIRLOCK_TOKEN=\$RITA_TOKEN $CLI sessions list
		  AIRLOCK_TOKEN=\$RITA_TOKEN $CLI sessions show SESSION_ID

		  # Or approve in the web console, http://127.0.0.1:$GW_HTTP/ui/ (docs/console.md),
		  # with the sign-in link below; for a new one (each works once, for 60 seconds):
		  AIRLOCK_TOKEN=\$ALICE_TOKEN $CLI console

	EOF
}

# --- the gateway ---------------------------------------------------------

# stop_gateway stops the gateway started in the background, if it runs.
stop_gateway() {
	if [ -n "${GW_PID:-}" ] && kill -0 "$GW_PID" 2>/dev/null; then
		kill -INT "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
}

# wait_gateway waits until the gateway's API is healthy and every listener
# of its configuration accepts connections (the SSH one greets).
wait_gateway() {
	local i name port waiting http=
	while read -r name port; do
		[ "$name" = http ] && http=$port
	done < <(listen_ports)
	[ -n "$http" ] || die "no listen.http address found in $CONFIG"
	for i in $(seq 1 1200); do
		kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited (its log is above)"
		waiting=
		healthy "$http" || waiting="the HTTP API on 127.0.0.1:$http"
		while [ -z "$waiting" ] && read -r name port; do
			case $name in
			ssh) ssh_greets "$port" || waiting="the SSH listener on 127.0.0.1:$port" ;;
			*) port_open "$port" || waiting="the $name listener on 127.0.0.1:$port" ;;
			esac
		done < <(listen_ports)
		[ -n "$waiting" ] || return 0
		if [ $((i % 40)) -eq 0 ]; then say "waiting for $waiting"; fi
		sleep 0.25
	done
	die "the gateway did not become ready within 5 minutes (waiting for $waiting)"
}

# console_link prints the console's address and a one-time sign-in link for
# the demo approver.
console_link() {
	local link http
	http=$(listen_ports | awk '$1 == "http" { print $2 }')
	if link=$(AIRLOCK_TOKEN=$ALICE_TOKEN "$AIRLOCK" console --server "http://127.0.0.1:$http" 2>"$DEMO/console.err"); then
		cat <<-EOF
			web console: http://127.0.0.1:$http/ui/
			sign in as alice (approver) within 60 seconds, once:
			    $link
			    (a new link: AIRLOCK_TOKEN=\$ALICE_TOKEN $CLI console; or paste \$ALICE_TOKEN at /ui/signin)

		EOF
		rm -f "$DEMO/console.err"
	else
		say "could not make a console sign-in link: $(cat "$DEMO/console.err")"
		say "make one with: AIRLOCK_TOKEN=\$ALICE_TOKEN $CLI console"
	fi
}

main() {
	if [ "${1:-}" = stop ]; then
		PG_BIN=$(find_pg_bin) || die "pg_ctl not found"
		stop_servers
		return
	fi
	[ $# -eq 0 ] || die "usage: scripts/demo.sh [stop]"
	require_tools

	if [ -z "${DEMO_SKIP_BUILD:-}${DEMO_BIN:-}" ]; then
		say "building bin/airlock"
		go build -o bin/airlock ./cmd/airlock
	fi
	[ -x "$AIRLOCK" ] || die "$AIRLOCK is missing: build it with make build"

	mkdir -p "$DEMO"
	stop_servers # servers of an earlier run still hold the ports
	rm -f "$DEMO/pg-password" "$DEMO/mysql-password"
	if [ -n "${DEMO_RESET:-}" ]; then
		rm -rf "$DEMO/airlock-data"
	fi
	# The gateway's upstream passwords: new on every run, only in its
	# environment.
	DEMO_PG_PASSWORD=$(random_hex)
	SHOP_MYSQL_PASSWORD=$(random_hex)
	export DEMO_PG_PASSWORD SHOP_MYSQL_PASSWORD
	# The gateway's listeners must be free too, or it fails after all this.
	check_free "gateway Postgres, DEMO_LISTEN_PG" "$GW_PG"
	check_free "gateway MySQL, DEMO_LISTEN_MYSQL" "$GW_MY"
	check_free "gateway SSH, DEMO_LISTEN_SSH" "$GW_SSH"
	check_free "gateway HTTP, DEMO_LISTEN_HTTP" "$GW_HTTP"
	# From here on servers run: stop them however the script ends, unless
	# they are deliberately left running below.
	trap stop_servers EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	start_pg
	start_mariadb
	start_box
	tokens
	write_config

	if [ -n "${DEMO_NO_GATEWAY:-}" ]; then
		trap - EXIT
		(umask 077 && printf '%s\n' "$DEMO_PG_PASSWORD" >"$DEMO/pg-password" &&
			printf '%s\n' "$SHOP_MYSQL_PASSWORD" >"$DEMO/mysql-password")
		say "DEMO_NO_GATEWAY set: PostgreSQL, MariaDB and sshd keep running. Start the gateway with"
		say "  DEMO_PG_PASSWORD=\$(cat $DEMO/pg-password) SHOP_MYSQL_PASSWORD=\$(cat $DEMO/mysql-password) $CLI gateway --config $CONFIG"
		say "then follow the steps below; stop the servers with: scripts/demo.sh stop"
		instructions | sed 's/^airlock demo is ready\.$/airlock demo: the upstreams are ready; the gateway is yours to start./'
		return
	fi

	say "starting the gateway (Ctrl-C stops it and the demo's servers)"
	# In the background, so readiness can be checked before saying it; the
	# EXIT trap stops it, then the servers.
	"$AIRLOCK" gateway --config "$CONFIG" &
	GW_PID=$!
	trap 'stop_gateway; stop_servers' EXIT
	wait_gateway
	instructions
	console_link
	local rc=0
	wait "$GW_PID" || rc=$?
	GW_PID=
	return "$rc"
}

main "$@"
