//! `outbox-relay check-order`: is everything delivered in the topic, in key order?

use anyhow::Context;
use clap::Args;

use super::selector;
use crate::config::Config;
use crate::order_check::{self, Allow};

#[derive(Debug, Clone, Args)]
pub struct CheckOrderArgs {
    /// The topic to read from the beginning.
    #[arg(long)]
    topic: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Do not fail on rows still pending (not sent yet).
    #[arg(long)]
    allow_pending: bool,
    /// Do not fail on parked rows.
    #[arg(long)]
    allow_parked: bool,
    /// Do not fail on records whose event_id is not an outbox row of the topic.
    #[arg(long)]
    allow_unknown: bool,
}

pub(super) async fn check_order(config: &Config, args: &CheckOrderArgs) -> anyhow::Result<()> {
    let (pool, table) = selector::pool(config).await?;
    let mut report = order_check::check_with(
        &pool,
        &table,
        crate::produce::connection_config(&config.kafka),
        &args.topic,
    )
    .await
    .with_context(|| format!("checking topic {:?}", args.topic))?;
    report.allow = Allow {
        pending: args.allow_pending,
        parked: args.allow_parked,
        unknown: args.allow_unknown,
    };
    let problems = report.problems();
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["ok"] = problems.is_empty().into();
        json["problems"] = problems.clone().into();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("topic {:?} against {}:", args.topic, table.qualified());
        println!("{report}");
    }
    anyhow::ensure!(
        problems.is_empty(),
        "order check failed on topic {:?}: {}",
        args.topic,
        problems.join(", ")
    );
    Ok(())
}
