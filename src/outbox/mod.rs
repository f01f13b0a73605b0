//! The outbox table: migrations, the SQL that claims, marks and reschedules rows, and the
//! operators' SQL on parked rows (`ops`).
//!
//! Every statement is built once at start-up from the validated, quoted table name.

mod connect;
mod leader;
mod migrate;
mod ops;
mod retention;
mod stats;
mod store;

pub use connect::{connect_options, tls_failure};
pub use leader::Leader;
pub use migrate::{migrate, migrate_to, migrate_with, LATEST_VERSION};
pub use ops::{
    HeldKey, KeyChange, OpsError, ParkedOps, ParkedRow, ReasonCount, Selector, SelectorError,
};
pub use retention::{RetentionSql, Step};
pub use stats::{StatsQueries, TableStats, TopicStatus, COUNT_CAP};
pub use store::{
    capped, Claim, ClaimedRow, Delivered, Failed, Outbox, Parked, StoreError, REASON_MAX_BYTES,
    RELAY_SESSION,
};

use crate::config::check_identifier;

/// A schema-qualified table name, validated and quoted.
#[derive(Debug, Clone)]
pub struct TableName {
    schema: String,
    table: String,
}

impl TableName {
    /// Validates both parts as plain SQL identifiers.
    pub fn new(schema: &str, table: &str) -> Result<Self, String> {
        check_identifier(schema).map_err(|why| format!("schema {schema:?}: {why}"))?;
        check_identifier(table).map_err(|why| format!("table {table:?}: {why}"))?;
        Ok(Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `"schema"."table"`
    pub fn qualified(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }
}
