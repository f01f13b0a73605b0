//! `outbox-relay migrate`: create or update the outbox table.

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::outbox::{self, TableName};

pub(super) async fn migrate(config: &Config) -> anyhow::Result<()> {
    let table = TableName::new(&config.database.schema, &config.database.table)
        .map_err(anyhow::Error::msg)?;
    let applied = outbox::migrate(config.database.url.expose(), &table)
        .await
        .with_context(|| {
            format!(
                "migrating {} on {}",
                table.qualified(),
                config.database.url.redacted()
            )
        })?;
    info!(table = %table.qualified(), applied, "outbox table is up to date");
    Ok(())
}
