//! `outbox-relay check-order`: is everything delivered in the topic, in key order?

use anyhow::Context;
use clap::Args;

use super::selector;
use crate::config::Config;
use crate::order_check;

#[derive(Debug, Clone, Args)]
pub struct CheckOrderArgs {
    /// The topic to read from the beginning.
    #[arg(long)]
    topic: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) async fn check_order(config: &Config, args: &CheckOrderArgs) -> anyhow::Result<()> {
    let (pool, table) = selector::pool(config).await?;
    let report = order_check::check(&pool, &table, &config.kafka.bootstrap_servers, &args.topic)
        .await
        .with_context(|| format!("checking topic {:?}", args.topic))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("topic {:?} against {}:", args.topic, table.qualified());
        println!("{report}");
    }
    anyhow::ensure!(
        report.is_ok(),
        "order check failed on topic {:?}: {} lost, {} reordered keys",
        args.topic,
        report.lost,
        report.reordered
    );
    Ok(())
}
