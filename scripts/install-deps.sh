#!/usr/bin/env bash
# Installs what `make demo` and `make test` run: the Debian packages of the
# real servers and clients, and the Go modules. Only what is missing is
# installed, so running it again is quick. Without root it installs
# nothing and prints the apt-get command to run instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command Debian-package pairs. initdb is looked up in Debian's versioned
# directory too, and mariadbd and sshd in /usr/sbin, which a non-root
# user's PATH lacks.
deps=(
	"initdb postgresql"
	"psql postgresql-client"
	"mariadbd mariadb-server"
	"mysql mariadb-client"
	"sshd openssh-server"
	"ssh openssh-client"
	"sshpass sshpass"
	"openssl openssl"
)

have() {
	command -v "$1" >/dev/null && return
	[ -x "/usr/sbin/$1" ] && return
	[ "$1" = initdb ] && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
for d in "${deps[@]}"; do
	read -r cmd pkg <<<"$d"
	have "$cmd" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages: ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "==> installing ${missing[*]}" >&2
	# A fresh machine may have no package lists: update only if needed.
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
	fi
fi

command -v go >/dev/null || { echo "missing go: install the Go toolchain named in go.mod" >&2; exit 1; }
go mod download
