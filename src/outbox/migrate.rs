//! Embedded migrations, run with sqlx's migrator.
//!
//! The SQL files in `migrations/` name the table through `${qualified}` (`"schema"."table"`),
//! `${table}` (the bare name, for index names) and `${schema}` (the bare schema name, for the
//! table's companions: `"${schema}"."${table}_wakeup"`); all are filled in with the configured,
//! validated names. sqlx keeps its ledger (`_sqlx_migrations`) in the
//! outbox's own schema, so one schema holds one outbox table.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use super::TableName;

/// `(version, description, sql)` of each migration, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "create outbox",
        include_str!("../../migrations/0001_create_outbox.sql"),
    ),
    (
        2,
        "serialization overrides",
        include_str!("../../migrations/0002_serialization_overrides.sql"),
    ),
    (
        3,
        "failure bookkeeping",
        include_str!("../../migrations/0003_failure_bookkeeping.sql"),
    ),
    (
        4,
        "row limits",
        include_str!("../../migrations/0004_row_limits.sql"),
    ),
    (
        5,
        "wakeup",
        include_str!("../../migrations/0005_wakeup.sql"),
    ),
    (
        6,
        "publish functions",
        include_str!("../../migrations/0006_publish_functions.sql"),
    ),
    (
        7,
        "delivered log",
        include_str!("../../migrations/0007_delivered_log.sql"),
    ),
];

/// The migration version this relay needs: `run` refuses a table that is behind it.
pub const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Creates the schema if needed and applies pending migrations; returns how many ran.
pub async fn migrate(url: &str, table: &TableName) -> Result<usize, sqlx::Error> {
    migrate_to(url, table, LATEST_VERSION).await
}

/// Like [`migrate`], but stops after migration `last` (for tests of older tables and upgrades).
pub async fn migrate_to(url: &str, table: &TableName, last: i64) -> Result<usize, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    migrate_options(&options, table, last).await
}

/// [`migrate`] over connection options (`outbox-relay migrate` gives the configured TLS
/// settings this way).
pub async fn migrate_with(
    options: &PgConnectOptions,
    table: &TableName,
) -> Result<usize, sqlx::Error> {
    migrate_options(options, table, LATEST_VERSION).await
}

async fn migrate_options(
    options: &PgConnectOptions,
    table: &TableName,
    last: i64,
) -> Result<usize, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let schema = format!("\"{}\"", table.schema());
    // Only when missing: `CREATE SCHEMA IF NOT EXISTS` checks for the right to create schemas
    // in the database even when the schema exists, and an owner role that was given the
    // schema (`outbox-relay grants`) needs no such right.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
            .bind(table.schema())
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await?;
    }
    conn.execute(format!("SET search_path TO {schema}").as_str())
        .await?;

    let migrations: Vec<Migration> = MIGRATIONS
        .iter()
        .filter(|(version, _, _)| *version <= last)
        .map(|(version, description, sql)| {
            let sql = sql
                .replace("${qualified}", &table.qualified())
                .replace("${table}", table.table())
                .replace("${schema}", table.schema());
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Owned(sql),
                false,
            )
        })
        .collect();
    let migrator = Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    };
    let before = applied(&mut conn).await;
    migrator
        .run(&mut conn)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    let after = applied(&mut conn).await;
    conn.close().await?;
    Ok(after.saturating_sub(before))
}

async fn applied(conn: &mut PgConnection) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .map(|n| n as usize)
        .unwrap_or(0)
}
