# syntax=docker/dockerfile:1
# outbox-relay container image. Build: `docker build -t outbox-relay .` (from the repository root).
#
# - build: the pinned toolchain (the rustc the project is built and tested with), dependencies
#   compiled in their own layer from the manifests alone, then the relay binary.
# - runtime: debian bookworm-slim, the binary, the config and the schema catalogue; runs as a
#   numeric non-root user, writes nothing outside /tmp (a read-only root filesystem works).
#
# No container engine ran on the machine this was written on: tests/it/deploy.rs checks this
# file (stages, pins, user, health check, copied paths) and runs the image's command line from a
# directory laid out the way this file lays out the image.

FROM rust:1.95.0-bookworm AS build
# The OpenSSL and zlib headers that librdkafka (rdkafka's `ssl` and `libz` features, built by
# its own configure and make) and native-tls link against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependency layer: the manifests, with an empty file for every target they declare (cargo
# refuses a manifest whose targets are missing), so that this layer is rebuilt only when a
# manifest changes, not on every source edit. The test stubs stay (tests are not built here). Cargo.lock is not committed: a lock file present in
# the build context is used (the glob copies it when there is one).
COPY Cargo.toml Cargo.lock* ./
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src/bin/outbox-bench benches tests/it tests/faults testkit/src/bin \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > src/bin/outbox-bench/main.rs \
    && echo 'fn main() {}' > benches/encode.rs \
    && echo 'fn main() {}' > benches/claim.rs \
    && touch tests/it/main.rs tests/faults/main.rs testkit/src/lib.rs \
    && echo 'fn main() {}' > testkit/src/bin/schema-registry-double.rs \
    && cargo build --release --bin outbox-relay \
    && rm -rf src benches testkit/src target/release/outbox-relay* \
              target/release/deps/outbox_relay-* target/release/deps/liboutbox_relay-* \
              target/release/.fingerprint/outbox-relay-*

# The relay itself (migrations are compiled in: src/outbox/migrate.rs includes them).
COPY src src
COPY migrations migrations
COPY benches benches
COPY testkit testkit
RUN cargo build --release --bin outbox-relay \
    && install -D -m 0755 target/release/outbox-relay /out/outbox-relay

# bookworm-slim follows Debian's security updates; pin it by digest where builds must be
# reproducible.
FROM debian:bookworm-slim AS runtime
# libssl3 for librdkafka's TLS and native-tls, ca-certificates for brokers/registries on public CAs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/outbox-relay /usr/local/bin/outbox-relay
COPY config/relay.toml /etc/outbox-relay/relay.toml
COPY schemas /etc/outbox-relay/schemas
# The config file's paths are relative to the working directory (schemas_dir = "schemas"); these
# make them absolute, and open the endpoint to other hosts (the default is loopback only).
# Everything else (database.url, kafka.bootstrap_servers, registry.url, passwords) comes from the
# environment of the deployment: OUTBOX_RELAY__SECTION__KEY.
ENV OUTBOX_RELAY_CONFIG=/etc/outbox-relay/relay.toml \
    OUTBOX_RELAY__REGISTRY__SCHEMAS_DIR=/etc/outbox-relay/schemas \
    OUTBOX_RELAY__HTTP__LISTEN=0.0.0.0:9464 \
    OUTBOX_RELAY__LOG__FORMAT=json
# /healthz, /readyz, /metrics (http.listen).
EXPOSE 9464
WORKDIR /etc/outbox-relay
# A numeric UID/GID (no passwd entry needed), so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# Liveness: 200 while every relay worker runs (src/http.rs). `healthcheck --ready` probes /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["outbox-relay", "healthcheck"]
ENTRYPOINT ["outbox-relay"]
CMD ["run"]
