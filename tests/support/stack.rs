//! Services a fault test may kill: a dedicated Kafka, three-broker cluster or PostgreSQL
//! started through `scripts/stack`, and a steady [`Writer`] of outbox rows that rides out a
//! database that is away.
//!
//! Dedicated instances live in their own `OUTBOX_STACK_DIR` under /var/tmp and on their own
//! ports; the shared services on 5432/9092 are never stopped from here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
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

/// A three-broker KRaft cluster of this test's own (`scripts/stack cluster-*`): brokers 1–3 on
/// `port`, `port + 1`, `port + 2`, a controller on `port + 3` (never stopped: the brokers are
/// what fails), replication factor 3, `min.insync.replicas = 2`. Stopped when dropped, also
/// when the test fails.
pub struct DedicatedCluster {
    dir: PathBuf,
    port: u16,
    admin: Arc<AdminClient<DefaultClientContext>>,
}

/// One partition as the cluster's metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    /// -1 while it has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl DedicatedCluster {
    /// Starts the controller and the three brokers (on the data `dir` holds, if any) and waits
    /// until every broker answers.
    pub async fn start(dir: &str, port: u16) -> Self {
        let admin = ClientConfig::new()
            .set("bootstrap.servers", cluster_bootstrap(port))
            .create()
            .expect("admin client");
        let cluster = Self {
            dir: PathBuf::from(dir),
            port,
            admin: Arc::new(admin),
        };
        cluster.run(vec!["cluster-up"]).await;
        cluster
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CLUSTER_PORT", self.port.to_string()),
            ("PGPORT", "5432".into()),
        ]
    }

    async fn run(&self, args: Vec<&'static str>) {
        stack_async(self.dir.clone(), self.env(), args).await;
    }

    /// The three brokers.
    pub fn bootstrap(&self) -> String {
        cluster_bootstrap(self.port)
    }

    /// SIGKILL broker `id` (1–3), as a crash would.
    pub async fn kill(&self, id: i32) {
        self.run(vec!["cluster-kill", broker_arg(id)]).await;
    }

    /// Stops broker `id` (SIGTERM: a controlled shutdown, its leaderships moved first).
    pub async fn stop(&self, id: i32) {
        self.run(vec!["cluster-stop", broker_arg(id)]).await;
    }

    /// Starts broker `id` again (on its data) and waits until the cluster lists it.
    pub async fn start_broker(&self, id: i32) {
        self.run(vec!["cluster-start", broker_arg(id)]).await;
    }

    /// Creates `topic` with `partitions` partitions, three replicas each and
    /// `min.insync.replicas = 2` (set on the topic, whatever the cluster's default).
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "2");
        let results = self
            .admin
            .create_topics(
                &[new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .expect("create topic on the cluster");
        for r in results {
            r.expect("topic created");
        }
        self.wait_until_in_sync(topic, Duration::from_secs(60))
            .await;
    }

    /// `topic`'s partitions as a metadata request answers now.
    pub async fn partitions(&self, topic: &str) -> Vec<PartitionState> {
        let (admin, topic) = (Arc::clone(&self.admin), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let m = admin
                .inner()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("cluster metadata");
            let t = m.topics().iter().find(|t| t.name() == topic);
            t.map(|t| {
                let mut ps: Vec<PartitionState> = t
                    .partitions()
                    .iter()
                    .map(|p| PartitionState {
                        partition: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                    })
                    .collect();
                ps.sort_by_key(|p| p.partition);
                ps
            })
            .unwrap_or_default()
        })
        .await
        .unwrap()
    }

    /// The broker leading `topic`'s `partition` now.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        let ps = self.partitions(topic).await;
        let p = ps
            .iter()
            .find(|p| p.partition == partition)
            .unwrap_or_else(|| panic!("no partition {partition} of {topic}: {ps:?}"));
        assert!(p.leader > 0, "partition {partition} has no leader: {p:?}");
        p.leader
    }

    /// Waits until `partition` of `topic` is led by a broker other than `old`; returns it.
    pub async fn wait_for_new_leader(
        &self,
        topic: &str,
        partition: i32,
        old: i32,
        timeout: Duration,
    ) -> i32 {
        let leader = std::cell::Cell::new(old);
        let what = format!("a leader other than broker {old} for {topic}[{partition}]");
        super::wait::wait_until(timeout, &what, || async {
            let now = self
                .partitions(topic)
                .await
                .iter()
                .find(|p| p.partition == partition)
                .map_or(-1, |p| p.leader);
            leader.set(now);
            now > 0 && now != old
        })
        .await;
        leader.get()
    }

    /// Waits until every partition of `topic` has all its replicas in sync.
    pub async fn wait_until_in_sync(&self, topic: &str, timeout: Duration) {
        let what = format!("every replica of {topic} in sync");
        super::wait::wait_until(timeout, &what, || async {
            let ps = self.partitions(topic).await;
            !ps.is_empty()
                && ps
                    .iter()
                    .all(|p| p.leader > 0 && p.isr.len() == p.replicas.len())
        })
        .await;
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack"))
            .arg("cluster-down")
            .env("OUTBOX_STACK_DIR", &self.dir)
            .envs(self.env().iter().map(|(k, v)| (*k, v.as_str())))
            .output();
    }
}

fn cluster_bootstrap(port: u16) -> String {
    (0..3)
        .map(|i| format!("127.0.0.1:{}", port + i))
        .collect::<Vec<_>>()
        .join(",")
}

fn broker_arg(id: i32) -> &'static str {
    match id {
        1 => "1",
        2 => "2",
        3 => "3",
        _ => panic!("the cluster has brokers 1, 2 and 3, not {id}"),
    }
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
