#!/usr/bin/env bash
# make compose-test: docker-compose.yml on a real Docker engine, the way a
# new user runs it. Not part of `make test` (that needs no engine; its
# TestComposeConfig checks the same files statically). It
#
#   1. checks what it needs (a Docker engine, Compose, a BuildKit-capable
#      docker CLI, go, python3, curl) and says what is missing;
#   2. makes sure the Dockerfile's two base images exist: pulls them, and
#      where a pull fails builds a clearly named local stand-in from Debian's
#      packages (see "Base images" below) and says so;
#   3. checks the build context (.dockerignore: no deploy/secrets, no .git);
#   4. builds every image, checks no module outside the binaries' imports
#      was downloaded and no layer of the sshd image holds a host key;
#   5. starts the stack with fresh secrets (go run ./deploy/gensecrets, in a
#      temporary directory), waits for the health checks;
#   6. as an agent in the agent container (agents network only): requests
#      access with the airlock CLI, has alice approve it, then runs psql,
#      mysql and ssh through the gateway; one refused statement too;
#   7. checks sessions list and verify, and that the events stream holds
#      the same events on all three NATS nodes;
#   8. stops the stack and starts it again with its volumes, twice: through
#      Compose (up -d, which waits for the health checks) and as the engine
#      does at boot (every container at once, depends_on ignored); each
#      time it checks the stack comes back by itself: the gateway healthy
#      without having exited or been restarted by its restart policy, old
#      sessions listed and verified, a new psql session works, the three
#      nodes agree, sshd started without a host key warning;
#   9. tears everything down (containers, networks, volumes), also when a
#      step failed or it was interrupted. AIRLOCK_COMPOSE_KEEP=1 leaves the
#      stack running instead, and says how to remove it.
#
# The stack runs as its own Compose project (AIRLOCK_COMPOSE_PROJECT,
# default airlock-compose-test) with its published ports on free loopback
# ports, its images tagged airlock-compose-test/*, and its secrets in a
# temporary directory: it does not touch deploy/secrets, the airlock:dev
# images, or a stack started from docker-compose.yml by hand. Images are
# kept for the next run; remove them with
#   docker image rm $(docker image ls -q 'airlock-compose-test/*') $(docker image ls -q 'airlock-standin/*')
#
# Base images: where golang:1.26-bookworm or debian:bookworm-slim (the
# Dockerfile's GO_IMAGE and DEBIAN_IMAGE) cannot be pulled, as on a machine
# that reaches Debian's package mirror but no container registry, the test
# builds stand-ins and passes them to the build as GO_IMAGE/DEBIAN_IMAGE:
#   airlock-standin/debian:bookworm-slim   debootstrap --variant=minbase
#                                          from Debian's mirror (root and
#                                          the debootstrap package needed)
#   airlock-standin/golang:1.26-bookworm   that, plus gcc and libc6-dev, plus
#                                          this machine's Go toolchain
#                                          (go env GOROOT, same minor version)
# They never take the official names, so nothing else built on this
# machine picks them up by mistake.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
project=${AIRLOCK_COMPOSE_PROJECT:-airlock-compose-test}
keep=${AIRLOCK_COMPOSE_KEEP:-0}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
started=$SECONDS

say() { printf '[compose-test %4ds] %s\n' $((SECONDS - started)) "$*" >&2; }
fail() {
	say "FAIL: $*"
	exit 1
}
loud() {
	local line
	printf '\n%s\n' "########################################################################" >&2
	for line in "$@"; do printf '## %s\n' "$line" >&2; done
	printf '%s\n\n' "########################################################################" >&2
}

# --- 1. What it needs -------------------------------------------------------

command -v docker >/dev/null || fail "no docker command: install docker.io (Debian) or Docker Engine, and start it"
if ! docker info >/dev/null 2>/tmp/compose-test-docker-info.$$; then
	msg=$(tail -n 1 /tmp/compose-test-docker-info.$$)
	rm -f /tmp/compose-test-docker-info.$$
	fail "no Docker engine: 'docker info' failed ($msg); start dockerd (or the docker service), or install docker.io"
fi
rm -f /tmp/compose-test-docker-info.$$
if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
elif command -v docker-compose >/dev/null; then
	compose=(docker-compose)
else
	fail "no Docker Compose: install docker-compose (Debian) or the Compose plugin (docker compose)"
fi
for tool in go python3 curl; do
	command -v "$tool" >/dev/null || fail "no $tool: it is needed to make the secrets (go), read JSON (python3) and reach the published API (curl)"
done

work=$(mktemp -d /tmp/airlock-compose-test.XXXXXX)
standin_note=()
canary=""
canary_dir=""
stack=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$stack" ] && [ "$rc" -ne 0 ]; then
		say "state at the failure:"
		dc ps >&2 || true
		dc logs --no-color --tail=40 >&2 || true
	fi
	if [ -n "$stack" ] && [ "$keep" = 1 ]; then
		say "AIRLOCK_COMPOSE_KEEP=1: the stack is still running; its files are in $work. Remove it with:"
		say "  ${dc_cmd[*]} down --volumes"
	else
		if [ -n "$stack" ]; then
			say "tearing down (containers, networks, volumes)"
			dc down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || say "WARNING: '${compose[*]} down' failed: remove project $project by hand"
		fi
		rm -rf "$work"
	fi
	[ -z "$canary" ] || rm -f "$canary"
	[ -z "$canary_dir" ] || rmdir "$canary_dir" 2>/dev/null || true
	if [ ${#standin_note[@]} -gt 0 ]; then
		loud "This run built its images on LOCAL STAND-INS for the base images:" "${standin_note[@]}"
	fi
	if [ "$rc" -eq 0 ]; then
		say "PASS ($((SECONDS - started)) s)"
	else
		say "FAILED (exit $rc, after $((SECONDS - started)) s)"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Dockerfile's cache mounts need BuildKit. A docker CLI of 23 or later
# builds with BuildKit only through its buildx plugin; one of 20.10 has it
# built in (DOCKER_BUILDKIT=1). Use the first docker on PATH that can, and
# put it first on PATH for docker-compose 1.x, which runs `docker build`.
buildkit_ok() {
	local d=$work/buildkit-probe
	rm -rf "$d" && mkdir -p "$d/ctx"
	printf 'FROM scratch\nCOPY probe /probe\n' >"$d/ctx/Dockerfile"
	echo ok >"$d/ctx/probe"
	DOCKER_BUILDKIT=1 "$1" build -q -o "type=local,dest=$d/out" "$d/ctx" >/dev/null 2>&1 && [ -f "$d/out/probe" ]
}
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
first_docker=$(command -v docker)
if ! buildkit_ok "$first_docker"; then
	found=""
	while read -r cand; do
		if [ "$cand" != "$first_docker" ] && buildkit_ok "$cand"; then
			found=$cand
			break
		fi
	done < <(type -ap docker | awk '!seen[$0]++')
	[ -n "$found" ] || fail "no docker CLI here builds with BuildKit, which the Dockerfile's cache mounts need: install the buildx plugin (docker-buildx or docker-buildx-plugin)"
	loud "$first_docker cannot build with BuildKit (no buildx plugin);" "using $found instead (first on PATH for this test only)."
	mkdir -p "$work/bin"
	ln -s "$found" "$work/bin/docker"
	export PATH="$work/bin:$PATH"
fi

# --- 2. Base images -----------------------------------------------------------

go_image=$(sed -n 's/^ARG GO_IMAGE=//p' Dockerfile)
debian_image=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
[ -n "$go_image" ] && [ -n "$debian_image" ] || fail "Dockerfile: no ARG GO_IMAGE=... or ARG DEBIAN_IMAGE=..."

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pull() {
	say "pulling $1"
	timeout 600 docker pull -q "$1" >"$work/pull.log" 2>&1
}

make_debian_standin() { # tag suite
	local tag=$1 suite=$2 dir
	[ "$(id -u)" = 0 ] || fail "building $tag needs root (debootstrap); run as root, or make $debian_image pullable"
	if ! command -v debootstrap >/dev/null; then
		say "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null ||
			fail "no debootstrap: apt-get install debootstrap"
	fi
	dir=$work/rootfs
	say "debootstrap --variant=minbase $suite from $mirror (a few minutes)"
	debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		fail "debootstrap failed; the end of its log:$(printf '\n')$(tail -n 20 "$work/debootstrap.log")"
	# The official image's package sources: the suite, its updates and security.
	rm -f "$dir/etc/apt/sources.list"
	cat >"$dir/etc/apt/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: http://deb.debian.org/debian
		Suites: $suite $suite-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: http://deb.debian.org/debian-security
		Suites: $suite-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
	tar -C "$dir" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
		docker import \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'CMD ["bash"]' \
			--message "airlock compose-test stand-in for $debian_image: debootstrap --variant=minbase $suite $mirror" \
			- "$tag" >/dev/null
	rm -rf "$dir"
}

make_go_standin() { # tag base
	local tag=$1 base=$2 want goroot gover
	want=${go_image#*:}
	want=${want%%-*}
	goroot=$(go env GOROOT)
	gover=$(go env GOVERSION)
	case $gover in
	"go$want" | "go$want".*) ;;
	*) fail "this machine's Go is $gover; a stand-in for $go_image needs go$want.x: install it, or make $go_image pullable" ;;
	esac
	# Certificate authorities added to this machine (a TLS-inspecting proxy's,
	# say) are what lets go reach the module proxy from here.
	local cas=""
	if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
		cas=$(cat /usr/local/share/ca-certificates/*.crt)
		say "the stand-in trusts this machine's added CAs too: $(echo /usr/local/share/ca-certificates/*.crt)"
	fi
	say "building $tag: $base + gcc + this machine's $gover ($goroot)"
	docker build -q -t "$tag" --build-arg BASE="$base" --build-arg LOCAL_CAS="$cas" -f - "$goroot" >"$work/go-standin.log" 2>&1 <<-'EOF' ||
		ARG BASE
		FROM ${BASE}
		ARG LOCAL_CAS
		RUN apt-get update && apt-get install -y --no-install-recommends \
		      ca-certificates gcc libc6-dev make pkg-config git \
		 && rm -rf /var/lib/apt/lists/* \
		 && if [ -n "$LOCAL_CAS" ]; then \
		      printf '%s\n' "$LOCAL_CAS" >/usr/local/share/ca-certificates/local.crt && update-ca-certificates; \
		    fi
		COPY . /usr/local/go
		ENV GOPATH=/go GOTOOLCHAIN=local PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		WORKDIR /go
	EOF
		fail "building $tag failed:$(printf '\n')$(tail -n 20 "$work/go-standin.log")"
}

debian_use=$debian_image
if have_image "$debian_image"; then
	say "$debian_image: present"
elif pull "$debian_image"; then
	say "$debian_image: pulled"
else
	debian_use=airlock-standin/$debian_image
	loud "cannot pull $debian_image: $(tail -n 1 "$work/pull.log")" \
		"The images of this test are built on a LOCAL STAND-IN, $debian_use," \
		"made with debootstrap from Debian's packages: not the official image."
	if have_image "$debian_use"; then
		say "$debian_use: present from an earlier run ($(docker image inspect -f '{{.Created}}' "$debian_use"))"
	else
		suite=${debian_image#*:} # bookworm-slim -> bookworm
		make_debian_standin "$debian_use" "${suite%%-*}"
	fi
	standin_note+=("$debian_image -> $debian_use")
fi
go_use=$go_image
if have_image "$go_image"; then
	say "$go_image: present"
elif pull "$go_image"; then
	say "$go_image: pulled"
else
	go_use=airlock-standin/$go_image
	loud "cannot pull $go_image: $(tail -n 1 "$work/pull.log")" \
		"The build stage of this test runs on a LOCAL STAND-IN, $go_use:" \
		"$debian_use + gcc + this machine's Go toolchain; not the official image."
	if have_image "$go_use"; then
		say "$go_use: present from an earlier run ($(docker image inspect -f '{{.Created}}' "$go_use"))"
	else
		make_go_standin "$go_use" "$debian_use"
	fi
	standin_note+=("$go_image -> $go_use")
fi

# --- 3. The build context ---------------------------------------------------

# A file where secrets go, to prove .dockerignore keeps it out (removed at
# the end; deploy/secrets is in .gitignore).
if [ ! -d deploy/secrets ]; then
	mkdir -p deploy/secrets
	canary_dir=$root/deploy/secrets
fi
canary=$root/deploy/secrets/compose-test-canary.nk
echo "not a secret: a marker of scripts/compose-test.sh" >"$canary"
say "checking the build context (.dockerignore)"
printf 'FROM scratch\nCOPY . /\n' | docker build -q -o "type=local,dest=$work/context" -f - . >/dev/null 2>"$work/context.log" ||
	fail "exporting the build context failed: $(tail -n 5 "$work/context.log")"
for p in deploy/secrets .git demo airlock-data bin; do
	[ ! -e "$work/context/$p" ] || fail "the build context holds $p: .dockerignore must keep it out"
done
for p in go.mod go.sum cmd/airlock/main.go deploy/healthcheck/main.go deploy/sshd/entrypoint.sh testenv/sample_schema.sql; do
	[ -e "$work/context/$p" ] || fail "the build context lacks $p, which the Dockerfile needs"
done
say "build context: $(du -sh "$work/context" | cut -f1), no deploy/secrets, no .git"
rm -rf "$work/context" "$canary"
canary=""

# --- 4. Build -----------------------------------------------------------------

say "making secrets (go run ./deploy/gensecrets -dir $work/secrets)"
go run ./deploy/gensecrets -dir "$work/secrets" >/dev/null
# shellcheck disable=SC1091
. "$work/secrets/tokens.env"

# The variables the compose file reads come from --env-file only.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(AIRLOCK_NATS_.*|DEMO_PG_PASSWORD|SHOP_MYSQL_PASSWORD)$' || true)
export AIRLOCK_PUBLISH_POSTGRES=127.0.0.1: AIRLOCK_PUBLISH_MYSQL=127.0.0.1: AIRLOCK_PUBLISH_SSH=127.0.0.1: AIRLOCK_PUBLISH_HTTP=127.0.0.1:

{
	echo "# written by scripts/compose-test.sh"
	echo "services:"
	for svc in gateway nats-1 nats-2 nats-3 postgres mariadb sshd agent; do
		target=${svc%-[0-9]}
		cat <<-EOF
			  $svc:
			    image: airlock-compose-test/$target
			    build:
			      context: $root
			      target: $target
			      args: { GO_IMAGE: "$go_use", DEBIAN_IMAGE: "$debian_use" }
		EOF
		if [ "$svc" = gateway ]; then
			echo "    volumes: [\"$work/secrets/airlock.yaml:/etc/airlock/airlock.yaml:ro\"]"
		fi
	done
	cat <<-EOF
		secrets:
		  gateway_nkey: { file: $work/secrets/gateway.nk }
		  box_key: { file: $work/secrets/box_key }
		  box_key_pub: { file: $work/secrets/box_key.pub }
		  sshd_host_key: { file: $work/secrets/sshd_host_key }
	EOF
} >"$work/override.yml"
dc_cmd=("${compose[@]}" --project-name "$project" --env-file "$work/secrets/.env"
	-f "$root/docker-compose.yml" -f "$work/override.yml" --profile agent)
dc() { "${dc_cmd[@]}" "$@"; }
dc config -q || fail "${compose[*]} config rejects docker-compose.yml with the test's override"
stack=1
dc down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true # what an interrupted run left

say "building the images (the first build compiles libpg_query: several minutes)"
if ! dc build >"$work/build.log" 2>&1; then
	tail -n 60 "$work/build.log" >&2
	fail "${compose[*]} build failed"
fi
say "built: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'airlock-compose-test/*' | tr '\n' ' ')"
# Only the modules the images' binaries import are downloaded (a cached
# build downloads nothing, which passes too).
needed=$(go list -deps -f '{{with .Module}}{{.Path}}{{end}}' ./cmd/airlock ./deploy/healthcheck github.com/nats-io/nats-server/v2 | sort -u)
extra=$(grep -o 'go: downloading [^ ]*' "$work/build.log" | awk '{print $3}' | sort -u | comm -23 - <(echo "$needed") || true)
[ -z "$extra" ] || fail "the build downloaded modules no image needs: $(echo "$extra" | tr '\n' ' ')"
say "modules downloaded by this build: $(grep -c 'go: downloading' "$work/build.log" || true), none outside the binaries' imports"

# No layer of the sshd image holds a host key.
docker save airlock-compose-test/sshd >"$work/sshd.tar"
mkdir "$work/sshd-image" && tar -C "$work/sshd-image" -xf "$work/sshd.tar"
while read -r layer; do
	if tar -tf "$layer" 2>/dev/null | grep -q 'etc/ssh/ssh_host_'; then
		fail "a layer of the sshd image holds a host key: $(tar -tf "$layer" | grep 'etc/ssh/ssh_host_' | tr '\n' ' ')"
	fi
done < <(find "$work/sshd-image" -name '*.tar' -o -type f -path '*/blobs/*')
rm -rf "$work/sshd.tar" "$work/sshd-image"
say "sshd image: no host key in any layer"

# --- 5. Up ----------------------------------------------------------------------

# wait_healthy SERVICE TIMEOUT: until its health check passes (or, for a
# service without one, it runs).
wait_healthy() {
	local id status deadline=$((SECONDS + $2))
	id=$(dc ps -q "$1")
	[ -n "$id" ] || fail "service $1 has no container"
	while :; do
		status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
		case $status in healthy | running) return 0 ;; esac
		if [ $SECONDS -ge "$deadline" ]; then
			docker inspect -f '{{json .State.Health}}' "$id" >&2 || true
			fail "service $1 not healthy after $2 s (status $status)"
		fi
		sleep 1
	done
}

say "starting the stack (${compose[*]} up -d: waits for the health checks in dependency order)"
t0=$SECONDS
timeout 600 "${dc_cmd[@]}" up -d >"$work/up.log" 2>&1 ||
	{
		cat "$work/up.log" >&2
		fail "${compose[*]} up failed"
	}
wait_healthy gateway 180
wait_healthy agent 60
say "stack up and healthy in $((SECONDS - t0)) s"

http=$(dc port gateway 8080)
curl -fsS --max-time 10 "http://$http/healthz" >/dev/null || fail "GET http://$http/healthz (the published API port) failed"
say "published API on $http answers /healthz"

check_sshd_log() {
	local log
	log=$(dc logs --no-color sshd 2>&1)
	if grep -q 'does not match' <<<"$log"; then
		fail "sshd warns about its host key: $(grep 'does not match' <<<"$log" | head -n 1)"
	fi
	[ "$(grep -c 'Server listening' <<<"$log")" -ge "$1" ] || fail "sshd did not log 'Server listening' $1 time(s):$(printf '\n')$log"
}
check_sshd_log 1
say "sshd started with its host key and no warning"

# --- 6. An agent's work -------------------------------------------------------

run() { timeout 120 "$@"; }
as_agent() { run "${dc_cmd[@]}" exec -T -e AIRLOCK_TOKEN="$AGENT_1_TOKEN" agent "$@"; }
as_gateway_cli() { # token args...
	local tok=$1
	shift
	run "${dc_cmd[@]}" exec -T -e AIRLOCK_SERVER=http://127.0.0.1:8080 -e AIRLOCK_TOKEN="$tok" gateway airlock "$@"
}
as_alice() { as_gateway_cli "$ALICE_TOKEN" "$@"; }
as_rita() { as_gateway_cli "$RITA_TOKEN" "$@"; }

# request RESOURCE FLAGS...: files the request as agent-1, has alice approve
# it, and prints the token.
request() {
	local resource=$1 out id tok
	shift
	out=$(as_agent airlock request --resource "$resource" --task "compose-test: $resource" "$@") ||
		fail "airlock request --resource $resource: $out"
	id=$(awk '$1 == "request:" {print $2}' <<<"$out")
	tok=$(awk '$1 == "token:" {print $2}' <<<"$out")
	[ -n "$id" ] && [ -n "$tok" ] || fail "airlock request printed no id or token: $out"
	out=$(as_alice grants approve "$id") || fail "airlock grants approve $id: $out"
	grep -q 'is now active' <<<"$out" || fail "airlock grants approve $id: $out"
	say "agent-1 asked for $resource ($*), alice approved $id"
	printf '%s' "$tok"
}

pg_token=$(request demo-pg --access read)
pg_conn="host=gateway port=15432 user=agent-1 dbname=demo-pg sslmode=require connect_timeout=10"
psql_count() {
	as_agent env PGPASSWORD="$pg_token" psql -X -v ON_ERROR_STOP=1 -tA "$pg_conn" -c 'select count(*) from orders'
}
out=$(psql_count 2>&1) || fail "psql through the gateway: $out"
[ "$out" = 200 ] || fail "psql: select count(*) from orders = '$out', want 200"
say "psql: select count(*) from orders = 200"
if out=$(as_agent env PGPASSWORD="$pg_token" psql -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -tA "$pg_conn" -c 'delete from orders' 2>&1); then
	fail "psql: delete under a read grant was not refused: $out"
fi
grep -q '42501' <<<"$out" && grep -q 'airlock' <<<"$out" || fail "psql: delete under a read grant: $out"
say "psql: delete refused (42501) under the read grant"

my_token=$(request shop-mysql --access read)
out=$(as_agent env MYSQL_PWD="$my_token" mysql -h gateway -P 13306 -u agent-1 --ssl --connect-timeout=10 -N -B \
	-e 'select count(*) from customers' shop-mysql 2>&1) || fail "mysql through the gateway: $out"
[ "$out" = 20 ] || fail "mysql: select count(*) from customers = '$out', want 20"
say "mysql: select count(*) from customers = 20"

ssh_token=$(request box --command 'id -un')
# ssh asks for the token through SSH_ASKPASS, whatever the prompt says.
printf '#!/bin/sh\nprintf "%%s\\n" "$GRANT_TOKEN"\n' | as_agent sh -c 'cat >/home/agent/askpass && chmod 700 /home/agent/askpass'
out=$(as_agent env GRANT_TOKEN="$ssh_token" SSH_ASKPASS=/home/agent/askpass SSH_ASKPASS_REQUIRE=force \
	ssh -p 2222 -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/home/agent/known_hosts \
	-o ConnectTimeout=10 -o NumberOfPasswordPrompts=1 agent-1+box@gateway id -un 2>&1) ||
	fail "ssh through the gateway: $out"
[ "$(tail -n 1 <<<"$out")" = deploy ] || fail "ssh agent-1+box@gateway id -un: '$out', want deploy"
say "ssh: id -un on the sshd target = deploy"

# --- 7. The record ------------------------------------------------------------

# sessions_check MIN: sessions list has at least MIN sessions of agent-1,
# all ended; verify --all verifies them all. Prints the session ids.
sessions_check() {
	local out
	out=$(as_rita --json sessions list) || fail "airlock sessions list: $out"
	python3 -c '
import json, sys
want = int(sys.argv[1])
ss = [s for s in json.load(sys.stdin) if s.get("agent") == "agent-1"]
if len(ss) < want:
    sys.exit("sessions list: %d sessions of agent-1, want at least %d" % (len(ss), want))
for s in ss:
    print(s["session"])
' "$1" <<<"$out" || fail "sessions list: $out"
}
verify_all() {
	local out
	out=$(as_rita sessions verify --all 2>&1) || fail "airlock sessions verify --all: $out"
	say "sessions verify --all: $(tail -n 1 <<<"$out")"
	grep -q ' 0 unterminated, 0 failed$' <<<"$out" || fail "sessions verify --all: $out"
}
sessions_before=$(sessions_check 4)
say "sessions list: $(wc -l <<<"$sessions_before") sessions of agent-1"
verify_all

# replicas: the events stream on each NATS node, from its monitoring port;
# waits until the three hold the same events (followers apply shortly
# after the leader acknowledges).
replicas() {
	local n deadline=$((SECONDS + 30)) report
	while :; do
		for n in 1 2 3; do
			dc exec -T "nats-$n" healthcheck -print 'http://127.0.0.1:8222/jsz?acc=AIRLOCK&streams=true&config=true' >"$work/jsz-$n.json" ||
				fail "nats-$n: /jsz did not answer"
		done
		if report=$(python3 - "$work"/jsz-{1,2,3}.json <<-'EOF'
			import json, sys
			rows = []
			for n, path in enumerate(sys.argv[1:], 1):
			    node = "nats-%d" % n
			    j = json.load(open(path))
			    st = [s for a in j.get("account_details", []) for s in a.get("stream_detail", []) if s["name"] == "AIRLOCK_EVENTS"]
			    if not st:
			        print("%s: no AIRLOCK_EVENTS stream" % node)
			        sys.exit(1)
			    s = st[0]
			    st = s["state"]
			    rows.append((node, st["messages"], st["last_seq"], st["bytes"], s.get("config", {}).get("num_replicas"), s.get("cluster", {}).get("leader")))
			print("; ".join("%s: %d events, last seq %d, %d bytes, R%s, leader %s" % r for r in rows))
			ok = len({r[1:4] for r in rows}) == 1 and rows[0][1] > 0 and all(r[4] == 3 for r in rows)
			sys.exit(0 if ok else 1)
		EOF
		); then
			say "events stream on the three nodes: $report"
			return 0
		fi
		[ $SECONDS -lt "$deadline" ] || fail "the three NATS nodes do not hold the same events: $report"
		sleep 1
	done
}
replicas

# --- 8. Stop, start, and come back without help ---------------------------------

gw_id=$(dc ps -q gateway)
starts=1

# came_back HOW: after the stack was started again, the same gateway
# container turns healthy without having exited (no "airlock: ..." error,
# no restart by its restart policy, one more "gateway ready"), and the
# record is whole: earlier sessions listed and verified, a new psql session
# works, the three nodes agree, sshd started without a host key warning.
came_back() {
	local restarts gwlog ready fatal out
	wait_healthy gateway 180
	say "$1: healthy again in $((SECONDS - t0)) s"
	starts=$((starts + 1))
	[ "$(dc ps -q gateway)" = "$gw_id" ] || fail "the gateway's container was replaced; the same container should have started again"
	restarts=$(docker inspect -f '{{.RestartCount}}' "$gw_id")
	gwlog=$(docker logs "$gw_id" 2>&1)
	ready=$(grep -c 'gateway ready' <<<"$gwlog" || true)
	fatal=$(grep '^airlock: ' <<<"$gwlog" | paste -sd '|' - || true)
	if [ "$restarts" != 0 ] || [ "$ready" != "$starts" ] || [ -n "$fatal" ]; then
		fail "$1: the gateway did not come back by itself: it logged 'gateway ready' $ready times for $starts starts, its restart policy restarted it $restarts times; its errors: ${fatal:-none}"
	fi
	say "$1: the gateway came back by itself (no exit, no restart by the restart policy)"
	check_sshd_log "$starts"
	sessions_after=$(sessions_check 4)
	while read -r s; do
		grep -qx "$s" <<<"$sessions_after" || fail "$1: session $s is missing from sessions list"
	done <<<"$sessions_before"
	out=$(psql_count 2>&1) || fail "$1: psql: $out"
	[ "$out" = 200 ] || fail "$1: psql: count = '$out', want 200"
	say "$1: all $(wc -l <<<"$sessions_before") earlier sessions listed, a new psql session works, sshd without warnings"
	verify_all
	replicas
}

say "stopping the stack (${compose[*]} stop), starting it again with its volumes (${compose[*]} up -d)"
dc stop --timeout 20 >/dev/null 2>&1 || fail "${compose[*]} stop failed"
t0=$SECONDS
timeout 600 "${dc_cmd[@]}" up -d >"$work/up2.log" 2>&1 ||
	{
		cat "$work/up2.log" >&2
		fail "${compose[*]} up after stop failed"
	}
came_back "restart through Compose"

# What the engine does at boot, or when dockerd restarts: it starts the
# containers of restart policy "unless-stopped" all at once, with no regard
# for depends_on. The gateway then starts while the NATS cluster elects.
say "stopping again; starting every container at once (docker start), as the engine does at boot"
dc stop --timeout 20 >/dev/null 2>&1 || fail "${compose[*]} stop failed"
t0=$SECONDS
# shellcheck disable=SC2046
docker start $(docker ps -aq --filter "label=com.docker.compose.project=$project") >/dev/null ||
	fail "docker start of the stack's containers failed"
came_back "start without ordering"
