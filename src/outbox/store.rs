//! Claim, mark and reschedule: the relay's SQL against the outbox table.
//!
//! A batch is one transaction. Claiming locks the rows (`FOR UPDATE SKIP LOCKED`), the locks
//! are held while Kafka acknowledges them, and the marks are written in the same transaction.
//! If the relay dies, Postgres rolls the transaction back and the rows are pending again: the
//! row lock is the lease, and losing the connection fences the old owner.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::TableName;
use crate::config::DatabaseConfig;

/// Errors of the store layer. Every one of them is an outage from the row's point of view:
/// the relay backs off and tries again, without touching any row.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid outbox table name: {0}")]
    InvalidName(String),
    #[error("invalid database url: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// A row claimed for delivery. Locked until its batch's transaction ends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRow {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub key: Option<String>,
    /// The jsonb payload as Postgres prints it.
    pub payload: String,
    /// The jsonb headers as Postgres prints them (a flat object of strings).
    pub headers: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
}

/// A row Kafka acknowledged, and where it went.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
}

/// A row whose delivery failed, with a reason a person can read.
#[derive(Debug, Clone)]
pub struct Failed {
    pub id: i64,
    pub error: String,
}

/// The outbox table and the statements that act on it.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
    table: TableName,
    claim_sql: String,
    mark_delivered_sql: String,
    reschedule_sql: String,
    park_sql: String,
}

impl Outbox {
    /// A lazily connecting pool: start-up does not fail while Postgres is down; the first
    /// claim reports it and the relay backs off.
    pub fn connect_lazy(config: &DatabaseConfig, max_connections: u32) -> Result<Self, StoreError> {
        let table =
            TableName::new(&config.schema, &config.table).map_err(StoreError::InvalidName)?;
        let options: PgConnectOptions = config
            .url
            .expose()
            .parse()
            .map_err(StoreError::InvalidUrl)?;
        let options = options.application_name("outbox-relay");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_millis(config.connect_timeout_ms))
            .connect_lazy_with(options);
        Ok(Self::with_pool(pool, table))
    }

    pub fn with_pool(pool: PgPool, table: TableName) -> Self {
        let t = table.qualified();
        // Claim due rows in id order. A keyed row is taken only if no earlier pending row of
        // its key is left out of this claim (locked by another batch or relay, or not yet
        // due), so one key's rows never travel in two batches at once. The rows left out
        // stay locked until this transaction ends, which only delays them.
        let claim_sql = format!(
            "WITH cand AS ( \
                 SELECT id, topic, key FROM {t} \
                 WHERE status = 'pending' AND next_attempt_at <= now() \
                 ORDER BY id LIMIT $1 \
                 FOR UPDATE SKIP LOCKED) \
             SELECT o.id, o.event_id, o.topic, o.key, o.payload::text AS payload, \
                    o.headers::text AS headers, o.created_at, o.attempts \
             FROM {t} o JOIN cand c ON c.id = o.id \
             WHERE c.key IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM {t} e \
                 WHERE e.status = 'pending' AND e.key IS NOT NULL \
                   AND e.topic = c.topic AND e.key = c.key AND e.id < c.id \
                   AND e.id NOT IN (SELECT id FROM cand)) \
             ORDER BY o.id"
        );
        let mark_delivered_sql = format!(
            "UPDATE {t} AS o SET status = 'delivered', delivered_at = now(), \
                 kafka_partition = d.partition, kafka_offset = d.kafka_offset, last_error = NULL \
             FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS d(id, partition, kafka_offset) \
             WHERE o.id = d.id AND o.status = 'pending'"
        );
        let reschedule_sql = format!(
            "UPDATE {t} AS o SET attempts = o.attempts + $3, \
                 next_attempt_at = now() + make_interval(secs => $4), last_error = f.error \
             FROM unnest($1::bigint[], $2::text[]) AS f(id, error) \
             WHERE o.id = f.id AND o.status = 'pending'"
        );
        let park_sql = format!(
            "UPDATE {t} AS o SET status = 'parked', attempts = o.attempts + 1, last_error = f.error \
             FROM unnest($1::bigint[], $2::text[]) AS f(id, error) \
             WHERE o.id = f.id AND o.status = 'pending'"
        );
        Self {
            pool,
            table,
            claim_sql,
            mark_delivered_sql,
            reschedule_sql,
            park_sql,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Opens a batch transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Claims up to `limit` due rows, locked for the life of `tx`.
    pub async fn claim(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        limit: u32,
    ) -> Result<Vec<ClaimedRow>, StoreError> {
        Ok(sqlx::query_as::<_, ClaimedRow>(&self.claim_sql)
            .bind(i64::from(limit))
            .fetch_all(&mut **tx)
            .await?)
    }

    /// Marks acknowledged rows delivered, by primary key; returns how many rows changed.
    pub async fn mark_delivered(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[Delivered],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let partitions: Vec<i32> = rows.iter().map(|r| r.partition).collect();
        let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
        let done = sqlx::query(&self.mark_delivered_sql)
            .bind(&ids)
            .bind(&partitions)
            .bind(&offsets)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Records a failure and pushes `next_attempt_at` by `delay`. `burn_attempt` is false when
    /// the fault was not the row's (an outage).
    pub async fn reschedule(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[Failed],
        delay: Duration,
        burn_attempt: bool,
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let (ids, errors) = split_failed(rows);
        let done = sqlx::query(&self.reschedule_sql)
            .bind(&ids)
            .bind(&errors)
            .bind(i32::from(burn_attempt))
            .bind(delay.as_secs_f64())
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Parks rows that can never succeed, keeping the reason.
    pub async fn park(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[Failed],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let (ids, errors) = split_failed(rows);
        let done = sqlx::query(&self.park_sql)
            .bind(&ids)
            .bind(&errors)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }
}

fn split_failed(rows: &[Failed]) -> (Vec<i64>, Vec<&str>) {
    rows.iter().map(|r| (r.id, r.error.as_str())).unzip()
}
