//! Support for failure tests: dedicated service instances started through `scripts/stack` (which
//! a test may kill), relay binaries that die with the test, a steady writer of outbox rows, and
//! queries that tolerate a database that is away.
//!
//! Dedicated instances live in their own `OUTBOX_STACK_DIR` under /var/tmp and on their own
//! ports; the shared services on 5432/9092 are never stopped from here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox_relay::order_check::{self, OrderReport};
use outbox_relay::outbox::{migrate, TableName};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{spawn_relay_binary, TestOutbox};

/// The shared instance's directory: never driven from a failure test.
const SHARED_STACK_DIR: &str = "/var/tmp/outbox-relay-stack";

/// `scripts/stack <args>` with a dedicated instance's environment; panics with its output if it
/// fails.
fn stack(dir: &Path, env: &[(&str, String)], args: &[&str]) -> String {
    assert_ne!(
        dir,
        Path::new(SHARED_STACK_DIR),
        "failure tests never drive the shared services"
    );
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack"))
        .args(args)
        .env("OUTBOX_STACK_DIR", dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run scripts/stack");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/stack {args:?} failed:\n{text}"
    );
    text
}

async fn stack_async(dir: PathBuf, env: Vec<(&'static str, String)>, args: Vec<&'static str>) {
    tokio::task::spawn_blocking(move || stack(&dir, &env, &args))
        .await
        .unwrap();
}

/// A single-node Kafka of this test's own (PostgreSQL on 5432 is reused as it is). Stopped when
/// dropped, also when the test fails.
pub struct DedicatedKafka {
    dir: PathBuf,
    port: u16,
}

impl DedicatedKafka {
    pub async fn start(dir: &str, port: u16) -> Self {
        let kafka = Self {
            dir: PathBuf::from(dir),
            port,
        };
        kafka.up().await;
        kafka
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_PORT", self.port.to_string()),
            ("PGPORT", "5432".into()),
        ]
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (on the same data directory) and waits until it answers.
    pub async fn up(&self) {
        stack_async(self.dir.clone(), self.env(), vec!["up"]).await;
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&self) {
        stack_async(self.dir.clone(), self.env(), vec!["kill-kafka"]).await;
    }
}

impl Drop for DedicatedKafka {
    fn drop(&mut self) {
        // `down` stops only the Kafka this directory's pid file names; there is no cluster in
        // this directory, so PostgreSQL is left alone.
        stack_down(&self.dir, &self.env());
    }
}

/// `scripts/stack down` for a dedicated directory, ignoring failures (used from `Drop`).
fn stack_down(dir: &Path, env: &[(&str, String)]) {
    let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack"))
        .arg("down")
        .env("OUTBOX_STACK_DIR", dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output();
}

/// A PostgreSQL cluster of this test's own, with the usual role and database. Stopped when
/// dropped.
pub struct DedicatedPostgres {
    dir: PathBuf,
    port: u16,
}

impl DedicatedPostgres {
    pub async fn start(dir: &str, port: u16) -> Self {
        let pg = Self {
            dir: PathBuf::from(dir),
            port,
        };
        pg.up().await;
        pg
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("PGPORT", self.port.to_string())]
    }

    pub fn url(&self) -> String {
        format!("postgres://outbox:outbox@127.0.0.1:{}/outbox", self.port)
    }

    /// Starts the cluster and waits until it accepts connections.
    pub async fn up(&self) {
        stack_async(self.dir.clone(), self.env(), vec!["pg-up"]).await;
    }

    /// `pg_ctl -m immediate stop`: every backend dies, crash recovery on the next start.
    pub async fn crash(&self) {
        stack_async(self.dir.clone(), self.env(), vec!["pg-crash"]).await;
    }
}

impl Drop for DedicatedPostgres {
    fn drop(&mut self) {
        // No kafka.pid in this directory: `down` stops only this cluster.
        stack_down(&self.dir, &self.env());
    }
}

pub async fn create_topic_at(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// A migrated outbox in a schema of its own on `database_url`, and a topic of its own on
/// `bootstrap`.
pub async fn outbox_at(database_url: &str, bootstrap: &str, partitions: i32) -> TestOutbox {
    let suffix = Uuid::new_v4().simple().to_string();
    let schema = format!("t_{}", &suffix[..12]);
    let table = TableName::new(&schema, "outbox").unwrap();
    migrate(database_url, &table).await.expect("migrate");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect(database_url)
        .await
        .expect("connect");
    let topic = format!("it-{}", &suffix[..12]);
    create_topic_at(bootstrap, &topic, partitions).await;
    TestOutbox {
        schema,
        topic,
        pool,
    }
}

/// A relay config file (`name`.toml in `dir`) for `outbox` on the given services.
pub fn relay_config(
    dir: &Path,
    name: &str,
    database_url: &str,
    outbox: &TestOutbox,
    bootstrap: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = {database_url:?}\nschema = {schema:?}\n\n\
             [kafka]\nbootstrap_servers = {bootstrap:?}\n\n\
             [relay]\nbatch_size = 200\nconcurrency = 4\npoll_interval_ms = 20\n\
             shutdown_timeout_ms = 20000\n{extra}\n",
            schema = outbox.schema,
        ),
    )
    .unwrap();
    path
}

/// A relay binary that is SIGKILLed when dropped (a failing test leaves no relay behind).
pub struct RelayProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl RelayProcess {
    pub fn spawn(config: &Path, log: PathBuf) -> Self {
        Self {
            child: spawn_relay_binary(config, &log),
            log,
        }
    }

    /// Like `spawn`, with one debug line per batch ("batch done", with its counts) in the log.
    pub fn spawn_logging_batches(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info,outbox_relay::relay::batch=debug")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn outbox-relay");
        Self { child, log }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics (with the log's tail) if the relay exited by itself.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "relay exited by itself ({status}); log tail:\n{}",
                log_tail(&self.log, 40)
            );
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for one test's configs and relay logs, kept after the run (for reading
/// when something failed): /var/tmp/outbox-relay-test-logs/<name>.
pub fn log_dir(name: &str) -> PathBuf {
    let dir = Path::new("/var/tmp/outbox-relay-test-logs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Rows delivered according to a log's "batch done" lines (see `spawn_logging_batches`), and
/// how many such batches there were.
pub fn batches_logged(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut rows = 0;
    let mut batches = 0;
    for line in text.lines().filter(|l| l.contains("batch done")) {
        batches += 1;
        let plain: String = strip_ansi(line);
        if let Some(n) = plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix("delivered="))
            .and_then(|n| n.parse::<u64>().ok())
        {
            rows += n;
        }
    }
    (rows, batches)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How many lines of a log contain `needle`.
pub fn log_count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Inserts `chunk` rows every `every` in their own transactions, keys rotating over `keys`,
/// until stopped or `max_rows` are committed. Failed inserts (database away) are skipped and tried again next tick.
pub struct Writer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Rows whose transaction committed.
    pub committed: Arc<AtomicI64>,
    /// Inserts that failed (database away).
    pub failed: Arc<AtomicI64>,
}

impl Writer {
    pub fn start(
        outbox: &TestOutbox,
        chunk: i64,
        every: Duration,
        keys: i64,
        max_rows: i64,
    ) -> Self {
        let stop = CancellationToken::new();
        let committed = Arc::new(AtomicI64::new(0));
        let failed = Arc::new(AtomicI64::new(0));
        let sql = format!(
            "INSERT INTO {} (topic, key, payload) \
             SELECT $1, 'k' || ((($2::bigint) + i) % $4), jsonb_build_object('n', $2::bigint + i) \
             FROM generate_series(1, $3::bigint) AS i",
            outbox.table()
        );
        let (pool, topic) = (outbox.pool.clone(), outbox.topic.clone());
        let task = tokio::spawn({
            let (stop, committed, failed) = (stop.clone(), committed.clone(), failed.clone());
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut next = 0i64;
                while !stop.is_cancelled() && next < max_rows {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    let done = sqlx::query(&sql)
                        .bind(&topic)
                        .bind(next)
                        .bind(chunk.min(max_rows - next))
                        .bind(keys)
                        .execute(&pool)
                        .await;
                    match done {
                        Ok(_) => {
                            let n = chunk.min(max_rows - next);
                            next += n;
                            committed.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        });
        Self {
            stop,
            task,
            committed,
            failed,
        }
    }

    /// Whether it has stopped by itself (`max_rows` reached).
    pub fn is_done(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops writing; returns how many rows were committed.
    pub async fn stop(self) -> i64 {
        self.stop.cancel();
        self.task.await.unwrap();
        self.committed.load(Ordering::SeqCst)
    }
}

/// `count(*)` of rows with `status`, or None while the database is away.
pub async fn try_count(pool: &PgPool, table: &str, status: &str) -> Option<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE status = $1"))
        .bind(status)
        .fetch_one(pool)
        .await
        .ok()
}

/// Waits (safety net `timeout`) until no row is pending; returns how long it took. Tolerates a
/// database that is away.
pub async fn wait_no_pending(outbox: &TestOutbox, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if try_count(&outbox.pool, &outbox.table(), "pending").await == Some(0) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "rows still pending after {timeout:?}: {:?} pending, {:?} delivered",
            try_count(&outbox.pool, &outbox.table(), "pending").await,
            try_count(&outbox.pool, &outbox.table(), "delivered").await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(rows, delivered, parked, sum(attempts))` of the outbox.
pub async fn tally(outbox: &TestOutbox) -> (i64, i64, i64, i64) {
    sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), \
                count(*) FILTER (WHERE status = 'parked'), coalesce(sum(attempts), 0)::bigint \
         FROM {}",
        outbox.table()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// The order checker over the outbox's topic on `bootstrap`.
pub async fn check_order(outbox: &TestOutbox, bootstrap: &str) -> OrderReport {
    let table = TableName::new(&outbox.schema, "outbox").unwrap();
    order_check::check(&outbox.pool, &table, bootstrap, &outbox.topic)
        .await
        .expect("order check runs")
}
