//! outbox-relay: delivers rows of a Postgres outbox table to Kafka, marking each one delivered
//! only when Kafka has acknowledged it with `acks=all`.
//!
//! The data's path, one module per step:
//! - [`config`] — layered configuration, validation, redaction.
//! - [`outbox`] — the table: migrations, claim (`FOR UPDATE SKIP LOCKED`), mark, reschedule, park.
//! - [`serialize`] — row → record bytes: raw JSON, or Avro / JSON Schema / Protobuf through the
//!   Schema Registry in Confluent wire format.
//! - [`produce`] — the idempotent `acks=all` producer, record building, Kafka error classes.
//! - [`retry`] — the pure retry policy (exponential backoff with jitter, max attempts).
//! - [`relay`] — the loop tying them together in concurrent batch transactions.
//! - [`shutdown`] — SIGTERM/SIGINT → drain, second signal → exit.
//! - [`telemetry`] — logs.
//! - [`metrics`] — the Prometheus metrics: names, help, and the calls the loop reports with.
//! - [`http`] — the operations endpoint: `/healthz`, `/readyz`, `/metrics`.
//! - [`order_check`] — reads a topic back and checks it against the outbox: lost, duplicated,
//!   reordered records.
//! - [`cli`] — the `outbox-relay` subcommands.
//! - [`publish`] — the producer side: applications write events in their own transaction.

pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod order_check;
pub mod outbox;
pub mod produce;
pub mod publish;
pub mod relay;
pub mod retry;
pub mod serialize;
pub mod shutdown;
pub mod telemetry;
