#!/usr/bin/env bash
# Installs what airlock's demo and tests need on a Debian machine with Go:
# the PostgreSQL server and client, then the Go modules. Safe to re-run.
set -euo pipefail

need=()
have_pg_bin() { command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null; }
have_pg_bin initdb || need+=(postgresql)
have_pg_bin pg_ctl || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)

if [ ${#need[@]} -gt 0 ]; then
	pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages: run as root: apt-get update && apt-get install -y $pkgs" >&2
		exit 1
	fi
	echo "installing: $pkgs"
	apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi

go mod download
