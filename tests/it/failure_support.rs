//! Support for the failure tests: an in-process relay that can be stopped, single-row inserts,
//! a row's failure bookkeeping, an attempt history recorded by a trigger, and a reader that
//! takes any bootstrap (the real broker or a mock cluster) and any payload.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use outbox_relay::config::{Config, PropertyValue};
use outbox_relay::outbox::{ParkedOps, TableName};

pub use crate::helpers::RunningRelay;
use crate::helpers::{read_records, TestOutbox};

/// Sets a librdkafka pass-through property.
pub fn set_property(config: &mut Config, key: &str, value: &str) {
    config
        .kafka
        .properties
        .insert(key.into(), PropertyValue::Text(value.into()));
}

/// Inserts one row; returns its id.
pub async fn insert(
    outbox: &TestOutbox,
    topic: &str,
    key: Option<&str>,
    payload: serde_json::Value,
) -> i64 {
    sqlx::query_scalar(&format!(
        "INSERT INTO {} (topic, key, payload) VALUES ($1, $2, $3) RETURNING id",
        outbox.table()
    ))
    .bind(topic)
    .bind(key)
    .bind(payload)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// Inserts `n` rows of one key (`{"key": key, "n": i}`) in one statement; returns their ids.
pub async fn insert_many(outbox: &TestOutbox, topic: &str, key: &str, n: i64) -> Vec<i64> {
    sqlx::query_scalar(&format!(
        "INSERT INTO {} (topic, key, payload) \
         SELECT $1, $2, jsonb_build_object('key', $2::text, 'n', i) FROM generate_series(1, $3) i \
         RETURNING id",
        outbox.table()
    ))
    .bind(topic)
    .bind(key)
    .bind(n)
    .fetch_all(&outbox.pool)
    .await
    .unwrap()
}

/// A row's status and failure bookkeeping.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RowState {
    pub id: i64,
    pub key: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub holds_key: bool,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
}

pub async fn row(outbox: &TestOutbox, id: i64) -> RowState {
    sqlx::query_as(&format!(
        "SELECT id, key, status, attempts, last_error, holds_key, \
                kafka_partition, kafka_offset FROM {} WHERE id = $1",
        outbox.table()
    ))
    .bind(id)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

pub async fn rows(outbox: &TestOutbox) -> Vec<RowState> {
    sqlx::query_as(&format!(
        "SELECT id, key, status, attempts, last_error, holds_key, \
                kafka_partition, kafka_offset FROM {} ORDER BY id",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap()
}

/// Polls `check` every 50 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until row `id` has `status`.
pub async fn wait_status(
    outbox: &TestOutbox,
    id: i64,
    status: &str,
    timeout: Duration,
) -> RowState {
    let start = Instant::now();
    loop {
        let state = row(outbox, id).await;
        if state.status == status {
            return state;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for row {id} to be {status}; rows now: {:#?}",
            rows(outbox).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per key, the delivered rows' (partition, offset) must grow with the id: the key's order in
/// Kafka is its id order. Returns how many keyed delivered rows were checked.
pub fn assert_marks_in_key_order(rows: &[RowState]) -> usize {
    let mut last: std::collections::HashMap<&str, (i64, i32, i64)> = Default::default();
    let mut checked = 0;
    for r in rows.iter().filter(|r| r.status == "delivered") {
        let Some(k) = r.key.as_deref() else { continue };
        let (p, o) = (r.kafka_partition.unwrap(), r.kafka_offset.unwrap());
        if let Some(&(prev_id, prev_p, prev_o)) = last.get(k) {
            assert_eq!(
                p, prev_p,
                "key {k}: rows {prev_id} and {} in different partitions",
                r.id
            );
            assert!(
                o > prev_o,
                "key {k}: row {} at offset {o} is not after row {prev_id} at {prev_o}",
                r.id
            );
        }
        last.insert(k, (r.id, p, o));
        checked += 1;
    }
    checked
}

/// Records every change of a row's `attempts` or `status` in `"schema".history`, with the
/// moment the relay's UPDATE ran (`clock_timestamp()`, not the transaction's start).
pub async fn install_history(outbox: &TestOutbox) {
    let s = &outbox.schema;
    for sql in [
        format!(
            "CREATE TABLE \"{s}\".history (id bigint, attempts int, status text, \
             next_attempt_at timestamptz, last_error text, at timestamptz)"
        ),
        format!(
            "CREATE FUNCTION \"{s}\".record_history() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO \"{s}\".history VALUES (NEW.id, NEW.attempts, NEW.status, \
             NEW.next_attempt_at, NEW.last_error, clock_timestamp()); RETURN NEW; END $$"
        ),
        format!(
            "CREATE TRIGGER history AFTER UPDATE ON {t} FOR EACH ROW \
             WHEN (OLD.attempts IS DISTINCT FROM NEW.attempts OR OLD.status IS DISTINCT FROM NEW.status) \
             EXECUTE FUNCTION \"{s}\".record_history()",
            t = outbox.table()
        ),
    ] {
        sqlx::query(&sql).execute(&outbox.pool).await.unwrap();
    }
}

/// One recorded change of a row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Change {
    pub attempts: i32,
    pub status: String,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub at: DateTime<Utc>,
}

pub async fn history(outbox: &TestOutbox, id: i64) -> Vec<Change> {
    sqlx::query_as(&format!(
        "SELECT attempts, status, next_attempt_at, last_error, at FROM \"{}\".history \
         WHERE id = $1 ORDER BY at",
        outbox.schema
    ))
    .bind(id)
    .fetch_all(&outbox.pool)
    .await
    .unwrap()
}

pub fn ops(outbox: &TestOutbox) -> ParkedOps {
    ParkedOps::new(outbox.pool.clone(), &table_name(outbox))
}

pub fn table_name(outbox: &TestOutbox) -> TableName {
    TableName::new(&outbox.schema, "outbox").unwrap()
}

/// One record read back, payload as bytes.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::helpers::header(&self.headers, name)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// Every record of `topic` on `bootstrap`, up to the high watermarks of this moment, in
/// (partition, offset) order.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_records(bootstrap, topic)
        .into_iter()
        .map(|r| Record {
            key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            payload: r.value.unwrap_or_default(),
            headers: r.headers,
        })
        .collect()
}

/// Relay logs through the test harness (shown for failing tests): `outbox_relay=info`, or
/// `OUTBOX_TEST_LOG` (e.g. `OUTBOX_TEST_LOG=debug`).
pub fn init_logs() {
    let filter = std::env::var("OUTBOX_TEST_LOG").unwrap_or_else(|_| "outbox_relay=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}
