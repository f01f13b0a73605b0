//! The loop: a pipeline of batches. One task claims a batch, serializes its rows and hands them
//! to librdkafka ([`batch`]: `dispatch`), then claims the next one at once while the earlier
//! batches wait for their acknowledgements, up to `relay.concurrency` batches in flight; each
//! batch's completion (wait for every report → decide → mark → commit) runs as its own task,
//! and writes in claim order.
//!
//! When nothing is due the pipeline arms the outbox's wakeup and waits for a notification
//! ([`wakeup`]) or `relay.poll_interval_ms`, whichever comes first. When rows are due but all
//! are behind rows held elsewhere (another relay instance), it waits a poll interval or for one
//! of its own batches to complete, without arming. On shutdown it stops claiming and lets the
//! batches in flight complete.
//!
//! Outages are not the rows' fault: while Kafka, Postgres or the Schema Registry does not
//! answer, the relay claims nothing, backs off (200 ms → 10 s, jitter), and resumes by itself.

mod background;
mod batch;
mod decide;
mod health;
mod supervise;
mod wakeup;

pub use health::{Health, Workers};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{oneshot, Mutex, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::{Config, RegistryConfig, RelayConfig, TopicPolicies};
use crate::outbox::{Outbox, StoreError};
use crate::produce::{Producer, TopicLimits};
use crate::serialize::registry::RegistryError;
use crate::serialize::Serializer;

/// Why the relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
    #[error("Schema Registry: {0}")]
    Registry(String),
    #[error(
        "shutdown bound of {0:?} exceeded with {1} batch(es) in flight; their rows stay pending \
         and will be produced again (duplicates carry the same event_id)"
    )]
    ShutdownTimedOut(Duration, usize),
    #[error("a relay worker panicked: {0}; its batch was rolled back (its rows go again)")]
    WorkerPanicked(String),
    #[error("cannot listen on {0} (http.listen): {1}")]
    Listen(String, String),
}

/// Counts since start, for logs and (later) metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub parked: AtomicU64,
    /// Parked rows copied to a dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Rows acknowledged after an earlier row of their key failed in the same batch.
    pub out_of_order: AtomicU64,
}

/// A relay over one outbox table.
pub struct Relay {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Outbox,
    producer: Producer,
    /// What the topics will refuse, foreseen before producing.
    topic_limits: TopicLimits,
    serializer: Serializer,
    policies: TopicPolicies,
    config: RelayConfig,
    registry_config: RegistryConfig,
    bootstrap: String,
    /// `kafka.delivery_timeout_ms`.
    delivery_timeout: Duration,
    kafka_down: AtomicBool,
    registry_down: AtomicBool,
    /// A batch left rows of a key untouched or failed: drain the batches in flight before the
    /// next claim (see `batch::Carry`).
    drain: AtomicBool,
    probe_lock: Mutex<()>,
    /// Topics whose rows are deferred because Kafka refuses the topic.
    deferrals: std::sync::Mutex<std::collections::HashMap<String, batch::Deferral>>,
    counters: Counters,
    health: health::Tracker,
}

impl Relay {
    /// Builds the pool (lazily connecting) and the producer; contacts nothing yet.
    pub fn new(config: &Config) -> Result<Self, RelayError> {
        let outbox = Outbox::connect_relay(&config.database, config.database.max_connections)?
            .on_delivered(config.relay.on_delivered);
        let producer = Producer::new(&config.kafka, &config.headers)?;
        let serializer = Serializer::new(config).map_err(RelayError::Registry)?;
        Ok(Self {
            shared: Arc::new(Shared {
                outbox,
                producer,
                topic_limits: TopicLimits::new(&config.kafka)?,
                serializer,
                policies: config.topic_policies(),
                config: config.relay.clone(),
                registry_config: config.registry.clone(),
                bootstrap: config.kafka.bootstrap_servers.clone(),
                delivery_timeout: Duration::from_millis(config.kafka.delivery_timeout_ms),
                kafka_down: AtomicBool::new(true),
                registry_down: AtomicBool::new(false),
                drain: AtomicBool::new(false),
                probe_lock: Mutex::new(()),
                deferrals: std::sync::Mutex::default(),
                counters: Counters::default(),
                health: health::Tracker::new(config),
            }),
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// What `/healthz` and `/readyz` read.
    pub fn health(&self) -> Health {
        Health(Arc::clone(&self.shared))
    }

    /// Runs until `shutdown` is cancelled, then drains in-flight batches within
    /// `relay.shutdown_timeout_ms`.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let table = self.shared.outbox.table().qualified();
        info!(%table, bootstrap = %self.shared.bootstrap, "relay starting");
        let background = self.shared.health.start_background(self.health()).await?;
        if !self.shared.outbox.wait_ready(&shutdown).await? {
            return Ok(());
        }
        if !self.shared.auto_register(&shutdown).await? {
            return Ok(());
        }
        let stop = shutdown.child_token();
        background.start_jobs(&shutdown);
        let mut workers = JoinSet::new();
        let shared = Arc::clone(&self.shared);
        let pipeline_stop = stop.clone();
        workers.spawn(async move {
            let _alive = shared.health.worker_started();
            Arc::clone(&shared).pipeline(pipeline_stop).await
        });
        supervise::supervise(workers, stop, self.shared.config.shutdown_timeout()).await?;
        let c = &self.shared.counters;
        info!(
            delivered = c.delivered.load(Ordering::Relaxed),
            retried = c.retried.load(Ordering::Relaxed),
            parked = c.parked.load(Ordering::Relaxed),
            dead_lettered = c.dead_lettered.load(Ordering::Relaxed),
            out_of_order = c.out_of_order.load(Ordering::Relaxed),
            "relay stopped"
        );
        Ok(())
    }
}

/// Delays between tries while Postgres or Kafka is unreachable.
fn outage_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps for `d`; false if shutdown came first.
async fn sleep_unless_cancelled(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}

/// A service the relay cannot work without.
#[derive(Debug, Clone, Copy)]
enum Dependency {
    Kafka,
    Registry,
}

/// The pipeline's batches in flight: their completion tasks, and the ids each holds.
struct InFlightBatches {
    tasks: JoinSet<(u64, Result<batch::BatchOutcome, batch::BatchError>)>,
    ids: std::collections::BTreeMap<u64, Vec<i64>>,
}

impl Shared {
    /// Claims and dispatches batches until `shutdown`, `relay.concurrency` in flight at most,
    /// then lets those in flight complete.
    async fn pipeline(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), StoreError> {
        let depth = self.config.concurrency.max(1) as usize;
        let mut batches = InFlightBatches {
            tasks: JoinSet::new(),
            ids: std::collections::BTreeMap::new(),
        };
        let mut seq: u64 = 0;
        let mut last_turn: Option<oneshot::Receiver<batch::Carry>> = None;
        let mut db_delays = outage_backoff();
        let new_rows = Arc::new(Notify::new());
        let listener = tokio::spawn(wakeup::listen(
            self.outbox.clone(),
            Arc::clone(&new_rows),
            shutdown.clone(),
        ));
        let _stop_listener = AbortOnDrop(listener);
        let mut idle = false;
        let result = loop {
            let mut failed = None;
            while let Some(joined) = batches.tasks.try_join_next() {
                if let Err(e) = self.completed(joined, &mut batches, &shutdown).await {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            if shutdown.is_cancelled() {
                break Ok(());
            }
            let draining = self.drain.load(Ordering::SeqCst) && !batches.tasks.is_empty();
            if batches.tasks.len() >= depth || draining {
                if let Some(joined) = batches.tasks.join_next().await {
                    if let Err(e) = self.completed(joined, &mut batches, &shutdown).await {
                        break Err(e);
                    }
                }
                continue;
            }
            if !self.wait_for(Dependency::Kafka, &shutdown).await
                || !self.wait_for(Dependency::Registry, &shutdown).await
            {
                break Ok(());
            }
            if idle {
                // Nothing was due: ask to be woken by the next insert, then look once more
                // (a row committed before the arming sent no notification).
                if let Err(e) = self.outbox.arm_wakeup().await {
                    debug!(error = %e, "could not arm the wakeup; polling");
                }
            }
            let exempt: Vec<i64> = batches.ids.values().flatten().copied().collect();
            if batches.tasks.is_empty() {
                self.drain.store(false, Ordering::SeqCst);
            }
            let oldest = batches.ids.keys().next().copied().unwrap_or(seq);
            match self.dispatch(seq, oldest, &exempt).await {
                Ok(batch::Dispatched::Batch(ids, batch)) => {
                    idle = false;
                    db_delays = outage_backoff();
                    let (pass, next) = oneshot::channel();
                    let turn = batch::Turn {
                        wait: last_turn.replace(next),
                        pass,
                    };
                    debug!(
                        seq,
                        claimed = ids.len(),
                        in_flight = batches.tasks.len() + 1,
                        "batch dispatched"
                    );
                    batches.ids.insert(seq, ids);
                    let shared = Arc::clone(&self);
                    let this = seq;
                    batches.tasks.spawn(async move {
                        let span = batch::span(this, &batch);
                        (this, shared.complete(batch, turn).instrument(span).await)
                    });
                    seq += 1;
                }
                Ok(empty_or_blocked) => {
                    db_delays = outage_backoff();
                    let empty = matches!(empty_or_blocked, batch::Dispatched::Empty);
                    let was_idle = idle;
                    idle = empty && batches.tasks.is_empty();
                    if !was_idle {
                        debug!(empty, in_flight = batches.tasks.len(), "nothing to claim");
                    }
                    if idle && !was_idle {
                        // Arm, then claim once more before waiting.
                        continue;
                    }
                    let poll = sleep_unless_cancelled(self.config.poll_interval(), &shutdown);
                    tokio::select! {
                        _ = poll => {}
                        () = new_rows.notified(), if empty => {}
                        joined = batches.tasks.join_next(), if !batches.tasks.is_empty() => {
                            if let Some(joined) = joined {
                                if let Err(e) = self.completed(joined, &mut batches, &shutdown).await {
                                    break Err(e);
                                }
                            }
                        }
                    }
                }
                Err(e) if !e.is_unavailable() => break Err(e),
                Err(e) => {
                    let delay = db_delays.next().unwrap_or(Duration::from_secs(10));
                    warn!(error = %e, retry_in = ?delay,
                        "Postgres unavailable; no row was touched, retrying");
                    sleep_unless_cancelled(delay, &shutdown).await;
                }
            }
        };
        // Stop claiming; let the batches in flight complete (supervise bounds this).
        while let Some(joined) = batches.tasks.join_next().await {
            let _ = self.completed(joined, &mut batches, &shutdown).await;
        }
        debug!("pipeline stopped");
        result
    }

    /// A batch's completion ended: its rows are no longer in flight; act on how it ended. An error is
    /// one waiting cannot heal (the relay stops); a completion that panicked panics here too,
    /// so the supervisor ends the relay with it.
    async fn completed(
        &self,
        joined: Result<
            (u64, Result<batch::BatchOutcome, batch::BatchError>),
            tokio::task::JoinError,
        >,
        batches: &mut InFlightBatches,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let (seq, result) = match joined {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                // Aborted: only at shutdown, past its bound.
                debug!(error = %e, "a batch's completion was cancelled");
                return Ok(());
            }
        };
        batches.ids.remove(&seq);
        match result {
            Ok(outcome) => {
                if outcome.kafka_outage {
                    self.kafka_down.store(true, Ordering::SeqCst);
                }
                if let Some(why) = outcome.registry_outage {
                    if !self.registry_down.swap(true, Ordering::SeqCst) {
                        warn!(error = %why,
                            "Schema Registry unavailable; nothing is claimed until it answers");
                    }
                }
                Ok(())
            }
            Err(e) if !e.error.is_unavailable() => Err(e.error),
            Err(e) => {
                let delay = Duration::from_millis(500);
                if e.acknowledged > 0 {
                    warn!(error = %e.error, acknowledged = e.acknowledged, retry_in = ?delay,
                        "Postgres unavailable after Kafka acknowledged {} row(s) of the \
                         batch: they could not be marked delivered, stay pending and will be \
                         produced again (duplicates carry the same event_id); retrying",
                        e.acknowledged);
                } else {
                    warn!(error = %e.error, retry_in = ?delay,
                        "Postgres unavailable; no row was touched, retrying");
                }
                sleep_unless_cancelled(delay, shutdown).await;
                Ok(())
            }
        }
    }

    fn down_flag(&self, dependency: Dependency) -> &AtomicBool {
        match dependency {
            Dependency::Kafka => &self.kafka_down,
            Dependency::Registry => &self.registry_down,
        }
    }

    async fn probe(&self, dependency: Dependency) -> Result<(), String> {
        match dependency {
            Dependency::Kafka => self.producer.probe().await.map_err(|e| e.to_string()),
            Dependency::Registry => match self.serializer.registry() {
                Some(registry) => registry.probe().await.map_err(|e| e.to_string()),
                None => Ok(()),
            },
        }
    }

    /// While `dependency` is marked down, probes it with backoff; no row is claimed meanwhile.
    /// Returns false if shutdown came first.
    async fn wait_for(&self, dependency: Dependency, shutdown: &CancellationToken) -> bool {
        let down = self.down_flag(dependency);
        if !down.load(Ordering::SeqCst) {
            return true;
        }
        let _one_prober = self.probe_lock.lock().await;
        let mut delays = outage_backoff();
        let mut failures = 0u32;
        let (name, target) = match dependency {
            Dependency::Kafka => ("Kafka", self.bootstrap.as_str()),
            Dependency::Registry => ("Schema Registry", self.registry_config.url.as_str()),
        };
        while down.load(Ordering::SeqCst) {
            match self.probe(dependency).await {
                Ok(()) => {
                    if matches!(dependency, Dependency::Kafka) {
                        self.producer.health().kafka_answers();
                    }
                    if failures > 0 || matches!(dependency, Dependency::Registry) {
                        info!(%target, "{name} answers again; resuming");
                    } else {
                        debug!(%target, "{name} answers");
                    }
                    down.store(false, Ordering::SeqCst);
                }
                Err(e) => {
                    failures += 1;
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    // Kafka answers, but partitions lack in-sync replicas (the probe says which).
                    let degraded =
                        matches!(dependency, Dependency::Kafka) && self.producer.is_degraded();
                    if matches!(dependency, Dependency::Kafka) && !degraded {
                        // Says "Kafka unreachable since …" once per outage.
                        self.producer.health().all_brokers_down();
                    }
                    if degraded && (failures == 1 || failures.is_multiple_of(10)) {
                        warn!(%target, error = %e, retry_in = ?delay, failures,
                            "Kafka cluster still degraded; nothing is claimed until it can \
                             take acks=all records");
                    } else if failures == 1 || failures.is_multiple_of(10) {
                        warn!(%target, error = %e, retry_in = ?delay, failures,
                            "{name} not reachable; nothing is claimed until it answers");
                    } else {
                        debug!(%target, error = %e, retry_in = ?delay, failures,
                            "{name} still not reachable");
                    }
                    if !sleep_unless_cancelled(delay, shutdown).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Registers `registry.schemas_dir` when `registry.auto_register` is on, waiting out a
    /// registry that does not answer yet. Returns false if shutdown came first.
    async fn auto_register(&self, shutdown: &CancellationToken) -> Result<bool, RelayError> {
        let (true, Some(registry)) = (
            self.registry_config.auto_register,
            self.serializer.registry(),
        ) else {
            return Ok(true);
        };
        let dir = &self.registry_config.schemas_dir;
        let mut delays = outage_backoff();
        loop {
            match registry.register_dir(dir).await {
                Ok(registered) => {
                    for (subject, id) in &registered {
                        info!(%subject, id, "schema registered");
                    }
                    return Ok(true);
                }
                Err(RegistryError::Outage(why)) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    warn!(error = %why, retry_in = ?delay,
                        "Schema Registry not reachable; schemas not registered yet");
                    if !sleep_unless_cancelled(delay, shutdown).await {
                        return Ok(false);
                    }
                }
                Err(RegistryError::Refused(why)) => {
                    return Err(RelayError::Registry(format!(
                        "auto-registration from {} failed: {why}",
                        dir.display()
                    )))
                }
            }
        }
    }
}
