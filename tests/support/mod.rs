//! The test harness, shared by the `it` and `faults` binaries (each includes it as
//! `crate::harness`), in the spirit of zero2prod's `spawn_app`: every test builds a
//! [`TestOutbox`] (its own schema, table and topic on the real services `scripts/stack up`
//! starts) and runs a relay on it.
//!
//! - `outbox`: [`TestOutbox`], [`Row`], [`RowState`], inserts, waits that print the rows on a
//!   timeout, sentinels and claim traces that prove a "nothing happened" assertion;
//! - `wait`: the one polling primitive;
//! - `kafka`: topics and the one [`Record`] reader;
//! - `relay`: in-process relays and relay binaries, signals, logs;
//! - `registry`: configs wired to the registry double, confluent-kafka's decoders;
//! - `stack`: dedicated services a fault test may kill (a broker, a three-broker cluster, a
//!   Postgres cluster), and a steady writer.
//!
//! `OUTBOX_TEST_DATABASE_URL` and `OUTBOX_TEST_KAFKA` point elsewhere if needed.

mod kafka;
mod outbox;
mod registry;
mod relay;
mod stack;
mod wait;

pub use kafka::{
    consume_all, create_topic, create_topic_at, create_topic_with, event_id_counts, header,
    read_records, set_property, Record,
};
pub use outbox::{assert_marks_in_key_order, Change, Row, RowState, TestOutbox};
pub use registry::{decode_with_confluent, decode_with_confluent_keys, registry_config, topic};
pub use relay::{
    batches_logged, http_address, http_get, init_logs, log_count, log_dir, log_tail, parse_scrape,
    relay_until_delivered, signal, spawn_relay_binary, spawn_with_filter, wait_exit, wait_for_log,
    RelayProcess, RunningRelay,
};
pub use stack::{DedicatedCluster, DedicatedKafka, DedicatedPostgres, PartitionState, Writer};
pub use wait::{poll_until, wait_until};

pub fn database_url() -> String {
    std::env::var("OUTBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://outbox:outbox@127.0.0.1:5432/outbox".into())
}

pub fn kafka_bootstrap() -> String {
    std::env::var("OUTBOX_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}
