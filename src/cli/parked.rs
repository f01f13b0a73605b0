//! `outbox-relay parked`: the parked rows, their reasons, and the keys they hold.

use clap::Args;
use serde::Serialize;

use super::selector::{self, id_list, SelectorArgs};
use crate::config::Config;
use crate::outbox::{HeldKey, ParkedRow, ReasonCount};

#[derive(Debug, Clone, Args)]
pub struct ParkedArgs {
    #[command(flatten)]
    selector: SelectorArgs,
    /// Rows (and held keys) listed at most.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Listing {
    total: i64,
    rows: Vec<ParkedRow>,
    reasons: Vec<ReasonCount>,
    held_keys: Vec<HeldKey>,
}

pub(super) async fn parked(config: &Config, args: &ParkedArgs) -> anyhow::Result<()> {
    // Listing changes nothing: no selector means every parked row.
    let selector = args.selector.selector(true)?;
    let ops = selector::connect(config).await?;
    let (rows, total) = ops.list(&selector, args.limit).await?;
    let reasons = ops.counts_by_reason(&selector).await?;
    let held_keys = ops.held_keys(&selector, args.limit).await?;
    let listing = Listing {
        total,
        rows,
        reasons,
        held_keys,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else if listing.total == 0 {
        println!("no parked row matches");
    } else {
        print!("{}", render(&listing));
    }
    Ok(())
}

fn render(l: &Listing) -> String {
    let mut out = format!(
        "parked rows matching: {} (showing {}, oldest first)\n",
        l.total,
        l.rows.len()
    );
    let mut table = vec![[
        "ID",
        "EVENT_ID",
        "TOPIC",
        "KEY",
        "ATTEMPTS",
        "HOLDS_KEY",
        "REPLAYS",
        "CREATED_AT",
        "LAST_ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for r in &l.rows {
        table.push(vec![
            r.id.to_string(),
            r.event_id.to_string(),
            r.topic.clone(),
            r.key.clone().unwrap_or_else(|| "-".into()),
            r.attempts.to_string(),
            if r.holds_key { "yes" } else { "no" }.into(),
            r.replay_count.to_string(),
            r.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            one_line(r.last_error.as_deref().unwrap_or("-"), 80),
        ]);
    }
    out.push_str(&columns(&table));

    out.push_str("\nby reason:\n");
    let mut table = vec![["ROWS", "FIRST..LAST_ID", "REASON"]
        .map(String::from)
        .to_vec()];
    for r in &l.reasons {
        let ids = if r.first_id == r.last_id {
            r.first_id.to_string()
        } else {
            format!("{}..{}", r.first_id, r.last_id)
        };
        table.push(vec![r.rows.to_string(), ids, one_line(&r.reason, 120)]);
    }
    out.push_str(&columns(&table));

    if l.held_keys.is_empty() {
        out.push_str("\nheld keys: none\n");
    } else {
        out.push_str("\nheld keys (later rows of these keys wait for release-key or skip-key):\n");
        let mut table = vec![["TOPIC", "KEY", "HOLDING_IDS", "WAITING"]
            .map(String::from)
            .to_vec()];
        for h in &l.held_keys {
            table.push(vec![
                h.topic.clone(),
                h.key.clone(),
                id_list(&h.holding_ids),
                h.waiting.to_string(),
            ]);
        }
        out.push_str(&columns(&table));
    }
    out
}

/// Left-aligned columns, two spaces apart, indented by two.
pub(super) fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (cell, width) in row.iter().zip(&widths) {
            line.push(' ');
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 1));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Newlines flattened, cut at `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        flat.chars().take(max - 1).chain(['…']).collect()
    } else {
        flat
    }
}
