//! Services a fault test may kill: a dedicated Kafka or PostgreSQL started through
//! `scripts/stack`, and a steady [`Writer`] of outbox rows that rides out a database that is
//! away.
//!
//! Dedicated instances live in their own `OUTBOX_STACK_DIR` under /var/tmp and on their own
//! ports; the shared services on 5432/9092 are never stopped from here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::outbox::TestOutbox;

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
