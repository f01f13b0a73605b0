//! What runs beside the workers: the HTTP endpoint, the table statistics refresher and
//! retention. The endpoint starts first (so `/healthz` answers while the relay waits for
//! Postgres); the two jobs start with the workers. All stop when the relay's `run` returns
//! (a drop guard), the jobs also at shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::{Health, RelayError};
use crate::config::{HttpConfig, RetentionConfig};
use crate::http::{self, Published};
use crate::metrics;
use crate::outbox::{Leader, RetentionSql, StatsQueries};

/// The background tasks of one `run`; dropping it stops them.
pub(super) struct Background {
    health: Health,
    http: HttpConfig,
    retention: RetentionConfig,
    published: Arc<Published>,
    stop: CancellationToken,
    _guard: DropGuard,
}

impl Background {
    /// Binds and serves the HTTP endpoint, if `http.listen` is set.
    pub(super) async fn start(
        health: Health,
        http_config: &HttpConfig,
        retention: &RetentionConfig,
    ) -> Result<Self, RelayError> {
        let stop = CancellationToken::new();
        let published = Arc::new(Published::default());
        if let Some(addr) = http_config.address() {
            let listener = http::bind(addr)
                .await
                .map_err(|e| RelayError::Listen(addr.to_string(), e.to_string()))?;
            let bound = listener.local_addr().unwrap_or(addr);
            info!(address = %bound, "HTTP endpoint listening on {bound}: /healthz, /readyz, /metrics");
            // Table figures a relay set while it led disappear a few intervals after it stops.
            let idle = (http_config.table_stats_interval() * 3).max(Duration::from_secs(30));
            http::serve(
                listener,
                health.clone(),
                Arc::clone(&published),
                idle,
                stop.clone(),
            );
        }
        Ok(Self {
            health,
            http: http_config.clone(),
            retention: retention.clone(),
            published,
            _guard: stop.clone().drop_guard(),
            stop,
        })
    }

    /// Starts the jobs that read and clean the table; they end at `shutdown` (or when this is
    /// dropped).
    pub(super) fn start_jobs(&self, shutdown: &CancellationToken) {
        let stop = self.stop.child_token();
        {
            let stop = stop.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            });
        }
        if self.http.address().is_some() {
            tokio::spawn(refresh_stats(
                self.health.clone(),
                Arc::clone(&self.published),
                self.http.table_stats_interval(),
                stop.clone(),
            ));
        }
        if let Some(keep) = self.retention.keep_for() {
            tokio::spawn(retain(
                self.health.clone(),
                Arc::clone(&self.published),
                self.retention.clone(),
                keep,
                stop,
            ));
        }
    }
}

/// Sleeps `d`; false if `stop` came first.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = stop.cancelled() => false,
    }
}

/// The stats leader reads the table's figures every `interval`; the others wait their turn.
async fn refresh_stats(
    health: Health,
    published: Arc<Published>,
    interval: Duration,
    stop: CancellationToken,
) {
    let queries = StatsQueries::new(health.table());
    let mut leader = Leader::new(health.pool(), health.table(), "table-stats");
    loop {
        let figures = match leader.session().await {
            Ok(Some(conn)) => match queries.table_stats(conn).await {
                Ok(stats) => Some(stats),
                Err(e) => {
                    debug!(error = %e, "table statistics not refreshed");
                    leader.lost();
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                debug!(error = %e, "table statistics: no session for the lock");
                None
            }
        };
        let leads = figures.is_some() && leader.is_held();
        if leads != published.stats_leader.swap(leads, Ordering::SeqCst) {
            info!(
                lock = leader.name(),
                leads, "table statistics leader changed"
            );
        }
        *published.stats.lock().unwrap_or_else(|e| e.into_inner()) = figures;
        if !pause(interval, &stop).await {
            break;
        }
    }
    leader.release().await;
    published.stats_leader.store(false, Ordering::SeqCst);
}

/// The retention leader deletes old delivered rows, pass after pass, `interval` apart.
async fn retain(
    health: Health,
    published: Arc<Published>,
    config: RetentionConfig,
    keep: Duration,
    stop: CancellationToken,
) {
    let sql = RetentionSql::new(health.table());
    let mut leader = Leader::new(health.pool(), health.table(), "retention");
    let batch = config.batch_size;
    'passes: loop {
        let started = Instant::now();
        let mut deleted = 0i64;
        let mut after = 0i64;
        loop {
            if stop.is_cancelled() {
                break 'passes;
            }
            let conn = match leader.session().await {
                Ok(Some(conn)) => conn,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "retention: no session for the lock");
                    break;
                }
            };
            match sql.step(conn, after, batch, keep).await {
                Ok(step) => {
                    if step.deleted > 0 {
                        metrics::retention_deleted(step.deleted as u64);
                        deleted += step.deleted;
                    }
                    match step.last_id {
                        Some(last) if !step.ends_pass(batch) => after = last,
                        _ => break,
                    }
                }
                Err(e) => {
                    warn!(error = %e, "retention step failed; trying again after retention.interval_ms");
                    leader.lost();
                    break;
                }
            }
        }
        let leads = leader.is_held();
        if leads != published.retention_leader.swap(leads, Ordering::SeqCst) {
            info!(lock = leader.name(), leads, "retention leader changed");
        }
        if deleted > 0 {
            info!(deleted, took = ?started.elapsed(), delivered_after = %config.delivered_after,
                "retention deleted delivered rows");
        }
        if !pause(config.interval(), &stop).await {
            break;
        }
    }
    leader.release().await;
    published.retention_leader.store(false, Ordering::SeqCst);
}
