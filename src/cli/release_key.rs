//! `outbox-relay release-key`: replay the parked rows holding a key, so they go first and the
//! rows waiting behind them follow in order.

use clap::Args;

use super::selector::{self, id_list, rows};
use crate::config::Config;

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

pub(super) async fn release_key(config: &Config, args: &KeyArgs) -> anyhow::Result<()> {
    let ops = selector::connect(config).await?;
    let change = ops
        .release_key(&args.topic, &args.key, args.dry_run)
        .await?;
    if change.ids.is_empty() {
        println!(
            "no parked row holds key {:?} on topic {:?}",
            args.key, args.topic
        );
        return Ok(());
    }
    let prefix = if args.dry_run {
        "dry run (nothing changed): would release"
    } else {
        "released"
    };
    println!(
        "{prefix} key {:?} on topic {:?}: replayed holding {} (ids {}), \
         {} pending behind will follow in id order",
        args.key,
        args.topic,
        rows(change.ids.len()),
        id_list(&change.ids),
        rows(usize::try_from(change.waiting).unwrap_or(0)),
    );
    Ok(())
}
