# syntax=docker/dockerfile:1
#
# hearsay in a container: a Rust builder stage compiles the release binary with the locked
# dependencies; the runtime stage is Debian slim (the builder's glibc) with the binary, a
# dedicated non-root user and nothing else.
#
#   docker build -t hearsay .
#   docker run --rm hearsay --help
#   docker compose -f dist/compose.yaml up -d      # a 3-node cluster (see that file)
#
# The agent reads /etc/hearsay/hearsay.toml (mount one: see dist/hearsay.toml) or takes
# flags; it keeps its key and its store in /var/lib/hearsay (a volume: keep it to keep the
# node's identity). QUIC listens on 7946/udp; the HTTP API on 127.0.0.1:7070 inside the
# container (to bind it elsewhere with --api, give it --api-token-file: the agent refuses
# to serve an API beyond loopback without a token).
# `hearsay status` is the health check. node/tests/packaging.rs lints this file with
# hadolint.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hearsay \
    && install -D -m 0755 target/release/hearsay /out/hearsay

FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/hearsay \
        --shell /usr/sbin/nologin hearsay \
    && install -d -m 0750 -o hearsay -g hearsay /var/lib/hearsay /etc/hearsay/keys
COPY --from=build /out/hearsay /usr/local/bin/hearsay
USER 10001:10001
WORKDIR /var/lib/hearsay
VOLUME ["/var/lib/hearsay"]
EXPOSE 7946/udp 7070/tcp
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 CMD ["hearsay", "status"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hearsay"]
CMD ["agent", "--config", "/etc/hearsay/hearsay.toml", "--data-dir", "/var/lib/hearsay"]
