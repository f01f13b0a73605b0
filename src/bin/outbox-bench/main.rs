//! `outbox-bench`: the relay end to end on the local stack (`scripts/stack up`), with the
//! ceilings of the same box measured in the same run. Not a test: it prints figures.
//!
//! - [`scenarios`] — `drain`, `sustained`, `latency`, each ending with the order checker;
//! - [`ceilings`] — the relay's SQL without Kafka, and Kafka's own producer-perf tool;
//! - [`workload`] — bench tables and topics, generated rows, the relay as child processes.
//!
//! The relay runs as child processes (`outbox-relay run` on a generated config file), so its
//! CPU time and peak RSS are its own. Exit codes: 0 clean; 1 the order check found a lost or
//! reordered record; 2 usage; 3 the bench could not run.

mod ceilings;
mod scenarios;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outbox_relay::order_check::OrderReport;
use serde_json::{json, Value};

use crate::scenarios::WriterArgs;
use crate::workload::Target;

#[derive(Debug, Parser)]
#[command(
    name = "outbox-bench",
    about = "End-to-end benchmark of outbox-relay on the local stack"
)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Knobs shared by every scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    #[arg(
        long,
        global = true,
        env = "OUTBOX_BENCH_DATABASE_URL",
        default_value = "postgres://outbox:outbox@127.0.0.1:5432/outbox"
    )]
    pub database_url: String,
    #[arg(
        long,
        global = true,
        env = "OUTBOX_BENCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Approximate payload size (JSON text), bytes.
    #[arg(long, global = true, default_value_t = 500)]
    pub event_size: usize,
    /// Distinct keys: a number, or `none` (rows without a key).
    #[arg(long, global = true, default_value = "1000", value_parser = parse_keys)]
    pub keys: Keys,
    /// Partitions of each bench topic.
    #[arg(long, global = true, default_value_t = 6)]
    pub partitions: i32,
    /// Relay instances (processes) on the same table.
    #[arg(long, global = true, default_value_t = 1)]
    pub relays: u32,
    /// `relay.batch_size` (default: the relay's own, 2000).
    #[arg(long, global = true)]
    pub batch_size: Option<u32>,
    /// `relay.concurrency` (default: the relay's own, 4).
    #[arg(long, global = true)]
    pub concurrency: Option<u32>,
    /// Value format: `raw-json` (the default) or `avro` (through the Schema Registry test
    /// double, started per scenario; built by `scripts/bench`).
    #[arg(long, global = true, value_parser = ["raw-json", "avro"], default_value = "raw-json")]
    pub format: String,
    /// `relay.on_delivered`: `mark` (the default) or `delete` (delete and log).
    #[arg(long, global = true, value_parser = parse_on_delivered, default_value = "mark")]
    pub on_delivered: outbox_relay::config::OnDelivered,
    /// The relay binary (default: `outbox-relay` next to this one).
    #[arg(long, global = true)]
    pub relay_bin: Option<PathBuf>,
    /// Where the JSON results go (default: target/bench/<scenario>-<UTC time>.json).
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Skip the ceilings (figures are then printed without ratios).
    #[arg(long, global = true)]
    pub no_ceilings: bool,
    /// Keep the bench schemas and topics instead of dropping them.
    #[arg(long, global = true)]
    pub keep: bool,
    /// Rows of each SQL ceiling run.
    #[arg(long, global = true, default_value_t = 100_000)]
    pub sql_ceiling_rows: u64,
    /// Records sent by Kafka's producer-perf tool.
    #[arg(long, global = true, default_value_t = 300_000)]
    pub perf_records: u64,
}

/// Key cardinality: `None` = rows without a key.
#[derive(Debug, Clone, Copy)]
pub struct Keys(pub Option<u64>);

fn parse_keys(s: &str) -> Result<Keys, String> {
    match s {
        "none" => Ok(Keys(None)),
        n => match n.parse::<u64>() {
            Ok(k) if k > 0 => Ok(Keys(Some(k))),
            _ => Err(format!("{n:?}: a positive number of keys, or `none`")),
        },
    }
}

impl Common {
    pub fn relay_bin(&self) -> PathBuf {
        self.relay_bin.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("outbox-relay")))
                .unwrap_or_else(|| PathBuf::from("outbox-relay"))
        })
    }

    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from("target/bench/logs")
    }

    pub(crate) async fn cleanup(&self, target: Target) {
        if !self.keep {
            target.drop(&self.bootstrap).await;
        }
    }
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// The default suite, in a few minutes: drain 200,000 rows, sustained 30 s, latency 20 s,
    /// both ceilings.
    Suite,
    /// Prefill a backlog, start the relay, events/s until no row is pending.
    Drain {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Writers insert while the relay runs: delivered events/s over a steady window.
    Sustained(WriterArgs),
    /// Single-row transactions at a fixed rate (`--rate`, default 1000): latency quantiles.
    Latency(WriterArgs),
    /// Only the ceilings.
    Ceilings,
}

/// One line of the table.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// A throughput, shown as a ratio of the lower ceiling.
    pub throughput: bool,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            throughput: false,
        }
    }
    pub fn rate(name: &str, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            unit: "events/s",
            throughput: true,
        }
    }
}

pub struct Outcome {
    scenario: &'static str,
    figures: Vec<Figure>,
    order: Option<OrderReport>,
    extra: Value,
}

impl Outcome {
    pub fn new(
        scenario: &'static str,
        figures: Vec<Figure>,
        order: Option<OrderReport>,
        extra: Value,
    ) -> Self {
        Self {
            scenario,
            figures,
            order,
            extra,
        }
    }
}

pub fn say(what: impl AsRef<str>) {
    eprintln!("[bench] {}", what.as_ref());
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> Value {
    let meminfo = read("/proc/meminfo");
    let mem = |k: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| (kb / 1024.0).round())
    };
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "mem_total_mib": mem("MemTotal:"),
        "mem_available_mib": mem("MemAvailable:"),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg": read("/proc/loadavg").trim(),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("[bench] error: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// Runs the scenarios; false if an order check failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let common = &args.common;
    let started = chrono::Utc::now();
    let run = format!("bench_{}", started.format("%Y%m%d%H%M%S"));
    let machine_start = machine();
    say(format!(
        "run {run}; relay binary {}; load average {}",
        common.relay_bin().display(),
        machine_start["loadavg"]
    ));
    let mut outcomes = Vec::new();
    let default_writers = |rate: u64, duration: u64, writers: u64, txn_rows: u64| WriterArgs {
        writers,
        txn_rows,
        rate,
        duration,
        warmup: 5,
    };
    let name = match &args.scenario {
        Scenario::Suite => {
            outcomes.push(scenarios::drain(common, &run, 200_000).await?);
            outcomes
                .push(scenarios::sustained(common, &run, &default_writers(0, 30, 4, 100)).await?);
            outcomes
                .push(scenarios::latency(common, &run, &default_writers(1000, 20, 8, 1)).await?);
            "suite"
        }
        Scenario::Drain { rows } => {
            outcomes.push(scenarios::drain(common, &run, *rows).await?);
            "drain"
        }
        Scenario::Sustained(w) => {
            outcomes.push(scenarios::sustained(common, &run, w).await?);
            "sustained"
        }
        Scenario::Latency(w) => {
            outcomes.push(scenarios::latency(common, &run, w).await?);
            "latency"
        }
        Scenario::Ceilings => "ceilings",
    };
    let mut lower = None;
    if !common.no_ceilings || matches!(args.scenario, Scenario::Ceilings) {
        let c = ceilings::ceilings(common, &run).await?;
        lower = c.extra["lower"].as_f64();
        outcomes.push(c);
    }

    // The table.
    println!();
    println!(
        "outbox-relay bench {run}: {} keys, {} B events, {} partitions, {} relay(s), {}, on_delivered {}",
        common.keys.0.map_or("no".into(), |k| k.to_string()),
        common.event_size,
        common.partitions,
        common.relays,
        common.format,
        format!("{:?}", common.on_delivered).to_lowercase(),
    );
    println!(
        "{:<58} {:>12} {:<9} {:>8}",
        "figure", "value", "unit", "ceiling"
    );
    let mut clean = true;
    let mut results = Vec::new();
    for o in &outcomes {
        let mut figures = serde_json::Map::new();
        for f in &o.figures {
            let ratio = lower.filter(|_| f.throughput).map(|l| f.value / l);
            let shown = ratio.map_or(String::new(), |r| format!("{:.0} %", r * 100.0));
            println!(
                "{:<58} {:>12.1} {:<9} {:>8}",
                f.name, f.value, f.unit, shown
            );
            figures.insert(
                f.name.clone(),
                json!({ "value": f.value, "unit": f.unit, "ratio_to_lower_ceiling": ratio }),
            );
        }
        if let Some(r) = &o.order {
            println!(
                "{:<58} {:>12}  lost {}, duplicated {}, reordered {}, pending {}",
                format!("{} order check", o.scenario),
                if r.is_ok() { "OK" } else { "FAILED" },
                r.lost,
                r.duplicates,
                r.reordered,
                r.pending
            );
            clean &= r.is_ok();
        }
        results.push(json!({ "scenario": o.scenario, "figures": figures, "order_check": o.order, "details": o.extra }));
    }
    if let Some(l) = lower {
        println!("ceiling = the lower of the two ceilings: {l:.0}/s");
    }
    let doc = json!({
        "run": run,
        "started_at": started.to_rfc3339(),
        "command_line": std::env::args().collect::<Vec<_>>(),
        "machine_at_start": machine_start,
        "machine_at_end": machine(),
        "knobs": {
            "event_size": common.event_size, "keys": common.keys.0, "partitions": common.partitions,
            "relays": common.relays, "batch_size": common.batch_size, "concurrency": common.concurrency,
            "on_delivered": format!("{:?}", common.on_delivered).to_lowercase(),
            "format": common.format,
        },
        "lower_ceiling": lower,
        "results": results,
        "order_check_clean": clean,
    });
    let path = common.json.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "target/bench/{name}-{}.json",
            started.format("%Y%m%dT%H%M%SZ")
        ))
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    println!("results: {}", path.display());
    if !clean {
        say("an order check found a lost or reordered record: exit 1");
    }
    Ok(clean)
}

fn parse_on_delivered(s: &str) -> Result<outbox_relay::config::OnDelivered, String> {
    match s {
        "mark" => Ok(outbox_relay::config::OnDelivered::Mark),
        "delete" => Ok(outbox_relay::config::OnDelivered::Delete),
        _ => Err(format!("{s:?}: expected mark or delete")),
    }
}
