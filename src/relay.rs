//! The loop: claim → produce → wait for acknowledgements → mark, in concurrent batches.
//!
//! Each worker runs one batch at a time in its own transaction, so `concurrency` batches are in
//! flight at once: one worker's rows travel to Kafka while another claims or marks. On shutdown
//! the workers stop claiming, finish (produce, wait, mark, commit) the batch in hand, and exit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, RelayConfig};
use crate::outbox::{Delivered, Failed, Outbox, StoreError};
use crate::produce::{Disposition, Producer};

/// Why the relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
    #[error(
        "shutdown bound of {0:?} exceeded with {1} batch(es) in flight; their rows stay pending \
         and will be produced again (duplicates carry the same event_id)"
    )]
    ShutdownTimedOut(Duration, usize),
}

/// What one batch ended in, when it did not end normally.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Kafka is unreachable")]
    KafkaOutage,
}

/// Counts since start, for logs and (later) metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub parked: AtomicU64,
}

/// A relay over one outbox table.
pub struct Relay {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Outbox,
    producer: Producer,
    config: RelayConfig,
    bootstrap: String,
    kafka_down: AtomicBool,
    probe_lock: Mutex<()>,
    counters: Counters,
}

impl Relay {
    /// Builds the pool (lazily connecting) and the producer; contacts nothing yet.
    pub fn new(config: &Config) -> Result<Self, RelayError> {
        let outbox = Outbox::connect_lazy(&config.database, config.database.max_connections)?;
        let producer = Producer::new(&config.kafka, &config.headers)?;
        Ok(Self {
            shared: Arc::new(Shared {
                outbox,
                producer,
                config: config.relay.clone(),
                bootstrap: config.kafka.bootstrap_servers.clone(),
                kafka_down: AtomicBool::new(true),
                probe_lock: Mutex::new(()),
                counters: Counters::default(),
            }),
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Runs until `shutdown` is cancelled, then drains in-flight batches within
    /// `relay.shutdown_timeout_ms`.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let table = self.shared.outbox.table().qualified();
        info!(%table, bootstrap = %self.shared.bootstrap, "relay starting");
        let mut workers = JoinSet::new();
        for worker in 0..self.shared.config.concurrency {
            let shared = Arc::clone(&self.shared);
            let shutdown = shutdown.clone();
            workers.spawn(async move { shared.work(worker, shutdown).await });
        }
        let bound = self.shared.config.shutdown_timeout();
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(bound).await;
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = workers.join_next() => match joined {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(e)) => error!(error = %e, "relay worker failed"),
                },
                () = &mut deadline => {
                    let in_flight = workers.len();
                    workers.abort_all();
                    return Err(RelayError::ShutdownTimedOut(bound, in_flight));
                }
            }
        }
        let c = &self.shared.counters;
        info!(
            delivered = c.delivered.load(Ordering::Relaxed),
            retried = c.retried.load(Ordering::Relaxed),
            parked = c.parked.load(Ordering::Relaxed),
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

/// Sleeps for `d`; false if shutdown came first.
async fn sleep_unless_cancelled(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}

impl Shared {
    async fn work(&self, worker: u32, shutdown: CancellationToken) {
        let mut db_delays = outage_backoff();
        while !shutdown.is_cancelled() {
            if !self.wait_for_kafka(&shutdown).await {
                break;
            }
            match self.run_batch().await {
                Ok(0) => {
                    db_delays = outage_backoff();
                    sleep_unless_cancelled(self.config.poll_interval(), &shutdown).await;
                }
                Ok(_) => db_delays = outage_backoff(),
                Err(BatchError::Store(e)) => {
                    let delay = db_delays.next().unwrap_or(Duration::from_secs(10));
                    warn!(worker, error = %e, retry_in = ?delay,
                        "Postgres unavailable; no row was touched, retrying");
                    sleep_unless_cancelled(delay, &shutdown).await;
                }
                Err(BatchError::KafkaOutage) => {
                    self.kafka_down.store(true, Ordering::SeqCst);
                }
            }
        }
        debug!(worker, "worker stopped");
    }

    /// While Kafka is marked down, probes it with backoff; no row is claimed meanwhile.
    /// Returns false if shutdown came first.
    async fn wait_for_kafka(&self, shutdown: &CancellationToken) -> bool {
        if !self.kafka_down.load(Ordering::SeqCst) {
            return true;
        }
        let _one_prober = self.probe_lock.lock().await;
        let mut delays = outage_backoff();
        let mut failures = 0u32;
        while self.kafka_down.load(Ordering::SeqCst) {
            match self.producer.probe().await {
                Ok(()) => {
                    if failures > 0 {
                        info!(bootstrap = %self.bootstrap, "Kafka answers again; resuming");
                    } else {
                        debug!(bootstrap = %self.bootstrap, "Kafka answers");
                    }
                    self.kafka_down.store(false, Ordering::SeqCst);
                }
                Err(e) => {
                    failures += 1;
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    warn!(bootstrap = %self.bootstrap, error = %e, retry_in = ?delay,
                        "Kafka not reachable; nothing is claimed until it answers");
                    if !sleep_unless_cancelled(delay, shutdown).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// One transaction: claim, produce, wait for every delivery report, mark, commit.
    async fn run_batch(&self) -> Result<usize, BatchError> {
        let mut tx = self.outbox.begin().await?;
        let rows = self.outbox.claim(&mut tx, self.config.batch_size).await?;
        if rows.is_empty() {
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(0);
        }
        let outcomes = self.producer.produce_all(&rows).await;

        let mut delivered = Vec::with_capacity(rows.len());
        let (mut retry, mut park, mut outage) = (Vec::new(), Vec::new(), Vec::new());
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Ok((partition, offset)) => delivered.push(Delivered {
                    id: row.id,
                    partition,
                    offset,
                }),
                Err(e) => {
                    let failed = Failed {
                        id: row.id,
                        error: e.to_string(),
                    };
                    let disposition = e.disposition();
                    warn!(id = row.id, event_id = %row.event_id, topic = %row.topic,
                        attempts = row.attempts, ?disposition, error = %failed.error,
                        "delivery failed");
                    match disposition {
                        Disposition::Retry => retry.push(failed),
                        Disposition::Park => park.push(failed),
                        Disposition::Outage => outage.push(failed),
                    }
                }
            }
        }
        // A timeout while no broker answers is the cluster's fault, not the row's.
        if !retry.is_empty() && self.producer.probe().await.is_err() {
            outage.append(&mut retry);
        }

        let marked = self.outbox.mark_delivered(&mut tx, &delivered).await?;
        if marked != delivered.len() as u64 {
            error!(
                acknowledged = delivered.len(),
                marked,
                "rows marked delivered differ from rows Kafka acknowledged; \
                 acknowledged rows that were no longer pending were left as they are"
            );
        }
        self.outbox
            .reschedule(&mut tx, &retry, self.config.retry_delay(), true)
            .await?;
        self.outbox.park(&mut tx, &park).await?;
        if let Err(e) = tx.commit().await {
            error!(error = %e, acknowledged = delivered.len(),
                "could not record acknowledged rows; they stay pending and will be produced \
                 again (duplicates carry the same event_id)");
            return Err(StoreError::from(e).into());
        }

        let c = &self.counters;
        c.delivered
            .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        c.retried.fetch_add(retry.len() as u64, Ordering::Relaxed);
        c.parked.fetch_add(park.len() as u64, Ordering::Relaxed);
        debug!(
            claimed = rows.len(),
            delivered = delivered.len(),
            retried = retry.len(),
            parked = park.len(),
            outage = outage.len(),
            "batch done"
        );
        if outage.is_empty() {
            Ok(rows.len())
        } else {
            Err(BatchError::KafkaOutage)
        }
    }
}
