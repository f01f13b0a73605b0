//! Operators' SQL for parked rows: list, count by reason, show held keys, replay, release or
//! skip a held key.
//!
//! Every statement is built from the validated [`TableName`]; what an operator types (ids,
//! topic, key, times, error text) is always bound, never interpolated. Statements that change
//! rows lock them first (`FOR UPDATE`) and only touch rows that are still `parked` once locked,
//! so a relay parking or an operator replaying concurrently cannot make a row change twice.
//!
//! A dry run executes the very same statement in a transaction that is rolled back: what it
//! reports is exactly what the real run would have changed at that moment.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::TableName;

/// How many characters of `last_error` make a "reason" when parked rows are counted.
const REASON_CHARS: i32 = 120;

/// Which parked rows an operator means. Every field narrows the selection; an empty selector
/// means every parked row, which commands that change rows only accept with an explicit `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Row ids (any of them).
    pub ids: Vec<i64>,
    pub topic: Option<String>,
    /// Requires `topic`: a key means nothing without its topic.
    pub key: Option<String>,
    /// Rows created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Rows created before this time.
    pub created_to: Option<DateTime<Utc>>,
    /// Rows whose `last_error` contains this text (case-insensitive, no wildcards).
    pub error_contains: Option<String>,
}

/// A selector that cannot be used as given. These are the operator's mistakes: the CLI reports
/// them as usage errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "no selector given: name the rows (--id/--ids, --topic, --key, --created-from, \
         --created-to, --error-contains), or pass --all to mean every parked row"
    )]
    Empty,
    #[error("--key needs --topic: a key is only meaningful within its topic")]
    KeyWithoutTopic,
    #[error("--created-from ({from}) is after --created-to ({to})")]
    FromAfterTo {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("--{0} is empty")]
    EmptyValue(&'static str),
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.topic.is_none()
            && self.key.is_none()
            && self.created_from.is_none()
            && self.created_to.is_none()
            && self.error_contains.is_none()
    }

    /// Checks the selector's consistency. `all` allows an empty selector (every parked row).
    pub fn validate(&self, all: bool) -> Result<(), SelectorError> {
        if self.key.is_some() && self.topic.is_none() {
            return Err(SelectorError::KeyWithoutTopic);
        }
        if self.topic.as_deref() == Some("") {
            return Err(SelectorError::EmptyValue("topic"));
        }
        if self.error_contains.as_deref() == Some("") {
            return Err(SelectorError::EmptyValue("error-contains"));
        }
        if let (Some(from), Some(to)) = (self.created_from, self.created_to) {
            if from > to {
                return Err(SelectorError::FromAfterTo { from, to });
            }
        }
        if self.is_empty() && !all {
            return Err(SelectorError::Empty);
        }
        Ok(())
    }
}

/// Errors of the operators' SQL.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// A parked row as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ParkedRow {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub key: Option<String>,
    pub attempts: i32,
    pub holds_key: bool,
    pub replay_count: i32,
    pub created_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// How many selected parked rows share a reason (the first [`REASON_CHARS`] characters of
/// `last_error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReasonCount {
    pub reason: String,
    pub rows: i64,
    pub first_id: i64,
    pub last_id: i64,
}

/// A (topic, key) held back by parked rows, and how many pending rows wait behind them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HeldKey {
    pub topic: String,
    pub key: String,
    pub holding_ids: Vec<i64>,
    pub waiting: i64,
}

/// The outcome of a change (or of its dry run) on one held key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    /// The holding rows changed (replayed or unheld).
    pub ids: Vec<i64>,
    /// Pending rows of the key, behind the first holding row, that the change lets through.
    pub waiting: i64,
}

/// The operators' statements on one outbox table.
#[derive(Debug, Clone)]
pub struct ParkedOps {
    pool: PgPool,
    list_sql: String,
    count_sql: String,
    reasons_sql: String,
    held_sql: String,
    replay_sql: String,
    release_sql: String,
    skip_sql: String,
    waiting_sql: String,
}

/// The selector's filter: parameters `$1`..`$6`, in the order [`bind_selector`] binds them.
const FILTER: &str = "status = 'parked' \
    AND (cardinality($1::bigint[]) = 0 OR id = ANY($1::bigint[])) \
    AND ($2::text IS NULL OR topic = $2::text) \
    AND ($3::text IS NULL OR key = $3::text) \
    AND ($4::timestamptz IS NULL OR created_at >= $4::timestamptz) \
    AND ($5::timestamptz IS NULL OR created_at < $5::timestamptz) \
    AND ($6::text IS NULL OR strpos(lower(last_error), lower($6::text)) > 0)";

/// What a replay does to a row: back to pending and due now, a fresh attempt budget, no longer
/// holding its key, audited. `event_id` is untouched (consumers dedupe on it) and `last_error`
/// stays as history until the row is delivered.
const REPLAY_SET: &str = "status = 'pending', attempts = 0, next_attempt_at = now(), \
    holds_key = false, replay_count = o.replay_count + 1, last_replayed_at = now()";

macro_rules! bind_selector {
    ($query:expr, $sel:expr) => {
        $query
            .bind(&$sel.ids)
            .bind($sel.topic.as_deref())
            .bind($sel.key.as_deref())
            .bind($sel.created_from)
            .bind($sel.created_to)
            .bind($sel.error_contains.as_deref())
    };
}

impl ParkedOps {
    pub fn new(pool: PgPool, table: &TableName) -> Self {
        let t = table.qualified();
        let list_sql = format!(
            "SELECT id, event_id, topic, key, attempts, holds_key, replay_count, created_at, \
                    last_error \
             FROM {t} WHERE {FILTER} ORDER BY id LIMIT $7"
        );
        let count_sql = format!("SELECT count(*) FROM {t} WHERE {FILTER}");
        let reasons_sql = format!(
            "SELECT left(coalesce(last_error, '(no error recorded)'), {REASON_CHARS}) AS reason, \
                    count(*) AS rows, min(id) AS first_id, max(id) AS last_id \
             FROM {t} WHERE {FILTER} GROUP BY 1 ORDER BY 2 DESC, 1"
        );
        let held_sql = format!(
            "WITH held AS ( \
                 SELECT topic, key, array_agg(id ORDER BY id) AS holding_ids, min(id) AS first_id \
                 FROM {t} WHERE {FILTER} AND holds_key AND key IS NOT NULL \
                 GROUP BY topic, key) \
             SELECT h.topic, h.key, h.holding_ids, \
                    (SELECT count(*) FROM {t} p \
                     WHERE p.status = 'pending' AND p.topic = h.topic AND p.key = h.key \
                       AND p.id > h.first_id) AS waiting \
             FROM held h ORDER BY h.first_id LIMIT $7"
        );
        let replay_sql = format!(
            "WITH sel AS (SELECT id FROM {t} WHERE {FILTER} ORDER BY id FOR UPDATE) \
             UPDATE {t} AS o SET {REPLAY_SET} \
             FROM sel WHERE o.id = sel.id AND o.status = 'parked' \
             RETURNING o.id"
        );
        let holding = format!(
            "SELECT id FROM {t} WHERE status = 'parked' AND holds_key AND topic = $1 AND key = $2 \
             ORDER BY id FOR UPDATE"
        );
        let release_sql = format!(
            "WITH sel AS ({holding}) \
             UPDATE {t} AS o SET {REPLAY_SET} \
             FROM sel WHERE o.id = sel.id AND o.status = 'parked' AND o.holds_key \
             RETURNING o.id"
        );
        let skip_sql = format!(
            "WITH sel AS ({holding}) \
             UPDATE {t} AS o SET holds_key = false \
             FROM sel WHERE o.id = sel.id AND o.status = 'parked' AND o.holds_key \
             RETURNING o.id"
        );
        let waiting_sql = format!(
            "SELECT count(*) FROM {t} \
             WHERE status = 'pending' AND topic = $1 AND key = $2 AND id > $3"
        );
        Self {
            pool,
            list_sql,
            count_sql,
            reasons_sql,
            held_sql,
            replay_sql,
            release_sql,
            skip_sql,
            waiting_sql,
        }
    }

    /// Up to `limit` selected parked rows, oldest first, and how many match in all.
    pub async fn list(
        &self,
        sel: &Selector,
        limit: i64,
    ) -> Result<(Vec<ParkedRow>, i64), OpsError> {
        sel.validate(true)?;
        let rows = bind_selector!(sqlx::query_as::<_, ParkedRow>(&self.list_sql), sel)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = bind_selector!(sqlx::query_scalar(&self.count_sql), sel)
            .fetch_one(&self.pool)
            .await?;
        Ok((rows, total))
    }

    /// Selected parked rows counted by reason, most frequent first.
    pub async fn counts_by_reason(&self, sel: &Selector) -> Result<Vec<ReasonCount>, OpsError> {
        sel.validate(true)?;
        Ok(
            bind_selector!(sqlx::query_as::<_, ReasonCount>(&self.reasons_sql), sel)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Keys held by selected parked rows (up to `limit`), with the pending rows waiting behind.
    pub async fn held_keys(&self, sel: &Selector, limit: i64) -> Result<Vec<HeldKey>, OpsError> {
        sel.validate(true)?;
        Ok(
            bind_selector!(sqlx::query_as::<_, HeldKey>(&self.held_sql), sel)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Replays the selected parked rows; returns their ids. `all` permits an empty selector.
    /// With `dry_run`, the same statement runs and is rolled back.
    pub async fn replay(
        &self,
        sel: &Selector,
        all: bool,
        dry_run: bool,
    ) -> Result<Vec<i64>, OpsError> {
        sel.validate(all)?;
        let mut tx = self.pool.begin().await?;
        let mut ids: Vec<i64> = bind_selector!(sqlx::query_scalar::<_, i64>(&self.replay_sql), sel)
            .fetch_all(&mut *tx)
            .await?;
        finish(tx, dry_run).await?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Replays the parked rows holding (topic, key): back to pending with their lower ids, they
    /// are delivered before the rows that waited behind them.
    pub async fn release_key(
        &self,
        topic: &str,
        key: &str,
        dry_run: bool,
    ) -> Result<KeyChange, OpsError> {
        self.change_key(&self.release_sql, topic, key, dry_run)
            .await
    }

    /// Stops the parked rows of (topic, key) from holding the key: they stay parked (and can
    /// be replayed later, out of order), and the rows waiting behind them flow.
    pub async fn skip_key(
        &self,
        topic: &str,
        key: &str,
        dry_run: bool,
    ) -> Result<KeyChange, OpsError> {
        self.change_key(&self.skip_sql, topic, key, dry_run).await
    }

    async fn change_key(
        &self,
        sql: &str,
        topic: &str,
        key: &str,
        dry_run: bool,
    ) -> Result<KeyChange, OpsError> {
        let mut tx = self.pool.begin().await?;
        let mut ids: Vec<i64> = sqlx::query_scalar(sql)
            .bind(topic)
            .bind(key)
            .fetch_all(&mut *tx)
            .await?;
        ids.sort_unstable();
        let waiting = match ids.first() {
            Some(&first) => {
                sqlx::query_scalar(&self.waiting_sql)
                    .bind(topic)
                    .bind(key)
                    .bind(first)
                    .fetch_one(&mut *tx)
                    .await?
            }
            None => 0,
        };
        finish(tx, dry_run).await?;
        Ok(KeyChange { ids, waiting })
    }
}

async fn finish(tx: sqlx::Transaction<'_, Postgres>, dry_run: bool) -> Result<(), sqlx::Error> {
    if dry_run {
        tx.rollback().await
    } else {
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn an_empty_selector_is_refused_unless_all_is_given() {
        let sel = Selector::default();
        assert_eq!(sel.validate(false), Err(SelectorError::Empty));
        assert_eq!(sel.validate(true), Ok(()));
    }

    #[test]
    fn a_key_without_its_topic_is_refused_even_with_all() {
        let sel = Selector {
            key: Some("k".into()),
            ..Selector::default()
        };
        assert_eq!(sel.validate(true), Err(SelectorError::KeyWithoutTopic));
    }

    #[test]
    fn a_time_range_that_ends_before_it_starts_is_refused() {
        let mut sel = Selector {
            created_from: Some(t("2025-02-01T00:00:00Z")),
            created_to: Some(t("2025-01-01T00:00:00Z")),
            ..Selector::default()
        };
        assert!(matches!(
            sel.validate(false),
            Err(SelectorError::FromAfterTo { .. })
        ));
        sel.created_to = Some(t("2025-03-01T00:00:00Z"));
        assert_eq!(sel.validate(false), Ok(()));
    }

    #[tokio::test]
    async fn statements_that_change_rows_lock_them_in_the_quoted_table() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://u@127.0.0.1/db")
            .unwrap();
        let ops = ParkedOps::new(pool, &TableName::new("ops", "outbox").unwrap());
        for sql in [&ops.replay_sql, &ops.release_sql, &ops.skip_sql] {
            assert!(sql.contains("UPDATE \"ops\".\"outbox\" AS o"), "{sql}");
            assert!(sql.contains("FOR UPDATE"), "{sql}");
            assert!(sql.contains("o.status = 'parked'"), "{sql}");
        }
    }
}
