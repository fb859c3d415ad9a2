#!/bin/sh
# The demo MariaDB of docker-compose.yml (Dockerfile target mariadb):
# Debian's package, data in /var/lib/mysql. On first start it makes the
# data directory, the database MARIADB_DATABASE (default app) with the
# sample schema, and root@'%' with MARIADB_ROOT_PASSWORD (root@localhost
# keeps Debian's socket authentication, which the health check uses); later
# starts use what is there.
set -eu
: "${MARIADB_ROOT_PASSWORD:?is required (docker-compose.yml passes SHOP_MYSQL_PASSWORD from deploy/secrets/.env)}"
db=${MARIADB_DATABASE:-app}
data=/var/lib/mysql

install -d -o mysql -g mysql /run/mysqld
if [ ! -e "$data/.airlock-demo-ready" ]; then
	if [ -e "$data/mysql" ]; then
		echo "entrypoint: $data holds data this image did not finish making (an interrupted first start, or a volume from another image); remove the volume (docker-compose down -v) and start again" >&2
		exit 1
	fi
	echo "entrypoint: first start: making the data directory and database $db" >&2
	mariadb-install-db --user=mysql --datadir="$data" --skip-test-db --auth-root-authentication-method=socket >/dev/null
	# Set up through a private socket and no TCP listener, so the health
	# check (the default socket) passes only once the real server runs.
	sock=/run/mysqld/init.sock
	mariadbd --user=mysql --datadir="$data" --skip-networking --socket="$sock" &
	pid=$!
	i=0
	until mariadb-admin --socket="$sock" ping --silent >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -gt 120 ] || ! kill -0 "$pid" 2>/dev/null; then
			echo "entrypoint: mariadbd did not start for the first setup" >&2
			exit 1
		fi
		sleep 0.5
	done
	# A string literal and an identifier for SQL, quoted.
	pw=$(printf '%s' "$MARIADB_ROOT_PASSWORD" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")
	dbq=$(printf '%s' "$db" | sed 's/`/``/g')
	mariadb --socket="$sock" <<-SQL
		CREATE DATABASE \`$dbq\`;
		CREATE USER 'root'@'%' IDENTIFIED BY '$pw';
		GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
	SQL
	mariadb --socket="$sock" "$db" </usr/share/airlock/sample_schema_mysql.sql
	mariadb-admin --socket="$sock" shutdown
	wait "$pid"
	touch "$data/.airlock-demo-ready"
	chown mysql:mysql "$data/.airlock-demo-ready"
fi
exec mariadbd --user=mysql --datadir="$data" --bind-address=0.0.0.0 --skip-name-resolve
