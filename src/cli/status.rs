//! `outbox-relay status`: counts by status, lag, held keys, per-topic lines, the last delivery
//! per topic; a table for people, `--json` for scripts, exit 1 past the thresholds given.

use clap::Args;
use serde::Serialize;

use super::parked::columns;
use super::selector;
use crate::config::Config;
use crate::outbox::{HeldKey, ParkedOps, Selector, StatsQueries, TableStats, TopicStatus};

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Exit 1 when the oldest claimable pending row has been due longer than this.
    #[arg(long, value_name = "SECONDS")]
    max_lag: Option<f64>,
    /// Exit 1 when more keys than this are held by parked rows.
    #[arg(long, value_name = "N")]
    max_held_keys: Option<i64>,
    /// Exit 1 when more rows than this are parked.
    #[arg(long, value_name = "N")]
    max_parked: Option<i64>,
    /// How many of the latest rows (by id) are read for the last delivery of each topic.
    #[arg(long, value_name = "ROWS", default_value_t = 100_000,
          value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    recent: i64,
    /// Held keys listed at most.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
}

#[derive(Debug, Serialize)]
struct Status {
    table: String,
    /// False when a threshold given as a flag is exceeded.
    healthy: bool,
    /// The thresholds exceeded, in words.
    breaches: Vec<String>,
    pending: i64,
    parked: i64,
    /// Postgres' estimate of delivered rows (live rows minus pending and parked).
    delivered_estimate: Option<i64>,
    /// Seconds the oldest claimable pending row has been due (0 when none).
    lag_seconds: f64,
    held_keys: i64,
    rows_behind_held_keys: i64,
    /// How many of the latest rows were read for `last_delivered_at`.
    recent_rows_read: i64,
    topics: Vec<TopicStatus>,
    held: Vec<HeldKey>,
}

pub(super) async fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let (pool, table) = selector::pool(config).await?;
    let queries = StatsQueries::new(&table);
    let stats: TableStats = queries.table_stats_on(&pool).await?;
    let topics = queries.topics(&pool, args.recent).await?;
    let live = queries.live_rows_estimate(&pool).await?;
    let held = ParkedOps::new(pool.clone(), &table)
        .held_keys(&Selector::default(), args.limit)
        .await?;
    let pending: i64 = topics.iter().map(|t| t.pending).sum();
    let parked: i64 = topics.iter().map(|t| t.parked).sum();
    let mut breaches = Vec::new();
    if let Some(max) = args.max_lag {
        if stats.oldest_due_age_seconds > max {
            breaches.push(format!(
                "lag {:.1} s exceeds --max-lag {max}",
                stats.oldest_due_age_seconds
            ));
        }
    }
    if let Some(max) = args.max_held_keys {
        if stats.held_keys > max {
            breaches.push(format!(
                "{} held key(s) exceed --max-held-keys {max}",
                stats.held_keys
            ));
        }
    }
    if let Some(max) = args.max_parked {
        if parked > max {
            breaches.push(format!("{parked} parked row(s) exceed --max-parked {max}"));
        }
    }
    let status = Status {
        table: table.qualified(),
        healthy: breaches.is_empty(),
        breaches,
        pending,
        parked,
        delivered_estimate: live.map(|n| (n - pending - parked).max(0)),
        lag_seconds: stats.oldest_due_age_seconds,
        held_keys: stats.held_keys,
        rows_behind_held_keys: stats.rows_behind_held_keys,
        recent_rows_read: args.recent,
        topics,
        held,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    anyhow::ensure!(status.healthy, "unhealthy: {}", status.breaches.join("; "));
    Ok(())
}

fn render(s: &Status) -> String {
    let mut out = format!(
        "outbox {}: {} pending, {} parked, delivered ≈ {}\n\
         lag (oldest claimable pending row due for): {:.1} s\n\
         held keys: {} ({} pending row(s) waiting behind them)\n",
        s.table,
        s.pending,
        s.parked,
        s.delivered_estimate
            .map_or_else(|| "?".into(), |n| n.to_string()),
        s.lag_seconds,
        s.held_keys,
        s.rows_behind_held_keys,
    );
    if !s.topics.is_empty() {
        out.push_str(&format!(
            "\nby topic (last delivery among the latest {} rows):\n",
            s.recent_rows_read
        ));
        let mut table = vec![[
            "TOPIC",
            "PENDING",
            "PARKED",
            "HELD_BACK",
            "LAG_S",
            "LAST_DELIVERED_AT",
        ]
        .map(String::from)
        .to_vec()];
        for t in &s.topics {
            table.push(vec![
                t.topic.clone(),
                t.pending.to_string(),
                t.parked.to_string(),
                t.held_back.to_string(),
                t.lag_seconds
                    .map_or_else(|| "-".into(), |l| format!("{l:.1}")),
                t.last_delivered_at.map_or_else(
                    || "-".into(),
                    |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
            ]);
        }
        out.push_str(&columns(&table));
    }
    if !s.held.is_empty() {
        out.push_str("\nheld keys (release-key or skip-key lets them go):\n");
        let mut table = vec![["TOPIC", "KEY", "HOLDING_IDS", "WAITING"]
            .map(String::from)
            .to_vec()];
        for h in &s.held {
            table.push(vec![
                h.topic.clone(),
                h.key.clone(),
                selector::id_list(&h.holding_ids),
                h.waiting.to_string(),
            ]);
        }
        out.push_str(&columns(&table));
    }
    if s.healthy {
        out.push_str("\nstatus: ok\n");
    } else {
        out.push_str(&format!("\nstatus: UNHEALTHY: {}\n", s.breaches.join("; ")));
    }
    out
}
