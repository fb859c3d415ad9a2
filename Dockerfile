# airlock images. The default target is the gateway:
#   docker build -t airlock .
# docker-compose.yml also builds the nats target (nats-server from the
# version in go.mod, the server the tests run) and the sshd demo target.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# pg_query_go wraps the PostgreSQL parser in C: the gateway needs cgo.
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/airlock ./cmd/airlock
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/nats-server github.com/nats-io/nats-server/v2

FROM debian:bookworm-slim AS nats
COPY --from=build /out/nats-server /usr/local/bin/nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]

FROM debian:bookworm-slim AS sshd
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd -m -s /bin/bash deploy && mkdir -p /run/sshd
COPY deploy/sshd/entrypoint.sh /entrypoint.sh
EXPOSE 22
ENTRYPOINT ["/entrypoint.sh"]

FROM debian:bookworm-slim AS gateway
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/airlock --shell /usr/sbin/nologin airlock \
 && install -d -o airlock -g airlock -m 700 /var/lib/airlock
COPY --from=build /out/airlock /usr/local/bin/airlock
USER airlock
# The signing key (signing.key) and the TLS certificate are generated here
# on first start: keep the volume, or the gateway's key changes.
VOLUME /var/lib/airlock
EXPOSE 15432 13306 2222 8080
ENTRYPOINT ["airlock"]
CMD ["gateway", "--config", "/etc/airlock/airlock.yaml"]
