//! What `/healthz` and `/readyz` read: are the workers running, and does each dependency answer?
//!
//! [`Tracker`] lives in the relay's shared state and counts workers (a guard per worker, dropped
//! when the worker ends, by return or by panic). [`Health`] is the read-only view the HTTP
//! server holds: the relay's own pause flags (Kafka or the registry marked down by a batch) and
//! probes of Postgres, Kafka metadata and the registry, run by the server on an interval so
//! that a probe request never waits for a slow dependency.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::background::Background;
use super::{RelayError, Shared};
use crate::config::{Config, HttpConfig, RetentionConfig};

/// Workers started and running, whether the relay got past its startup checks, and the
/// settings of what runs beside the workers.
#[derive(Debug)]
pub(super) struct Tracker {
    started: AtomicU32,
    running: AtomicU32,
    claiming: AtomicBool,
    http: HttpConfig,
    retention: RetentionConfig,
}

/// Held by a running worker; dropping it (the worker ended) counts it out.
pub(super) struct WorkerAlive<'a>(&'a Tracker);

impl Drop for WorkerAlive<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Tracker {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            started: AtomicU32::new(0),
            running: AtomicU32::new(0),
            claiming: AtomicBool::new(false),
            http: config.http.clone(),
            retention: config.retention.clone(),
        }
    }

    /// Starts the HTTP endpoint (if configured); the jobs start later, with the workers.
    pub(super) async fn start_background(&self, health: Health) -> Result<Background, RelayError> {
        Background::start(health, &self.http, &self.retention).await
    }

    /// A worker starts: the relay is past its startup checks and claims.
    pub(super) fn worker_started(&self) -> WorkerAlive<'_> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        self.claiming.store(true, Ordering::SeqCst);
        WorkerAlive(self)
    }
}

/// The relay's health, read-only, for the HTTP endpoints.
#[derive(Clone)]
pub struct Health(pub(super) Arc<Shared>);

/// What the relay's workers are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    /// Workers configured: the pipeline, one.
    pub configured: u32,
    /// Workers started since the process began.
    pub started: u32,
    /// Workers running now.
    pub running: u32,
}

impl Workers {
    /// A worker that started has ended: it died (or the relay is shutting down).
    pub fn one_died(&self) -> bool {
        self.running < self.started
    }
}

impl Health {
    pub fn workers(&self) -> Workers {
        let t = &self.0.health;
        Workers {
            configured: 1,
            started: t.started.load(Ordering::SeqCst),
            running: t.running.load(Ordering::SeqCst),
        }
    }

    /// The relay passed its startup checks (table, migrations, auto-registration) and claims.
    pub fn claiming(&self) -> bool {
        self.0.health.claiming.load(Ordering::SeqCst)
    }

    /// The relay paused claiming because Kafka did not answer (a batch or a probe said so).
    pub fn kafka_paused(&self) -> bool {
        self.0.kafka_down.load(Ordering::SeqCst)
    }

    /// Since when librdkafka says no broker answers, if it does.
    pub fn kafka_unreachable_since(&self) -> Option<DateTime<Utc>> {
        self.0.producer.health().unreachable_since()
    }

    /// The relay paused claiming because the registry did not answer.
    pub fn registry_paused(&self) -> bool {
        self.0.registry_down.load(Ordering::SeqCst)
    }

    /// Is a registry configured?
    pub fn has_registry(&self) -> bool {
        self.0.serializer.registry().is_some()
    }

    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight_records(&self) -> i32 {
        self.0.producer.in_flight_count()
    }

    /// The outbox's pool, for the table statistics and retention.
    pub fn pool(&self) -> &sqlx::PgPool {
        self.0.outbox.pool()
    }

    /// The outbox table.
    pub fn table(&self) -> &crate::outbox::TableName {
        self.0.outbox.table()
    }

    /// Does Postgres answer a query within `timeout`?
    pub async fn probe_postgres(&self, timeout: Duration) -> Result<(), String> {
        let query = sqlx::query("SELECT 1").execute(self.0.outbox.pool());
        match tokio::time::timeout(timeout, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Does Kafka answer a metadata request (`kafka.metadata_timeout_ms`)?
    pub async fn probe_kafka(&self) -> Result<(), String> {
        let answer = self.0.producer.probe().await.map_err(|e| e.to_string());
        if answer.is_ok() {
            // Ends librdkafka's "unreachable since" (said once in the log) while no batch runs.
            self.0.producer.health().kafka_answers();
        }
        answer
    }

    /// Does the registry answer? None when no registry is configured.
    pub async fn probe_registry(&self) -> Option<Result<(), String>> {
        let registry = self.0.serializer.registry()?;
        Some(registry.probe().await.map_err(|e| e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_ended_is_seen_as_died_and_one_still_running_is_not() {
        let config = Config::default();
        let t = Tracker::new(&config);
        let a = t.worker_started();
        let b = t.worker_started();
        assert!(t.claiming.load(Ordering::SeqCst));
        let workers = |t: &Tracker| Workers {
            configured: 2,
            started: t.started.load(Ordering::SeqCst),
            running: t.running.load(Ordering::SeqCst),
        };
        assert!(!workers(&t).one_died());
        drop(a);
        assert!(workers(&t).one_died(), "/healthz fails once a worker ended");
        drop(b);
        assert_eq!(workers(&t).running, 0);
    }
}
