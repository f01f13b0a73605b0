//! What the parked-row commands share: selector flags, usage errors, the database connection,
//! and how ids are printed.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use sqlx::postgres::PgPoolOptions;

use crate::config::Config;
use crate::outbox::{self, ParkedOps, Selector, SelectorError, TableName};

/// The operator asked for something that cannot be done as asked; `main` exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<SelectorError> for UsageError {
    fn from(e: SelectorError) -> Self {
        UsageError(e.to_string())
    }
}

/// Which parked rows: every flag narrows the selection.
#[derive(Debug, Clone, Args)]
pub(super) struct SelectorArgs {
    /// A row id (repeatable).
    #[arg(long = "id", value_name = "ID")]
    id: Vec<i64>,
    /// Row ids, comma-separated.
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    ids: Vec<i64>,
    /// Rows of this topic.
    #[arg(long)]
    topic: Option<String>,
    /// Rows of this key (needs --topic).
    #[arg(long)]
    key: Option<String>,
    /// Rows created at or after this time (RFC 3339, e.g. 2025-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    created_from: Option<DateTime<Utc>>,
    /// Rows created before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    created_to: Option<DateTime<Utc>>,
    /// Rows whose last error contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    error_contains: Option<String>,
}

impl SelectorArgs {
    /// The selector, validated; `all` allows an empty one.
    pub(super) fn selector(&self, all: bool) -> Result<Selector, UsageError> {
        let mut ids: Vec<i64> = self.id.iter().chain(&self.ids).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let selector = Selector {
            ids,
            topic: self.topic.clone(),
            key: self.key.clone(),
            created_from: self.created_from,
            created_to: self.created_to,
            error_contains: self.error_contains.clone(),
        };
        selector.validate(all)?;
        Ok(selector)
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}; expected an RFC 3339 time such as 2025-01-31T12:00:00Z"))
}

/// One held key.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// The key's topic.
    #[arg(long)]
    pub(super) topic: String,
    /// The held key.
    #[arg(long)]
    pub(super) key: String,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
}

/// A small pool on the configured database, and the operators' statements on its table.
pub(super) async fn connect(config: &Config) -> anyhow::Result<ParkedOps> {
    let (pool, table) = pool(config).await?;
    Ok(ParkedOps::new(pool, &table))
}

pub(super) async fn pool(config: &Config) -> anyhow::Result<(sqlx::PgPool, TableName)> {
    let table = TableName::new(&config.database.schema, &config.database.table)
        .map_err(anyhow::Error::msg)?;
    let options = outbox::connect_options(&config.database)?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(config.database.connect_timeout_ms))
        .connect_with(options.clone())
        .await
        .map_err(|e| match outbox::tls_failure(&e, &options) {
            Some(why) => anyhow::Error::msg(why),
            None => anyhow::Error::new(e),
        })
        .with_context(|| format!("connecting to {}", config.database.url.redacted()))?;
    Ok((pool, table))
}

/// `4, 7, 9`, or the first 50 and how many more.
pub(super) fn id_list(ids: &[i64]) -> String {
    const SHOWN: usize = 50;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(" … ({} more)", ids.len() - SHOWN));
    }
    s
}

/// `1 row`, `2 rows`.
pub(super) fn rows(n: usize) -> String {
    if n == 1 {
        "1 row".into()
    } else {
        format!("{n} rows")
    }
}
