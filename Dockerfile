# outbox-relay container image (minimal; the operations issue completes it).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked --bin outbox-relay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 relay
COPY --from=build /src/target/release/outbox-relay /usr/local/bin/outbox-relay
COPY config/relay.toml /etc/outbox-relay/relay.toml
USER relay
ENV OUTBOX_RELAY_CONFIG=/etc/outbox-relay/relay.toml
ENTRYPOINT ["outbox-relay"]
CMD ["run"]
