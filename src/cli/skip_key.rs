//! `outbox-relay skip-key`: let a held key's waiting rows flow; the holding rows stay parked.

use super::selector::{self, id_list, KeyArgs};
use crate::config::Config;

pub(super) async fn skip_key(config: &Config, args: &KeyArgs) -> anyhow::Result<()> {
    let ops = selector::connect(config).await?;
    let change = ops.skip_key(&args.topic, &args.key, args.dry_run).await?;
    if change.ids.is_empty() {
        println!(
            "no parked row holds key {:?} on topic {:?}",
            args.key, args.topic
        );
        return Ok(());
    }
    let (prefix, free) = if args.dry_run {
        ("dry run (nothing changed): would skip", "that would flow")
    } else {
        ("skipped", "now free to flow")
    };
    println!(
        "{prefix} key {:?} on topic {:?}: holding rows kept parked, no longer holding the key: \
         ids {} (replaying them later delivers them out of order); pending rows behind them, \
         {free}: {}",
        args.key,
        args.topic,
        id_list(&change.ids),
        change.waiting,
    );
    Ok(())
}
