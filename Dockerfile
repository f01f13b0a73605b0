# outbox-relay container image (minimal; the operations issue completes it).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml ./
COPY src src
COPY migrations migrations
COPY benches benches
COPY testkit testkit
RUN cargo build --release --bin outbox-relay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 relay
COPY --from=build /src/target/release/outbox-relay /usr/local/bin/outbox-relay
COPY config/relay.toml /etc/outbox-relay/relay.toml
COPY schemas /etc/outbox-relay/schemas
USER relay
ENV OUTBOX_RELAY_CONFIG=/etc/outbox-relay/relay.toml \
    OUTBOX_RELAY__REGISTRY__SCHEMAS_DIR=/etc/outbox-relay/schemas
ENTRYPOINT ["outbox-relay"]
CMD ["run"]
