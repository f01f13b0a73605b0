//! `outbox-relay skip-key`: let a held key's waiting rows flow; the holding rows stay parked.

use super::release_key::KeyArgs;
use super::selector::{self, id_list, rows};
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
    let prefix = if args.dry_run {
        "dry run (nothing changed): would skip"
    } else {
        "skipped"
    };
    println!(
        "{prefix} key {:?} on topic {:?}: {} stay parked, no longer holding the key (ids {}; \
         replaying them later delivers them out of order), {} pending behind now flow",
        args.key,
        args.topic,
        rows(change.ids.len()),
        id_list(&change.ids),
        rows(usize::try_from(change.waiting).unwrap_or(0)),
    );
    Ok(())
}
