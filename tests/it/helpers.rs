//! Shared test support: each test gets its own Postgres schema (with a migrated outbox table)
//! and its own Kafka topic, on the real services `scripts/stack up` starts.
//!
//! `OUTBOX_TEST_DATABASE_URL` and `OUTBOX_TEST_KAFKA` point elsewhere if needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox_relay::config::{Config, DatabaseConfig, DatabaseUrl, KafkaConfig, RelayConfig};
use outbox_relay::outbox::{migrate, TableName};
use outbox_relay::relay::Relay;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn database_url() -> String {
    std::env::var("OUTBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://outbox:outbox@127.0.0.1:5432/outbox".into())
}

pub fn kafka_bootstrap() -> String {
    std::env::var("OUTBOX_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A migrated outbox table in a schema of its own, and a topic of its own.
pub struct TestOutbox {
    pub schema: String,
    pub topic: String,
    pub pool: PgPool,
}

impl TestOutbox {
    /// A fresh schema + outbox table, and a fresh topic with `partitions` partitions.
    pub async fn new(partitions: i32) -> Self {
        let suffix = Uuid::new_v4().simple().to_string();
        let schema = format!("t_{}", &suffix[..12]);
        let table = TableName::new(&schema, "outbox").unwrap();
        migrate(&database_url(), &table).await.expect("migrate");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url())
            .await
            .expect("connect to test Postgres (scripts/stack up)");
        let topic = format!("it-{}", &suffix[..12]);
        create_topic(&topic, partitions).await;
        Self {
            schema,
            topic,
            pool,
        }
    }

    pub fn table(&self) -> String {
        format!("\"{}\".outbox", self.schema)
    }

    /// A relay config for this outbox: fast polling, small batches.
    pub fn config(&self) -> Config {
        Config {
            database: DatabaseConfig {
                url: DatabaseUrl::new(database_url()),
                schema: self.schema.clone(),
                table: "outbox".into(),
                max_connections: 8,
                ..DatabaseConfig::default()
            },
            kafka: KafkaConfig {
                bootstrap_servers: kafka_bootstrap(),
                ..KafkaConfig::default()
            },
            relay: RelayConfig {
                batch_size: 200,
                concurrency: 4,
                poll_interval_ms: 20,
                shutdown_timeout_ms: 20_000,
            },
            ..Config::default()
        }
    }

    /// The same config as a TOML file for the binary.
    pub fn config_file(&self, dir: &tempfile::TempDir, bootstrap: &str, extra: &str) -> PathBuf {
        let c = self.config();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = {url:?}\nschema = {schema:?}\n\n\
                 [kafka]\nbootstrap_servers = {bootstrap:?}\n\n\
                 [relay]\nbatch_size = {batch}\nconcurrency = {conc}\npoll_interval_ms = 20\n\
                 shutdown_timeout_ms = {shutdown}\n{extra}\n",
                url = database_url(),
                schema = self.schema,
                batch = c.relay.batch_size,
                conc = c.relay.concurrency,
                shutdown = c.relay.shutdown_timeout_ms,
            ),
        )
        .unwrap();
        path
    }

    /// Inserts `n` rows over `keys` keys (key = `k{i % keys}`) in one committed transaction.
    pub async fn insert_rows(&self, n: i64, keys: i64) {
        sqlx::query(&format!(
            "INSERT INTO {} (topic, key, payload, headers) \
             SELECT $1, 'k' || (i % $3), jsonb_build_object('n', i), '{{\"trace\": \"t\"}}' \
             FROM generate_series(1, $2) AS i",
            self.table()
        ))
        .bind(&self.topic)
        .bind(n)
        .bind(keys)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    pub async fn count(&self, status: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE status = $1",
            self.table()
        ))
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until `n` rows are delivered; panics after `timeout`.
    pub async fn wait_delivered(&self, n: i64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let delivered = self.count("delivered").await;
            if delivered >= n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "only {delivered} of {n} rows delivered after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// event_id → (partition, offset) of every delivered row.
    pub async fn delivered_positions(&self) -> HashMap<String, (i32, i64)> {
        let rows: Vec<(Uuid, i32, i64)> = sqlx::query_as(&format!(
            "SELECT event_id, kafka_partition, kafka_offset FROM {} WHERE status = 'delivered'",
            self.table()
        ))
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(e, p, o)| (e.to_string(), (p, o)))
            .collect()
    }
}

pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic (is Kafka up? scripts/stack up)");
    for r in results {
        r.expect("topic created");
    }
}

/// The value of header `name` among a record's headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: serde_json::Value,
    pub headers: Vec<(String, String)>,
}

impl Consumed {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn event_id(&self) -> &str {
        self.header("event_id").expect("event_id header")
    }
}

/// One record as Kafka holds it: bytes untouched.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl RawRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn event_id(&self) -> &str {
        self.header("event_id").expect("event_id header")
    }

    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .map(|k| std::str::from_utf8(k).expect("utf-8 key"))
    }

    /// The schema id of the Confluent header (magic byte 0, big-endian u32); panics if the
    /// value is not framed.
    pub fn schema_id(&self) -> u32 {
        let v = self.value.as_deref().expect("a value");
        assert!(
            v.len() >= 5 && v[0] == 0,
            "value not in the Confluent wire format: {v:?}"
        );
        u32::from_be_bytes([v[1], v[2], v[3], v[4]])
    }
}

/// Reads every record of `topic` on `bootstrap`, from the beginning to the high watermarks of
/// this moment, sorted by (partition, offset). Blocking (librdkafka polls).
pub fn read_records(bootstrap: &str, topic: &str) -> Vec<RawRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("it-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    if remaining == 0 {
        return Vec::new();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::with_capacity(remaining as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.expect("consume");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(RawRecord {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
        });
        remaining -= 1;
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Reads every record of `topic` (on the test Kafka) with its JSON payload parsed.
pub fn consume_all(topic: &str) -> Vec<Consumed> {
    read_records(&kafka_bootstrap(), topic)
        .into_iter()
        .map(|r| Consumed {
            partition: r.partition,
            offset: r.offset,
            key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            payload: serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap(),
            headers: r.headers,
        })
        .collect()
}

/// An in-process relay running in the background until [`RunningRelay::stop`].
pub struct RunningRelay {
    pub relay: Arc<Relay>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningRelay {
    pub fn start(config: &Config) -> Self {
        let relay = Arc::new(Relay::new(config).expect("relay builds"));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (relay, stop) = (Arc::clone(&relay), stop.clone());
            async move { relay.run(stop).await.expect("relay stops cleanly") }
        });
        Self { relay, stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("relay task");
    }
}

/// Runs an in-process relay on `outbox` until `n` rows are delivered, then stops it.
pub async fn relay_until_delivered(outbox: &TestOutbox, n: i64) {
    let relay = RunningRelay::start(&outbox.config());
    outbox.wait_delivered(n, Duration::from_secs(60)).await;
    relay.stop().await;
}

/// Counts how often each event_id was consumed.
pub fn event_id_counts(records: &[Consumed]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(r.event_id().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// The relay binary, started with a config file; stderr goes to `log`.
pub fn spawn_relay_binary(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn outbox-relay")
}

/// Sends SIGTERM / SIGKILL.
pub fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Waits for the child to exit, up to `timeout`; returns its status and how long it took.
pub async fn wait_exit(
    child: &mut Child,
    timeout: Duration,
) -> Option<(std::process::ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
