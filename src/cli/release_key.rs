//! `outbox-relay release-key`: replay the parked rows holding a key, so they go first and the
//! rows waiting behind them follow in order.

use super::selector::{self, id_list, KeyArgs};
use crate::config::Config;

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
    let (prefix, verb) = if args.dry_run {
        ("dry run (nothing changed): would release", "to replay")
    } else {
        ("released", "replayed")
    };
    println!(
        "{prefix} key {:?} on topic {:?}: holding rows {verb}: ids {}; \
         pending rows behind them, to follow in id order: {}",
        args.key,
        args.topic,
        id_list(&change.ids),
        change.waiting,
    );
    Ok(())
}
