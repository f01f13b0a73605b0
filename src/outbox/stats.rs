//! What the table says about the relay's progress: rows by status, the lag (the age of the
//! oldest claimable pending row), the keys held by parked rows and the rows behind them.
//!
//! [`TableStats`] feeds the gauges and is read on an interval: every part of it is a probe of a
//! partial index (`pending_idx`, `parked_idx`, `holding_idx`, `backoff_idx`,
//! `pending_key_idx`), never a scan of the delivered rows, and counts stop at [`COUNT_CAP`] so
//! that a backlog of millions costs what a backlog of 100,000 does. [`TopicStatus`] is for
//! `outbox-relay status`, run by a person or a cron job: it reads every pending and parked row
//! (not the delivered ones) and the latest rows by id for the last delivery of each topic.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::PgPool;

use super::TableName;

/// Counts of pending and parked rows (and of rows behind one held key) stop here.
pub const COUNT_CAP: i64 = 100_000;

/// The table's figures for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct TableStats {
    /// Pending rows, up to [`COUNT_CAP`].
    pub pending: i64,
    /// Parked rows, up to [`COUNT_CAP`].
    pub parked: i64,
    /// Seconds the oldest claimable pending row has been due (0 when none is).
    pub oldest_due_age_seconds: f64,
    /// (topic, key) pairs held back by a parked row.
    pub held_keys: i64,
    /// Pending rows behind held keys (each key's count up to [`COUNT_CAP`]).
    pub rows_behind_held_keys: i64,
}

/// One topic's line in `outbox-relay status`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TopicStatus {
    pub topic: String,
    pub pending: i64,
    pub parked: i64,
    /// Seconds the oldest claimable pending row of the topic has been due.
    pub lag_seconds: Option<f64>,
    /// Pending rows of the topic that wait behind a held key.
    pub held_back: i64,
    /// The latest `delivered_at` among the latest rows of the table (see `recent`).
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// Rows delivered among those latest rows.
    pub delivered_recently: i64,
}

/// "This pending row can be claimed": the claim's own rules (not backing off, no earlier row
/// of its key backing off, not held by a parked row), as probes of the partial indexes.
fn claimable(t: &str, c: &str) -> String {
    format!(
        "{c}.status = 'pending' AND {c}.next_attempt_at <= now() \
         AND ({c}.key IS NULL OR ( \
             NOT EXISTS (SELECT 1 FROM {t} b \
                 WHERE b.status = 'pending' AND b.attempts > 0 AND b.key IS NOT NULL \
                   AND b.topic = {c}.topic AND b.key = {c}.key AND b.id < {c}.id \
                   AND b.next_attempt_at > now()) \
             AND NOT EXISTS (SELECT 1 FROM {t} h \
                 WHERE h.status = 'parked' AND h.holds_key \
                   AND h.topic = {c}.topic AND h.key = {c}.key AND h.id < {c}.id)))"
    )
}

/// The statements, built once from the quoted table name.
#[derive(Debug, Clone)]
pub struct StatsQueries {
    table_sql: String,
    topics_sql: String,
    live_rows_sql: String,
    table: TableName,
}

impl StatsQueries {
    pub fn new(table: &TableName) -> Self {
        let t = table.qualified();
        let claimable_c = claimable(&t, "c");
        // $1 = the cap.
        let table_sql = format!(
            "SELECT \
               (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE status = 'pending' LIMIT $1) p) \
                 AS pending, \
               (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE status = 'parked' LIMIT $1) p) \
                 AS parked, \
               coalesce((SELECT greatest(extract(epoch FROM now() - c.next_attempt_at), 0)::float8 \
                 FROM {t} c WHERE {claimable_c} ORDER BY c.id LIMIT 1), 0) \
                 AS oldest_due_age_seconds, \
               (SELECT count(*) FROM (SELECT DISTINCT topic, key FROM {t} \
                  WHERE status = 'parked' AND holds_key AND key IS NOT NULL) h) AS held_keys, \
               (SELECT coalesce(sum(( \
                   SELECT count(*) FROM (SELECT 1 FROM {t} p \
                     WHERE p.status = 'pending' AND p.key IS NOT NULL \
                       AND p.topic = h.topic AND p.key = h.key AND p.id > h.first_id \
                     LIMIT $1) w)), 0)::bigint \
                FROM (SELECT topic, key, min(id) AS first_id FROM {t} \
                      WHERE status = 'parked' AND holds_key AND key IS NOT NULL \
                      GROUP BY topic, key) h) AS rows_behind_held_keys"
        );
        // $1 = how many of the latest rows (by id) to look at for the last delivery per topic.
        let topics_sql = format!(
            "WITH waiting AS ( \
                 SELECT c.topic, \
                        count(*) AS pending, \
                        max(extract(epoch FROM now() - c.next_attempt_at)::float8) \
                          FILTER (WHERE {claimable_c}) AS lag_seconds, \
                        count(*) FILTER (WHERE c.key IS NOT NULL AND EXISTS ( \
                          SELECT 1 FROM {t} h WHERE h.status = 'parked' AND h.holds_key \
                            AND h.topic = c.topic AND h.key = c.key AND h.id < c.id)) AS held_back \
                 FROM {t} c WHERE c.status = 'pending' GROUP BY c.topic), \
             parked AS ( \
                 SELECT topic, count(*) AS parked FROM {t} WHERE status = 'parked' GROUP BY topic), \
             recent AS ( \
                 SELECT topic, max(delivered_at) AS last_delivered_at, count(*) AS delivered_recently \
                 FROM (SELECT topic, status, delivered_at FROM {t} ORDER BY id DESC LIMIT $1) r \
                 WHERE status = 'delivered' GROUP BY topic) \
             SELECT coalesce(w.topic, p.topic, r.topic) AS topic, \
                    coalesce(w.pending, 0) AS pending, coalesce(p.parked, 0) AS parked, \
                    w.lag_seconds, coalesce(w.held_back, 0) AS held_back, \
                    r.last_delivered_at, coalesce(r.delivered_recently, 0) AS delivered_recently \
             FROM waiting w \
             FULL JOIN parked p ON p.topic = w.topic \
             FULL JOIN recent r ON r.topic = coalesce(w.topic, p.topic) \
             ORDER BY 1"
        );
        let live_rows_sql =
            "SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = $1::regclass".to_owned();
        Self {
            table_sql,
            topics_sql,
            live_rows_sql,
            table: table.clone(),
        }
    }

    /// The gauges' statement (`$1` = the cap), for `EXPLAIN`.
    pub fn table_sql(&self) -> &str {
        &self.table_sql
    }

    /// The gauges' figures, on `conn` (the stats leader's session).
    pub async fn table_stats(&self, conn: &mut PgConnection) -> Result<TableStats, sqlx::Error> {
        sqlx::query_as(&self.table_sql)
            .bind(COUNT_CAP)
            .fetch_one(conn)
            .await
    }

    /// The gauges' figures, on any connection of `pool`.
    pub async fn table_stats_on(&self, pool: &PgPool) -> Result<TableStats, sqlx::Error> {
        sqlx::query_as(&self.table_sql)
            .bind(COUNT_CAP)
            .fetch_one(pool)
            .await
    }

    /// Per-topic lines for `status`, the last delivery read among the latest `recent` rows.
    pub async fn topics(
        &self,
        pool: &PgPool,
        recent: i64,
    ) -> Result<Vec<TopicStatus>, sqlx::Error> {
        sqlx::query_as(&self.topics_sql)
            .bind(recent)
            .fetch_all(pool)
            .await
    }

    /// Postgres' estimate of the table's live rows (`pg_stat_user_tables.n_live_tup`).
    pub async fn live_rows_estimate(&self, pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(&self.live_rows_sql)
            .bind(self.table.qualified())
            .fetch_optional(pool)
            .await
    }
}
