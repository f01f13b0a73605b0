//! Support for the serialization tests: a relay config wired to a registry double, rows with
//! per-row overrides, a raw-bytes consumer (the Confluent header is read, not parsed away), and
//! a runner for `tests/interop/decode.py` (confluent-kafka's own deserializers).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use outbox_relay::config::{Config, Format, TopicConfig};
use outbox_relay_testkit::SchemaRegistryDouble;
use tokio::sync::OnceCell;
use uuid::Uuid;

pub use crate::helpers::RunningRelay;
use crate::helpers::{kafka_bootstrap, read_records, RawRecord, TestOutbox};

/// `outbox.config()` with `[registry] url` pointing at `double`.
pub fn registry_config(outbox: &TestOutbox, double: &SchemaRegistryDouble) -> Config {
    let mut config = outbox.config();
    config.registry.url = double.url();
    config
}

/// A topic table with this format and nothing else set.
pub fn topic(format: Format) -> TopicConfig {
    TopicConfig {
        format: Some(format),
        ..TopicConfig::default()
    }
}

/// One outbox row to insert.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub topic: String,
    pub key: Option<String>,
    pub payload: serde_json::Value,
    pub headers: serde_json::Value,
    pub value_subject: Option<String>,
    pub value_schema_version: Option<i32>,
}

impl Row {
    pub fn new(topic: &str, key: Option<&str>, payload: serde_json::Value) -> Self {
        Self {
            topic: topic.to_owned(),
            key: key.map(str::to_owned),
            payload,
            headers: serde_json::json!({}),
            ..Self::default()
        }
    }

    pub fn headers(mut self, headers: serde_json::Value) -> Self {
        self.headers = headers;
        self
    }

    pub fn subject(mut self, subject: &str, version: Option<i32>) -> Self {
        self.value_subject = Some(subject.to_owned());
        self.value_schema_version = version;
        self
    }
}

/// Inserts `rows` in one committed transaction, in order; returns (id, event_id) of each.
pub async fn insert(outbox: &TestOutbox, rows: &[Row]) -> Vec<(i64, Uuid)> {
    let sql = format!(
        "INSERT INTO {} (topic, key, payload, headers, value_subject, value_schema_version) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, event_id",
        outbox.table()
    );
    let mut tx = outbox.pool.begin().await.unwrap();
    let mut ids = Vec::with_capacity(rows.len());
    for r in rows {
        let id: (i64, Uuid) = sqlx::query_as(&sql)
            .bind(&r.topic)
            .bind(&r.key)
            .bind(&r.payload)
            .bind(&r.headers)
            .bind(&r.value_subject)
            .bind(r.value_schema_version)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

/// A row's state as the relay left it.
#[allow(dead_code)] // some fields are only read through Debug, in assertion messages
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RowState {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub key: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub holds_key: bool,
}

pub async fn row_states(outbox: &TestOutbox) -> Vec<RowState> {
    sqlx::query_as(&format!(
        "SELECT id, event_id, topic, key, status, attempts, last_error, holds_key \
         FROM {} ORDER BY id",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap()
}

/// Sum of `attempts` over every row.
pub async fn total_attempts(outbox: &TestOutbox) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(attempts), 0)::bigint FROM {}",
        outbox.table()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// Waits until exactly-or-more `delivered` and `parked` rows exist; panics after `timeout`.
pub async fn wait_counts(outbox: &TestOutbox, delivered: i64, parked: i64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let (d, p) = (
            outbox.count("delivered").await,
            outbox.count("parked").await,
        );
        if d >= delivered && p >= parked {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?}: {d} delivered (want {delivered}), {p} parked (want {parked}); \
             rows: {:#?}",
            row_states(outbox).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of `topic` on the test Kafka, as bytes ([`read_records`]).
pub fn consume_raw(topic: &str) -> Vec<RawRecord> {
    read_records(&kafka_bootstrap(), topic)
}

/// [`consume_raw`] off the async runtime's threads.
pub async fn consume_raw_async(topic: &str) -> Vec<RawRecord> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || consume_raw(&topic))
        .await
        .unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The interop venv's python, made (or checked) once per test binary by `scripts/py-env`.
async fn python() -> &'static PathBuf {
    static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();
    PYTHON
        .get_or_init(|| async {
            let out = tokio::process::Command::new(repo().join("scripts/py-env"))
                .output()
                .await
                .expect("run scripts/py-env");
            assert!(
                out.status.success(),
                "scripts/py-env failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            let venv = stdout.lines().last().expect("venv path").trim();
            PathBuf::from(venv).join("bin/python")
        })
        .await
}

/// Runs `tests/interop/decode.py` on `topic` (value `format`, string keys) against `registry`;
/// returns its JSON lines. Asynchronous on purpose: the in-process double must keep answering
/// the script while it runs.
pub async fn decode_with_confluent(
    registry: &str,
    topic: &str,
    format: &str,
) -> Vec<serde_json::Value> {
    decode_with_confluent_keys(registry, topic, format, "string").await
}

/// [`decode_with_confluent`], with the key decoded as `key_format` too.
pub async fn decode_with_confluent_keys(
    registry: &str,
    topic: &str,
    format: &str,
    key_format: &str,
) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new(python().await)
        .arg(repo().join("tests/interop/decode.py"))
        .args(["--bootstrap", &kafka_bootstrap()])
        .args(["--registry", registry])
        .args(["--topic", topic])
        .args(["--format", format])
        .args(["--key-format", key_format])
        .output()
        .await
        .expect("run decode.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "decode.py exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
