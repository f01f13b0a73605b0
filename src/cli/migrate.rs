//! `outbox-relay migrate`: create or update the outbox table.

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::outbox::{self, TableName};

pub(super) async fn migrate(config: &Config) -> anyhow::Result<()> {
    let table = TableName::new(&config.database.schema, &config.database.table)
        .map_err(anyhow::Error::msg)?;
    let options = outbox::connect_options(&config.database)?;
    let applied = outbox::migrate_with(&options, &table)
        .await
        .map_err(|e| match outbox::tls_failure(&e, &options) {
            Some(why) => anyhow::Error::msg(why),
            None => anyhow::Error::new(e),
        })
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
