//! [`TestOutbox`]: a migrated outbox table in a Postgres schema of its own and a Kafka topic of
//! its own, with what tests do to it: insert rows, read their state ([`RowState`]), wait for a
//! state ([`TestOutbox::wait_until`], which prints the rows when it times out), and prove that
//! the relay passed by ([`TestOutbox::deliver_sentinel`], [`TestOutbox::wait_claimed`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_relay::config::{
    Config, DatabaseConfig, DatabaseUrl, HttpConfig, KafkaConfig, RelayConfig,
};
use outbox_relay::order_check::{self, OrderReport};
use outbox_relay::outbox::{migrate, Outbox, ParkedOps, TableName};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use super::kafka::create_topic_at;
use super::wait::poll_until;
use super::{database_url, kafka_bootstrap};

/// A migrated outbox table in a schema of its own, and a topic of its own.
pub struct TestOutbox {
    pub schema: String,
    pub topic: String,
    pub pool: PgPool,
    /// The database the table lives in (the shared one unless [`TestOutbox::at`]).
    pub database_url: String,
    /// The Kafka its topic lives on.
    pub bootstrap: String,
}

/// One outbox row to insert ([`TestOutbox::insert_all`]).
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

/// A row's status and bookkeeping, as the relay left it.
#[allow(dead_code)] // some fields are only read through Debug, in assertion messages
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RowState {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub key: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub holds_key: bool,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
}

const ROW_COLUMNS: &str = "id, event_id, topic, key, status, attempts, next_attempt_at, \
                           last_error, holds_key, kafka_partition, kafka_offset";

/// One recorded change of a row ([`TestOutbox::install_history`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Change {
    pub attempts: i32,
    pub status: String,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub at: DateTime<Utc>,
}

impl TestOutbox {
    /// A fresh schema + outbox table on the test Postgres, and a fresh topic with `partitions`
    /// partitions on the test Kafka.
    pub async fn new(partitions: i32) -> Self {
        Self::at(&database_url(), &kafka_bootstrap(), partitions).await
    }

    /// [`TestOutbox::new`] on the given services (a dedicated Postgres or Kafka).
    pub async fn at(database_url: &str, bootstrap: &str, partitions: i32) -> Self {
        let outbox = Self::table_only(database_url, bootstrap).await;
        create_topic_at(bootstrap, &outbox.topic, partitions).await;
        outbox
    }

    /// The schema and table alone, for tests of the SQL that need no Kafka: the topic is only
    /// a name.
    pub async fn without_kafka() -> Self {
        Self::table_only(&database_url(), &kafka_bootstrap()).await
    }

    /// The schema and table on `database_url`, the topic a name on `bootstrap` that the caller
    /// creates (e.g. replicated, on a cluster).
    pub async fn table_only(database_url: &str, bootstrap: &str) -> Self {
        let suffix = Uuid::new_v4().simple().to_string();
        let schema = format!("t_{}", &suffix[..12]);
        let table = TableName::new(&schema, "outbox").unwrap();
        migrate(database_url, &table).await.expect("migrate");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect(database_url)
            .await
            .expect("connect to test Postgres (scripts/stack up)");
        let topic = format!("it-{}", &suffix[..12]);
        Self {
            schema,
            topic,
            pool,
            database_url: database_url.to_owned(),
            bootstrap: bootstrap.to_owned(),
        }
    }

    /// `"schema".outbox`, for SQL text.
    pub fn table(&self) -> String {
        format!("\"{}\".outbox", self.schema)
    }

    pub fn table_name(&self) -> TableName {
        TableName::new(&self.schema, "outbox").unwrap()
    }

    /// The relay's own store on this table (claim, mark, reschedule, park), on the test's pool.
    pub fn store(&self) -> Outbox {
        Outbox::with_pool(self.pool.clone(), self.table_name())
    }

    /// The operators' commands on this table.
    pub fn ops(&self) -> ParkedOps {
        ParkedOps::new(self.pool.clone(), &self.table_name())
    }

    /// A relay config for this outbox: fast polling, small batches.
    pub fn config(&self) -> Config {
        Config {
            database: DatabaseConfig {
                url: DatabaseUrl::new(self.database_url.clone()),
                schema: self.schema.clone(),
                table: "outbox".into(),
                max_connections: 8,
                ..DatabaseConfig::default()
            },
            kafka: KafkaConfig {
                bootstrap_servers: self.bootstrap.clone(),
                ..KafkaConfig::default()
            },
            relay: RelayConfig {
                batch_size: 200,
                concurrency: 4,
                poll_interval_ms: 20,
                shutdown_timeout_ms: 20_000,
                ..RelayConfig::default()
            },
            // In-process relays share one process: no endpoint unless a test asks for one.
            http: HttpConfig {
                listen: String::new(),
                ..HttpConfig::default()
            },
            ..Config::default()
        }
    }

    /// The same config as a TOML file (`relay.toml` in `dir`) for the binary, with Kafka at
    /// `bootstrap` and `extra` TOML appended. The HTTP endpoint listens on a free port (the
    /// relay logs it: see `RelayProcess::http_address`).
    pub fn config_file(&self, dir: &tempfile::TempDir, bootstrap: &str, extra: &str) -> PathBuf {
        self.config_file_in(dir.path(), "relay", bootstrap, extra)
    }

    /// Sets `kafka.delivery_timeout_ms` in a config file written by
    /// [`TestOutbox::config_file_in`].
    pub fn set_delivery_timeout(&self, config: &std::path::Path, ms: u64) {
        let text = std::fs::read_to_string(config).unwrap();
        let line = format!(
            "delivery_timeout_ms = {}\n",
            self.config().kafka.delivery_timeout_ms
        );
        assert!(text.contains(&line), "{text}");
        std::fs::write(
            config,
            text.replace(&line, &format!("delivery_timeout_ms = {ms}\n")),
        )
        .unwrap();
    }

    /// [`TestOutbox::config_file`] as `name`.toml in any directory.
    pub fn config_file_in(
        &self,
        dir: &std::path::Path,
        name: &str,
        bootstrap: &str,
        extra: &str,
    ) -> PathBuf {
        let c = self.config();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = {url:?}\nschema = {schema:?}\n\n\
                 [kafka]\nbootstrap_servers = {bootstrap:?}\ndelivery_timeout_ms = {delivery}\n\n\
                 [relay]\nbatch_size = {batch}\nconcurrency = {conc}\npoll_interval_ms = 20\n\
                 shutdown_timeout_ms = {shutdown}\n\n[http]\nlisten = \"127.0.0.1:0\"\ntable_stats_interval_ms = 1000\n{extra}\n",
                url = self.database_url,
                schema = self.schema,
                batch = c.relay.batch_size,
                conc = c.relay.concurrency,
                shutdown = c.relay.shutdown_timeout_ms,
                delivery = c.kafka.delivery_timeout_ms,
            ),
        )
        .unwrap();
        path
    }

    /// Inserts `n` rows over `keys` keys (key = `k{i % keys}`) on the outbox's topic in one
    /// committed transaction.
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

    /// Inserts one row; returns its id.
    pub async fn insert(&self, topic: &str, key: Option<&str>, payload: serde_json::Value) -> i64 {
        sqlx::query_scalar(&format!(
            "INSERT INTO {} (topic, key, payload) VALUES ($1, $2, $3) RETURNING id",
            self.table()
        ))
        .bind(topic)
        .bind(key)
        .bind(payload)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Inserts `n` rows of one key (`{"key": key, "n": i}`) in one statement; returns their ids.
    pub async fn insert_many(&self, topic: &str, key: &str, n: i64) -> Vec<i64> {
        sqlx::query_scalar(&format!(
            "INSERT INTO {} (topic, key, payload) \
             SELECT $1, $2, jsonb_build_object('key', $2::text, 'n', i) \
             FROM generate_series(1, $3) i RETURNING id",
            self.table()
        ))
        .bind(topic)
        .bind(key)
        .bind(n)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Inserts `rows` in one committed transaction, in order; returns (id, event_id) of each.
    pub async fn insert_all(&self, rows: &[Row]) -> Vec<(i64, Uuid)> {
        let sql = format!(
            "INSERT INTO {} (topic, key, payload, headers, value_subject, value_schema_version) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, event_id",
            self.table()
        );
        let mut tx = self.pool.begin().await.unwrap();
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

    pub async fn row(&self, id: i64) -> RowState {
        sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM {} WHERE id = $1",
            self.table()
        ))
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Every row, in id order.
    pub async fn rows(&self) -> Vec<RowState> {
        sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM {} ORDER BY id",
            self.table()
        ))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub async fn count(&self, status: &str) -> i64 {
        self.try_count(status).await.expect("count rows")
    }

    /// `count(*)` of rows with `status`, or None while the database is away.
    pub async fn try_count(&self, status: &str) -> Option<i64> {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE status = $1",
            self.table()
        ))
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .ok()
    }

    /// Sum of `attempts` over every row.
    pub async fn total_attempts(&self) -> i64 {
        self.tally().await.3
    }

    /// `(rows, delivered, parked, sum(attempts))` of the outbox.
    pub async fn tally(&self) -> (i64, i64, i64, i64) {
        sqlx::query_as(&format!(
            "SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), \
                    count(*) FILTER (WHERE status = 'parked'), coalesce(sum(attempts), 0)::bigint \
             FROM {}",
            self.table()
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
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

    /// The order checker over the outbox's topic.
    pub async fn check_order(&self) -> OrderReport {
        order_check::check(&self.pool, &self.table_name(), &self.bootstrap, &self.topic)
            .await
            .expect("order check runs")
    }

    /// What a timed-out wait prints: counts by status and the first rows not delivered.
    /// Tolerates a database that is away.
    pub async fn describe(&self) -> String {
        let counts: Result<Vec<(String, i64, i64)>, _> = sqlx::query_as(&format!(
            "SELECT status, count(*), coalesce(sum(attempts), 0)::bigint FROM {} \
             GROUP BY status ORDER BY status",
            self.table()
        ))
        .fetch_all(&self.pool)
        .await;
        let rows: Result<Vec<RowState>, _> = sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM {} WHERE status <> 'delivered' ORDER BY id LIMIT 20",
            self.table()
        ))
        .fetch_all(&self.pool)
        .await;
        match (counts, rows) {
            (Ok(counts), Ok(rows)) => {
                let mut text = String::from("rows by status (count, sum of attempts):");
                for (status, n, attempts) in counts {
                    text.push_str(&format!(" {status} {n} ({attempts});"));
                }
                text.push_str("\nfirst rows not delivered:");
                for r in rows {
                    text.push_str(&format!("\n  {r:?}"));
                }
                text
            }
            (Err(e), _) | (_, Err(e)) => format!("(the rows cannot be read: {e})"),
        }
    }

    /// Polls `check` until it holds; after `timeout` panics with `what` and the rows' state.
    pub async fn wait_until<F, Fut>(&self, timeout: Duration, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        if let Err(waited) = poll_until(timeout, check).await {
            panic!(
                "timed out after {waited:?} waiting for {what}\n{}",
                self.describe().await
            );
        }
    }

    /// Waits until at least `n` rows are delivered (a database that is away is waited out).
    pub async fn wait_delivered(&self, n: i64, timeout: Duration) {
        self.wait_until(timeout, &format!("{n} rows delivered"), || async {
            self.try_count("delivered").await.unwrap_or(0) >= n
        })
        .await;
    }

    /// Waits until at least `delivered` rows are delivered and `parked` rows parked.
    pub async fn wait_counts(&self, delivered: i64, parked: i64, timeout: Duration) {
        let what = format!("{delivered} rows delivered and {parked} parked");
        self.wait_until(timeout, &what, || async {
            self.try_count("delivered").await.unwrap_or(0) >= delivered
                && self.try_count("parked").await.unwrap_or(0) >= parked
        })
        .await;
    }

    /// Waits until row `id` has `status`; returns its state.
    pub async fn wait_status(&self, id: i64, status: &str, timeout: Duration) -> RowState {
        let what = format!("row {id} to be {status}");
        self.wait_until(timeout, &what, || async {
            self.row(id).await.status == status
        })
        .await;
        self.row(id).await
    }

    /// Waits until no row is pending (a database that is away is waited out); returns how long
    /// it took.
    pub async fn wait_no_pending(&self, timeout: Duration) -> Duration {
        let start = std::time::Instant::now();
        self.wait_until(timeout, "no row pending", || async {
            self.try_count("pending").await == Some(0)
        })
        .await;
        start.elapsed()
    }

    /// Inserts a sentinel row on `topic` (a key of its own, an id later than every row so far)
    /// and waits until the relay has delivered it. A "nothing happened to row X" assertion made
    /// after this (and after the relay stopped, which drains every batch in flight) is proved:
    /// the relay claims in id order, so it passed row X after X was in the state in question.
    /// Returns the sentinel's id.
    pub async fn deliver_sentinel(&self, topic: &str, payload: serde_json::Value) -> i64 {
        let key = format!("sentinel-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let id = self.insert(topic, Some(&key), payload).await;
        self.wait_status(id, "delivered", Duration::from_secs(60))
            .await;
        id
    }

    /// [`TestOutbox::deliver_sentinel`] on the outbox's own (raw-json) topic.
    pub async fn deliver_raw_sentinel(&self) -> i64 {
        let topic = self.topic.clone();
        self.deliver_sentinel(&topic, serde_json::json!({"sentinel": true}))
            .await
    }

    /// How many rows have been locked by a claim since they were last written. A claim locks
    /// rows `FOR UPDATE`, which leaves the locker's transaction id in the row's `xmax` even after
    /// that transaction ended, committed or not (an UPDATE writes a new version, whose `xmax` is
    /// 0 again): the trace proves a relay got a turn at rows it left untouched, when no sentinel
    /// can be delivered (an outage pauses every row).
    pub async fn claimed_count(&self) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE xmax::text <> '0'",
            self.table()
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// How many rows are locked right now by a transaction still open (a batch in flight):
    /// their `xmax` is the id of a running transaction. Takes no lock itself.
    pub async fn locked_count(&self) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE xmax::text IN \
             (SELECT backend_xid::text FROM pg_stat_activity WHERE backend_xid IS NOT NULL)",
            self.table()
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until a claim has locked at least `n` rows and no batch holds a row any more: some
    /// relay batch took the rows and ended, so what it did to them is visible now.
    pub async fn wait_claimed(&self, n: i64, timeout: Duration) {
        let what = format!("{n} rows claimed by a batch that has ended");
        self.wait_until(timeout, &what, || async {
            self.claimed_count().await >= n && self.locked_count().await == 0
        })
        .await;
    }

    /// Records every change of a row's `attempts` or `status` in `"schema".history`, with the
    /// moment the relay's UPDATE ran (`clock_timestamp()`, not the transaction's start).
    pub async fn install_history(&self) {
        let s = &self.schema;
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
                 WHEN (OLD.attempts IS DISTINCT FROM NEW.attempts \
                       OR OLD.status IS DISTINCT FROM NEW.status) \
                 EXECUTE FUNCTION \"{s}\".record_history()",
                t = self.table()
            ),
        ] {
            sqlx::query(&sql).execute(&self.pool).await.unwrap();
        }
    }

    /// The recorded changes of row `id` ([`TestOutbox::install_history`]), oldest first.
    pub async fn history(&self, id: i64) -> Vec<Change> {
        sqlx::query_as(&format!(
            "SELECT attempts, status, next_attempt_at, last_error, at FROM \"{}\".history \
             WHERE id = $1 ORDER BY at",
            self.schema
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// Per key, the delivered rows' (partition, offset) must grow with the id: the key's order in
/// Kafka is its id order. Returns how many keyed delivered rows were checked.
pub fn assert_marks_in_key_order(rows: &[RowState]) -> usize {
    let mut last: HashMap<&str, (i64, i32, i64)> = HashMap::new();
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
