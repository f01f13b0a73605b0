//! `outbox-relay run`: the long-lived relay.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::relay::Relay;
use crate::shutdown;

pub(super) async fn run(config: Config) -> anyhow::Result<()> {
    let relay = Relay::new(&config).context("starting the relay")?;
    let token = CancellationToken::new();
    shutdown::on_signals(token.clone()).context("installing signal handlers")?;
    relay.run(token).await?;
    Ok(())
}
