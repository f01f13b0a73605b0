//! The operations endpoint (axum): `/healthz`, `/readyz`, `/metrics`.
//!
//! - `/healthz` answers 200 while every worker that started is still running; 503 once one
//!   ended (it died: the relay is draining the others and will exit 1), so a liveness probe
//!   restarts a relay that is on its way out anyway, never one that waits for a dependency.
//! - `/readyz` answers 200 when the relay claims (its startup checks passed), Postgres answers a
//!   query, Kafka answers a metadata request, the registry (when configured) answers, and the
//!   relay is not paused by an outage of any of them; 503 otherwise. The JSON body says which
//!   dependency is down, since when, and why. Dependencies are probed every
//!   [`PROBE_INTERVAL`] by a task of the server, so a probe request never waits for one.
//! - `/metrics`: the Prometheus text of [`crate::metrics`]; its gauges are set from memory
//!   right before rendering.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::outbox::TableStats;
use crate::relay::Health;

/// How often the server probes Postgres, Kafka and the registry.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A Postgres probe that takes longer than this counts as down.
const POSTGRES_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the background jobs publish for the endpoint: the table figures (on the stats leader)
/// and who leads what.
#[derive(Debug, Default)]
pub struct Published {
    pub stats: Mutex<Option<TableStats>>,
    pub stats_leader: AtomicBool,
    pub retention_leader: AtomicBool,
}

/// One dependency's state as the probes and the relay's pause flags see it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dependency {
    /// None until the first probe.
    pub up: Option<bool>,
    /// Since when it is down (the first failed probe or pause, or librdkafka's own word).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since: Option<DateTime<Utc>>,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The relay paused claiming because of it.
    pub paused: bool,
}

impl Dependency {
    fn observe(&mut self, result: Result<(), String>, paused: bool, since: Option<DateTime<Utc>>) {
        let error = match (result, paused) {
            (Err(e), _) => Some(e),
            (Ok(()), true) => Some(
                "the relay paused claiming after an outage; it resumes once its own probe succeeds"
                    .into(),
            ),
            (Ok(()), false) => None,
        };
        self.paused = paused;
        match error {
            None => {
                self.up = Some(true);
                self.down_since = None;
                self.error = None;
            }
            Some(e) => {
                let first = self.down_since.unwrap_or_else(Utc::now);
                self.down_since = Some(since.map_or(first, |s| s.min(first)));
                self.up = Some(false);
                self.error = Some(e);
            }
        }
    }
}

/// The latest probe results.
#[derive(Debug, Default)]
struct Probes {
    postgres: Mutex<Dependency>,
    kafka: Mutex<Dependency>,
    registry: Mutex<Option<Dependency>>,
}

struct Endpoint {
    health: Health,
    probes: Probes,
    published: Arc<Published>,
}

/// `/readyz`'s body.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// Past the startup checks (table, migrations, schema registration).
    claiming: bool,
    /// Why not ready, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
    dependencies: Dependencies,
}

#[derive(Debug, Serialize)]
struct Dependencies {
    postgres: Dependency,
    kafka: Dependency,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<Dependency>,
}

/// `/healthz`'s body.
#[derive(Debug, Serialize)]
struct Liveness {
    healthy: bool,
    workers_configured: u32,
    workers_running: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Binds `addr` (port 0: a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoint on `listener` until `stop`, probing the dependencies meanwhile.
pub fn serve(
    listener: TcpListener,
    health: Health,
    published: Arc<Published>,
    gauge_idle: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    metrics::install(gauge_idle);
    let endpoint = Arc::new(Endpoint {
        probes: Probes {
            registry: Mutex::new(health.has_registry().then(Dependency::default)),
            ..Probes::default()
        },
        health,
        published,
    });
    tokio::spawn(probe_loop(Arc::clone(&endpoint), stop.clone()));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(endpoint);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    })
}

async fn probe_loop(endpoint: Arc<Endpoint>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let h = &endpoint.health;
        let (postgres, kafka, registry) = tokio::join!(
            h.probe_postgres(POSTGRES_PROBE_TIMEOUT),
            h.probe_kafka(),
            h.probe_registry()
        );
        lock(&endpoint.probes.postgres).observe(postgres, false, None);
        lock(&endpoint.probes.kafka).observe(kafka, h.kafka_paused(), h.kafka_unreachable_since());
        if let (Some(state), Some(result)) = (lock(&endpoint.probes.registry).as_mut(), registry) {
            state.observe(result, h.registry_paused(), None);
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = stop.cancelled() => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Endpoint {
    fn liveness(&self) -> Liveness {
        let w = self.health.workers();
        let reason = w.one_died().then(|| {
            format!(
                "a worker stopped ({} of {} running): the relay is stopping the others and exits",
                w.running, w.started
            )
        });
        Liveness {
            healthy: reason.is_none(),
            workers_configured: w.configured,
            workers_running: w.running,
            reason,
        }
    }

    fn readiness(&self) -> Readiness {
        let dependencies = Dependencies {
            postgres: lock(&self.probes.postgres).clone(),
            kafka: lock(&self.probes.kafka).clone(),
            registry: lock(&self.probes.registry).clone(),
        };
        let claiming = self.health.claiming();
        let mut reasons = Vec::new();
        if !claiming {
            reasons.push("starting: the outbox table is not checked yet".to_owned());
        }
        if self.health.workers().one_died() {
            reasons.push("a worker stopped: the relay is exiting".to_owned());
        }
        let named = [
            ("postgres", Some(&dependencies.postgres)),
            ("kafka", Some(&dependencies.kafka)),
            ("registry", dependencies.registry.as_ref()),
        ];
        for (name, dep) in named {
            let Some(dep) = dep else { continue };
            match (dep.up, dep.down_since) {
                (None, _) => reasons.push(format!("{name}: not probed yet")),
                (Some(false), since) => reasons.push(format!(
                    "{name} down since {}: {}",
                    since.map_or_else(|| "?".into(), |s| s.to_rfc3339()),
                    dep.error.as_deref().unwrap_or("")
                )),
                (Some(true), _) => {}
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            claiming,
            reasons,
            dependencies,
        }
    }

    /// Sets every gauge from memory, right before rendering.
    fn set_gauges(&self) {
        let readiness = self.readiness();
        let up = |d: &Dependency| if d.up == Some(true) { 1.0 } else { 0.0 };
        metrics::set(metrics::READY, f64::from(u8::from(readiness.ready)));
        metrics::set(
            metrics::WORKERS_RUNNING,
            f64::from(self.health.workers().running),
        );
        metrics::set(
            metrics::IN_FLIGHT,
            f64::from(self.health.in_flight_records()),
        );
        let deps = &readiness.dependencies;
        metrics::set_labelled(
            metrics::DEPENDENCY_UP,
            "dependency",
            "postgres",
            up(&deps.postgres),
        );
        metrics::set_labelled(
            metrics::DEPENDENCY_UP,
            "dependency",
            "kafka",
            up(&deps.kafka),
        );
        if let Some(registry) = &deps.registry {
            metrics::set_labelled(
                metrics::DEPENDENCY_UP,
                "dependency",
                "registry",
                up(registry),
            );
        }
        let p = &self.published;
        let stats_leader = p.stats_leader.load(Ordering::SeqCst);
        metrics::set(
            metrics::TABLE_STATS_LEADER,
            f64::from(u8::from(stats_leader)),
        );
        metrics::set(
            metrics::RETENTION_LEADER,
            f64::from(u8::from(p.retention_leader.load(Ordering::SeqCst))),
        );
        // Only the leader's figures are fresh; others leave them out (the exporter's idle
        // timeout drops figures this relay set while it led).
        if let (true, Some(s)) = (stats_leader, *lock(&p.stats)) {
            metrics::set_labelled(metrics::ROWS, "status", "pending", s.pending as f64);
            metrics::set_labelled(metrics::ROWS, "status", "parked", s.parked as f64);
            metrics::set(metrics::OLDEST_DUE_AGE, s.oldest_due_age_seconds);
            metrics::set(metrics::HELD_KEYS, s.held_keys as f64);
            metrics::set(
                metrics::ROWS_BEHIND_HELD_KEYS,
                s.rows_behind_held_keys as f64,
            );
        }
    }
}

async fn healthz(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let l = endpoint.liveness();
    let status = if l.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(l)).into_response()
}

async fn readyz(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let r = endpoint.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

async fn scrape(State(endpoint): State<Arc<Endpoint>>) -> Response {
    endpoint.set_gauges();
    let text = metrics::render().unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_is_down_since_its_first_failure_until_it_answers_again() {
        let mut d = Dependency::default();
        assert_eq!(d.up, None);
        d.observe(Err("refused".into()), false, None);
        let since = d.down_since.expect("down since");
        d.observe(Err("still refused".into()), false, None);
        assert_eq!(d.down_since, Some(since), "the first failure is kept");
        assert_eq!(d.error.as_deref(), Some("still refused"));
        d.observe(Ok(()), true, None);
        assert_eq!(d.up, Some(false), "paused by the relay is not up");
        assert_eq!(d.down_since, Some(since));
        let earlier = since - chrono::Duration::seconds(30);
        d.observe(Ok(()), true, Some(earlier));
        assert_eq!(
            d.down_since,
            Some(earlier),
            "librdkafka's earlier word wins"
        );
        d.observe(Ok(()), false, None);
        assert_eq!((d.up, d.down_since, d.error), (Some(true), None, None));
    }
}
