//! Claim, mark and reschedule: the relay's SQL against the outbox table.
//!
//! A batch is one transaction. Claiming locks the rows (`FOR UPDATE SKIP LOCKED`), the locks
//! are held while Kafka acknowledges them, and the marks are written in the same transaction.
//! If the relay dies, Postgres rolls the transaction back and the rows are pending again: the
//! row lock is the lease, and losing the connection fences the old owner.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::TableName;
use crate::config::DatabaseConfig;

/// Errors of the store layer. None of them is the row's fault: [`StoreError::is_unavailable`]
/// sorts them into "Postgres is away, back off and try again" and "the database is not what the
/// relay needs (no table, old migration, no permission): an operator must act".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid outbox table name: {0}")]
    InvalidName(String),
    #[error("invalid database url: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The table is missing or behind this relay's migrations.
    #[error("{0}")]
    NotMigrated(String),
    /// A TLS handshake refused by a certificate check or the server, explained.
    #[error("{0}")]
    Tls(String),
}

impl StoreError {
    /// True when waiting may heal it: connection refused or lost, timeouts, the server shutting
    /// down or starting up, too many connections, a serialization failure or deadlock. False
    /// for what only an operator can fix: an undefined table, column or schema, permission
    /// denied, failed authentication, an unknown database, a table behind its migrations.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::InvalidName(_) | Self::InvalidUrl(_) | Self::NotMigrated(_) | Self::Tls(_) => {
                false
            }
            Self::Postgres(e) => is_unavailable(e),
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08 connection exception, 53 insufficient resources (too many connections, out of
            // disk), 57P01-03 admin/crash shutdown and "cannot connect now", 40001/40P01
            // serialization failure and deadlock, 55P03 lock not available, 57014 canceled.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(code.as_ref(), "40001" | "40P01" | "55P03" | "57014")
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Migrate(_) => false,
        // A certificate that fails verification, or a server without TLS when sslmode needs
        // it: an operator must act. A TLS error caused by the connection itself (reset,
        // closed) is an outage like any other lost connection.
        sqlx::Error::Tls(source) => super::connect::tls_error_is_io(source.as_ref()),
        // Io, PoolTimedOut, PoolClosed, Protocol, WorkerCrashed, RowNotFound…
        _ => true,
    }
}

/// The longest reason written to `last_error` (and quoted in a log line), in bytes.
pub const REASON_MAX_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes (on a character boundary), with `… (N bytes more)` appended
/// when it was cut: a reason quoting a huge value must not be copied whole into `last_error`
/// and into every log line of every attempt.
pub fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… ({} bytes more)",
        &text[..end],
        text.len() - end
    ))
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
    /// Per-row override of the value's registry subject.
    pub value_subject: Option<String>,
    /// Per-row pinned version of `value_subject`.
    pub value_schema_version: Option<i32>,
}

/// What a claim found: the rows it picked, and how many due rows it locked in all (`candidates`
/// > 0 with no row picked: every due row is behind a row held elsewhere).
#[derive(Debug, Default)]
pub struct Claim {
    pub rows: Vec<ClaimedRow>,
    pub candidates: usize,
}

/// A row Kafka acknowledged, and where it went.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
}

/// A row whose delivery failed and will be tried again after `delay`.
#[derive(Debug, Clone)]
pub struct Failed {
    pub id: i64,
    /// The reason, readable by a person.
    pub error: String,
    pub delay: Duration,
}

/// A row that can never succeed as it is.
#[derive(Debug, Clone)]
pub struct Parked {
    pub id: i64,
    /// The reason, readable by a person.
    pub error: String,
    /// Later rows of its key wait for an operator (`on_parked = "hold-key"`).
    pub holds_key: bool,
}

/// Session settings of the relay's batch connections:
///
/// - `synchronous_commit = off`: a batch's transaction only records what Kafka already holds
///   (delivered, rescheduled, parked); if Postgres crashes before the commit reaches the disk,
///   the rows are pending again and are produced again: a duplicate (same `event_id`), never a
///   loss. Saves a WAL flush per batch.
/// - `jit = off`: the claim's generic plan is estimated above `jit_above_cost`, and compiling
///   it took longer than running it: 50–130 ms against 7–13 ms for a 500-row claim on the
///   bench's table (BENCHMARKS.md).
/// - `enable_seqscan = off` and `enable_sort = off`: an outbox table's statistics are stale by
///   nature (a queue: rows come and go faster than autovacuum analyzes). From the statistics of
///   a 60-row table a plan probed each key with a scan of the whole table (claims of 1–18 s once
///   a backlog had built up); from statistics taken among deleted rows, which put a
///   300,000-row backlog at 4,000 rows, a plan read every pending row and sorted them (on disk)
///   to pick the first 500 (1–1.6 s per claim). Both are penalties, not bans: every statement
///   here has an index path, the candidates come from the pending index in id order and stop
///   at the batch, and each key's probe is an index probe, whatever the statistics say. The
///   claim's last `ORDER BY` (of the batch) still sorts.
/// - `plan_cache_mode = force_generic_plan`: with no plan that reads the backlog left to choose,
///   a statement is planned once per connection (a claim's planning cost ~0.7 ms of Postgres
///   CPU, and at 1,000 events/s the relay claims a few hundred times a second). Tests plan the
///   claim on a young table under each kind of stale statistics and count the rows it reads
///   once the table has grown (`claim::*`).
pub const RELAY_SESSION: &[(&str, &str)] = &[
    ("synchronous_commit", "off"),
    ("jit", "off"),
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_sort", "off"),
    ("enable_seqscan", "off"),
];

/// The outbox table and the statements that act on it.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
    table: TableName,
    claim_sql: String,
    mark_delivered_sql: String,
    /// `relay.on_delivered = "delete"`: delete and log instead of marking.
    delete_delivered_sql: String,
    on_delivered: crate::config::OnDelivered,
    reschedule_sql: String,
    park_sql: String,
    defer_topic_sql: String,
    arm_wakeup_sql: String,
}

impl Outbox {
    /// A lazily connecting pool: start-up does not fail while Postgres is down; the first
    /// claim reports it and the relay backs off.
    pub fn connect_lazy(config: &DatabaseConfig, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_lazy_with(config, max_connections, &[])
    }

    /// [`Outbox::connect_lazy`] for the relay's own batches, with [`RELAY_SESSION`] on its
    /// connections.
    pub fn connect_relay(
        config: &DatabaseConfig,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        Self::connect_lazy_with(config, max_connections, RELAY_SESSION)
    }

    fn connect_lazy_with(
        config: &DatabaseConfig,
        max_connections: u32,
        settings: &[(&str, &str)],
    ) -> Result<Self, StoreError> {
        let table =
            TableName::new(&config.schema, &config.table).map_err(StoreError::InvalidName)?;
        let options = super::connect::connect_options(config)?
            .application_name("outbox-relay")
            .options(settings.iter().copied());
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_millis(config.connect_timeout_ms))
            .connect_lazy_with(options);
        Ok(Self::with_pool(pool, table))
    }

    pub fn with_pool(pool: PgPool, table: TableName) -> Self {
        let t = table.qualified();
        // Claim due rows in id order, keeping one key's rows in one lane:
        // - before the LIMIT, skip rows whose key is blocked: an earlier row of the key backs
        //   off after a failure, or is parked and holds the key. Both checks probe small
        //   partial indexes, and blocked rows never fill the batch (no head-of-line blocking
        //   of other keys);
        // - after it, take a keyed row only if every earlier pending row of its key is in this
        //   claim or in one of this relay's batches in flight (`$2`, their ids: the relay hands
        //   its batches to Kafka in claim order, so these rows travel behind them). An earlier
        //   row held elsewhere (another relay instance, an operator's command) keeps the later
        //   ones out, so one key's rows never travel in two relays at once. The rows left out
        //   stay locked until this transaction ends, which only delays them.
        // The second rule is computed per key, not per row: the first pending row of each
        // candidate key that is neither claimed now nor in flight (`foreign_rows`), found by
        // one ordered probe of the pending-key index per key (a correlated `LIMIT 1`, so that no
        // plan, even one cached while the table was empty, scans the table), which only walks
        // that key's rows in flight (a per-row NOT EXISTS walked them once per candidate: 10 hot
        // keys with 2,000 rows in flight made every claim read ~100,000 index entries).
        // `foreign_rows` is materialized, once, and keeps only the keys held elsewhere (usually
        // none), and the candidates carry their columns (no join back to the table): a plan
        // cached while the table was new and never analyzed estimated one row everywhere, ran
        // the per-key probes again for every candidate (500 × 250 probes, 0.2 s per claim) and
        // joined the candidates to a full scan of the table (see also `RELAY_SESSION`).
        // The probes run only if some pending row below the batch's last id is neither in the
        // claim nor in flight here (one ordered walk of the pending index, stopping at the
        // first such row or at the batch): a relay alone on its table, as in a drain, has none,
        // and skips them (they were half of a 500-row claim's time; BENCHMARKS.md).
        // `candidates` (on every row; one row of NULLs when nothing is picked) tells "nothing
        // due" from "due rows, all behind rows held elsewhere".
        let claim_sql = format!(
            "WITH cand AS MATERIALIZED ( \
                 SELECT c.id, c.event_id, c.topic, c.key, c.payload, c.headers, c.created_at, \
                        c.attempts, c.value_subject, c.value_schema_version FROM {t} c \
                 WHERE c.status = 'pending' AND c.next_attempt_at <= now() \
                   AND (c.key IS NULL OR ( \
                     NOT EXISTS (SELECT 1 FROM {t} b \
                         WHERE b.status = 'pending' AND b.attempts > 0 AND b.key IS NOT NULL \
                           AND b.topic = c.topic AND b.key = c.key AND b.id < c.id \
                           AND b.next_attempt_at > now()) \
                     AND NOT EXISTS (SELECT 1 FROM {t} h \
                         WHERE h.status = 'parked' AND h.holds_key \
                           AND h.topic = c.topic AND h.key = c.key AND h.id < c.id))) \
                 ORDER BY c.id LIMIT $1 \
                 FOR UPDATE SKIP LOCKED), \
             mine AS (SELECT id FROM cand UNION ALL SELECT unnest($2::bigint[])), \
             keys AS (SELECT topic, key, max(id) AS last FROM cand \
                 WHERE key IS NOT NULL GROUP BY topic, key), \
             foreign_rows AS MATERIALIZED ( \
                 SELECT topic, key, first FROM ( \
                     SELECT k.topic, k.key, ( \
                         SELECT e.id FROM {t} e \
                         WHERE e.status = 'pending' AND e.key IS NOT NULL \
                           AND e.topic = k.topic AND e.key = k.key AND e.id < k.last \
                           AND e.id NOT IN (SELECT id FROM mine) \
                         ORDER BY e.id LIMIT 1) AS first \
                     FROM keys k \
                     WHERE (SELECT g.id FROM {t} g \
                         WHERE g.status = 'pending' AND g.id < (SELECT max(id) FROM cand) \
                           AND g.id NOT IN (SELECT id FROM mine) \
                         ORDER BY g.id LIMIT 1) IS NOT NULL) f \
                 WHERE first IS NOT NULL), \
             picked AS ( \
                 SELECT c.id, c.event_id, c.topic, c.key, c.payload::text AS payload, \
                        c.headers::text AS headers, c.created_at, c.attempts, \
                        c.value_subject, c.value_schema_version \
                 FROM cand c \
                 WHERE c.key IS NULL OR NOT EXISTS (SELECT 1 FROM foreign_rows f \
                     WHERE f.topic = c.topic AND f.key = c.key AND f.first < c.id)) \
             SELECT (SELECT count(*) FROM cand) AS candidates, p.* \
             FROM (SELECT 1) AS one LEFT JOIN picked p ON true \
             ORDER BY p.id"
        );
        // delivered_at is when the acknowledgement was recorded (clock_timestamp()), not when
        // the batch's transaction began (now()).
        let mark_delivered_sql = format!(
            "UPDATE {t} AS o SET status = 'delivered', delivered_at = clock_timestamp(), \
                 kafka_partition = d.partition, kafka_offset = d.kafka_offset, last_error = NULL \
             FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS d(id, partition, kafka_offset) \
             WHERE o.id = d.id AND o.status = 'pending'"
        );
        // Delete on delivery: the row goes, its coordinates are appended to the delivery log
        // (migration 0007), in one statement.
        let delete_delivered_sql = format!(
            "WITH d AS ( \
                 DELETE FROM {t} AS o \
                 USING unnest($1::bigint[], $2::int[], $3::bigint[]) AS d(id, partition, kafka_offset) \
                 WHERE o.id = d.id AND o.status = 'pending' \
                 RETURNING o.id, o.event_id, o.topic, o.key, d.partition, d.kafka_offset, \
                           o.created_at) \
             INSERT INTO \"{schema}\".\"{table}_delivered\" \
                 (id, event_id, topic, key, kafka_partition, kafka_offset, created_at, delivered_at) \
             SELECT id, event_id, topic, key, partition, kafka_offset, created_at, clock_timestamp() \
             FROM d",
            schema = table.schema(),
            table = table.table(),
        );
        // The delay counts from the failure (clock_timestamp()), not from the claim: now() is
        // the transaction's start, and a batch can wait message.timeout.ms for its reports.
        let reschedule_sql = format!(
            "UPDATE {t} AS o SET attempts = o.attempts + 1, \
                 next_attempt_at = clock_timestamp() + make_interval(secs => f.delay), \
                 last_error = f.error \
             FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, error, delay) \
             WHERE o.id = f.id AND o.status = 'pending'"
        );
        let park_sql = format!(
            "UPDATE {t} AS o SET status = 'parked', attempts = o.attempts + 1, \
                 last_error = f.error, holds_key = f.holds AND o.key IS NOT NULL \
             FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, error, holds) \
             WHERE o.id = f.id AND o.status = 'pending'"
        );
        // A topic refuses us (e.g. its authorization): push every pending row of it that no
        // other batch holds, without an attempt (not the rows' fault). Per-key order holds: a
        // later row of a deferred key stays out of every claim while its earlier row is pending
        // outside that claim (the claim's second rule), whatever their attempts.
        let defer_topic_sql = format!(
            "UPDATE {t} AS o SET \
                 next_attempt_at = greatest(o.next_attempt_at, \
                     clock_timestamp() + make_interval(secs => $2)), \
                 last_error = $3 \
             WHERE o.id IN (SELECT p.id FROM {t} p \
                 WHERE p.status = 'pending' AND p.topic = $1 FOR UPDATE SKIP LOCKED)"
        );
        let arm_wakeup_sql = format!(
            "UPDATE \"{}\".\"{}_wakeup\" SET armed = true WHERE NOT armed",
            table.schema(),
            table.table()
        );
        Self {
            pool,
            table,
            claim_sql,
            arm_wakeup_sql,
            delete_delivered_sql,
            on_delivered: crate::config::OnDelivered::Mark,
            mark_delivered_sql,
            reschedule_sql,
            park_sql,
            defer_topic_sql,
        }
    }

    /// What [`Outbox::mark_delivered`] does: mark the rows, or delete them and log their
    /// coordinates (`relay.on_delivered`).
    pub fn on_delivered(mut self, mode: crate::config::OnDelivered) -> Self {
        self.on_delivered = mode;
        self
    }

    /// The statement [`Outbox::mark_delivered`] runs (`$1` ids, `$2` partitions, `$3` offsets),
    /// for benchmarks.
    pub fn completion_sql(&self) -> &str {
        match self.on_delivered {
            crate::config::OnDelivered::Mark => &self.mark_delivered_sql,
            crate::config::OnDelivered::Delete => &self.delete_delivered_sql,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The claim statement (`$1` = batch size), for benchmarks and `EXPLAIN`.
    pub fn claim_sql(&self) -> &str {
        &self.claim_sql
    }

    /// Checks that the outbox table exists and is at this relay's migration version, so that a
    /// missing or old table is an operator's error at startup, not an outage retried forever.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        self.check_table().await.map_err(|e| match &e {
            StoreError::Postgres(sqlx_error) if !e.is_unavailable() => {
                super::connect::tls_failure(sqlx_error, &self.pool.connect_options())
                    .map_or(e, StoreError::Tls)
            }
            _ => e,
        })
    }

    async fn check_table(&self) -> Result<(), StoreError> {
        let t = &self.table;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(t.qualified())
            .fetch_one(&self.pool)
            .await?;
        let ledger = format!("\"{}\"._sqlx_migrations", t.schema());
        let has_ledger: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&ledger)
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Err(StoreError::NotMigrated(format!(
                "the outbox table {} does not exist: run `outbox-relay migrate` with the same \
                 configuration (database.schema, database.table)",
                t.qualified()
            )));
        }
        let version: i64 = if has_ledger {
            sqlx::query_scalar(&format!(
                "SELECT coalesce(max(version), 0) FROM {ledger} WHERE success"
            ))
            .fetch_one(&self.pool)
            .await?
        } else {
            0
        };
        if version < super::LATEST_VERSION {
            return Err(StoreError::NotMigrated(format!(
                "the outbox table {} is at migration {version}, this relay needs {}: run \
                 `outbox-relay migrate` with the same configuration",
                t.qualified(),
                super::LATEST_VERSION
            )));
        }
        Ok(())
    }

    /// [`Outbox::check_ready`], waiting out an unavailable Postgres with backoff (200 ms → 10 s)
    /// and one log line per try. `Ok(false)` if `shutdown` came first; an error that waiting
    /// cannot heal (no table, old migration, permission denied…) is returned at once.
    pub async fn wait_ready(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, StoreError> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.check_ready().await {
                Ok(()) => return Ok(true),
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(table = %self.table.qualified(), error = %e, retry_in = ?delay,
                        "Postgres not reachable at startup; waiting for it before claiming");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return Ok(false),
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a batch transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Claims up to `limit` due rows, locked for the life of `tx`. `in_flight` holds the ids of
    /// this relay's batches still in flight: later rows of their keys may be claimed (they will
    /// be handed to Kafka after them).
    pub async fn claim(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        limit: u32,
        in_flight: &[i64],
    ) -> Result<Claim, StoreError> {
        use sqlx::{FromRow, Row};
        let found = sqlx::query(&self.claim_sql)
            .bind(i64::from(limit))
            .bind(in_flight)
            .fetch_all(&mut **tx)
            .await?;
        let mut candidates = 0;
        let mut rows = Vec::with_capacity(found.len());
        for row in &found {
            candidates = row.try_get::<i64, _>("candidates")?;
            if row.try_get::<Option<i64>, _>("id")?.is_some() {
                rows.push(ClaimedRow::from_row(row)?);
            }
        }
        Ok(Claim {
            rows,
            candidates: candidates as usize,
        })
    }

    /// Arms the wakeup (migration 0005): the next statement that inserts into the outbox sends a
    /// notification on [`Outbox::wakeup_channel`]. Writes only when it was not armed yet.
    pub async fn arm_wakeup(&self) -> Result<(), StoreError> {
        sqlx::query(&self.arm_wakeup_sql)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The channel the outbox's insert trigger notifies when the wakeup is armed: `outbox_` and
    /// the first 24 hex digits of md5(`schema.table`), computed as the trigger computes it.
    pub async fn wakeup_channel(&self) -> Result<String, StoreError> {
        let name = format!("{}.{}", self.table.schema(), self.table.table());
        Ok(sqlx::query_scalar("SELECT 'outbox_' || left(md5($1), 24)")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Marks acknowledged rows delivered (or deletes them and logs where they went, with
    /// `on_delivered = "delete"`), by primary key; returns how many rows changed.
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
        let done = sqlx::query(self.completion_sql())
            .bind(&ids)
            .bind(&partitions)
            .bind(&offsets)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Records a failure: one more attempt, and `next_attempt_at` pushed by the row's delay.
    pub async fn reschedule(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[Failed],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let errors: Vec<_> = rows
            .iter()
            .map(|r| capped(&r.error, REASON_MAX_BYTES).into_owned())
            .collect();
        let delays: Vec<f64> = rows.iter().map(|r| r.delay.as_secs_f64()).collect();
        let done = sqlx::query(&self.reschedule_sql)
            .bind(&ids)
            .bind(&errors)
            .bind(&delays)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Parks rows that can never succeed, keeping the reason.
    pub async fn park(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[Parked],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let errors: Vec<_> = rows
            .iter()
            .map(|r| capped(&r.error, REASON_MAX_BYTES).into_owned())
            .collect();
        let holds: Vec<bool> = rows.iter().map(|r| r.holds_key).collect();
        let done = sqlx::query(&self.park_sql)
            .bind(&ids)
            .bind(&errors)
            .bind(&holds)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Defers every pending row of `topic` not held by another batch by `delay`, without
    /// counting an attempt; returns how many rows moved.
    pub async fn defer_topic(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        topic: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.defer_topic_sql)
            .bind(topic)
            .bind(delay.as_secs_f64())
            .bind(reason)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_capped_on_a_character_boundary_and_says_how_much_was_cut() {
        assert_eq!(capped("short", 10), "short");
        let long = "é".repeat(1000); // 2000 bytes
        let c = capped(&long, 1023);
        assert!(c.starts_with(&"é".repeat(511)), "{c}");
        assert!(c.ends_with("… (978 bytes more)"), "{c}");
    }

    #[test]
    fn missing_tables_and_old_migrations_are_not_outages_but_lost_connections_are() {
        assert!(!StoreError::NotMigrated("x".into()).is_unavailable());
        assert!(StoreError::Postgres(sqlx::Error::PoolTimedOut).is_unavailable());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(StoreError::Postgres(sqlx::Error::Io(io)).is_unavailable());
    }
}
