//! `outbox-relay replay`: parked rows back to pending, same event_id, a fresh attempt budget.

use clap::Args;

use super::selector::{self, id_list, rows, SelectorArgs};
use crate::config::Config;

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    selector: SelectorArgs,
    /// Allow an empty selector: replay every parked row.
    #[arg(long)]
    all: bool,
    /// Show which rows would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(super) async fn replay(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let selector = args.selector.selector(args.all)?;
    let ops = selector::connect(config).await?;
    let ids = ops.replay(&selector, args.all, args.dry_run).await?;
    if ids.is_empty() {
        println!("no parked row matches");
    } else if args.dry_run {
        println!(
            "dry run: would replay {} (nothing changed): ids {}",
            rows(ids.len()),
            id_list(&ids)
        );
    } else {
        println!(
            "replayed {} (now pending, due now, same event_id): ids {}",
            rows(ids.len()),
            id_list(&ids)
        );
    }
    Ok(())
}
