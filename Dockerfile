# airlock images, all made from two base images: GO_IMAGE to build,
# DEBIAN_IMAGE to run. The default target (the last stage) is the gateway:
#   docker build -t airlock .
# docker-compose.yml builds every target: gateway, nats (nats-server at the
# version in go.mod, the server the tests run), and the demo's postgres,
# mariadb, sshd and agent, which are Debian's own packages on DEBIAN_IMAGE
# (so the stack needs no other image and no Docker Hub tag but these two).
#
# It needs BuildKit (the cache mounts below): the default builder since
# Docker 23 and in Compose v2; with Docker 20.10 or docker-compose 1.x set
# DOCKER_BUILDKIT=1. Go modules and the build cache live in cache mounts,
# so only the modules a target's packages import are downloaded (not the
# benchmarks' plotting libraries), and a source change recompiles only
# what changed.
#
# .dockerignore keeps deploy/secrets, .git and local data out of the build
# context; scripts/compose-test.sh checks that.

ARG GO_IMAGE=golang:1.26-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS go
WORKDIR /src
ENV GOMODCACHE=/go/pkg/mod GOCACHE=/root/.cache/go-build GOTOOLCHAIN=local
COPY go.mod go.sum ./

# The health probe of the nats and gateway images: standard library only.
FROM go AS healthcheck-build
COPY deploy/healthcheck ./deploy/healthcheck
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/healthcheck ./deploy/healthcheck

# nats-server needs only go.mod and go.sum, so a change to airlock's source
# does not rebuild it.
FROM go AS nats-build
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/nats-server github.com/nats-io/nats-server/v2

FROM go AS airlock-build
COPY . .
# pg_query_go wraps the PostgreSQL parser in C: the gateway needs cgo.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/airlock ./cmd/airlock

FROM ${DEBIAN_IMAGE} AS nats
COPY --from=nats-build /out/nats-server /usr/local/bin/nats-server
COPY --from=healthcheck-build /out/healthcheck /usr/local/bin/healthcheck
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]

# The demo's PostgreSQL: Debian's package, a cluster made on first start by
# deploy/postgres/entrypoint.sh (the package's own "main" cluster is
# dropped, so no database is baked into the image).
FROM ${DEBIAN_IMAGE} AS postgres
RUN apt-get update && apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && pg_lsclusters -h | while read -r version name _; do pg_dropcluster "$version" "$name"; done \
 && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
COPY testenv/sample_schema.sql /usr/share/airlock/sample_schema.sql
COPY deploy/postgres/entrypoint.sh /entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients.
STOPSIGNAL SIGINT
ENTRYPOINT ["/entrypoint.sh"]

# The demo's MariaDB: Debian's package; the data directory the package
# made at install time is removed, deploy/mariadb/entrypoint.sh makes one on
# first start.
FROM ${DEBIAN_IMAGE} AS mariadb
RUN apt-get update && apt-get install -y --no-install-recommends mariadb-server \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /var/lib/mysql && install -d -o mysql -g mysql -m 750 /var/lib/mysql
COPY testenv/sample_schema_mysql.sql /usr/share/airlock/sample_schema_mysql.sql
COPY deploy/mariadb/entrypoint.sh /entrypoint.sh
VOLUME /var/lib/mysql
EXPOSE 3306
ENTRYPOINT ["/entrypoint.sh"]

# The demo's SSH target. Installing openssh-server generates host keys;
# they are removed in the same layer, so no image layer keeps a private
# key. The host key comes from deploy/secrets at start (entrypoint.sh).
FROM ${DEBIAN_IMAGE} AS sshd
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && useradd -m -s /bin/bash deploy && mkdir -p /run/sshd
COPY deploy/sshd/entrypoint.sh /entrypoint.sh
EXPOSE 22
ENTRYPOINT ["/entrypoint.sh"]

# An agent's machine: the standard clients and the airlock CLI, nothing
# else. docker-compose.yml puts it on the agents network only.
FROM ${DEBIAN_IMAGE} AS agent
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates postgresql-client mariadb-client openssh-client sshpass \
 && rm -rf /var/lib/apt/lists/* \
 && useradd -m -s /bin/bash agent
COPY --from=airlock-build /out/airlock /usr/local/bin/airlock
USER agent
WORKDIR /home/agent
CMD ["sleep", "infinity"]

FROM ${DEBIAN_IMAGE} AS gateway
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/airlock --shell /usr/sbin/nologin airlock \
 && install -d -o airlock -g airlock -m 700 /var/lib/airlock
COPY --from=airlock-build /out/airlock /usr/local/bin/airlock
COPY --from=healthcheck-build /out/healthcheck /usr/local/bin/healthcheck
USER airlock
# The signing key (signing.key) and the TLS certificate are generated here
# on first start: keep the volume, or the gateway's key changes.
VOLUME /var/lib/airlock
EXPOSE 15432 13306 2222 8080
ENTRYPOINT ["airlock"]
CMD ["gateway", "--config", "/etc/airlock/airlock.yaml"]
