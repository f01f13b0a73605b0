//! The three relay scenarios: drain a backlog, sustain writers, latency at a fixed rate.
//! Each one ends with the order checker on its topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use outbox_relay::order_check;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use uuid::Uuid;

use crate::workload::{Relays, Target};
use crate::{say, Common, Figure, Outcome};

fn secs_between(a: SystemTime, b: DateTime<Utc>) -> f64 {
    (b - DateTime::<Utc>::from(a))
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6
}

async fn order(common: &Common, target: &Target) -> anyhow::Result<order_check::OrderReport> {
    say(format!("order check of {}", target.topic));
    Ok(order_check::check(
        &target.pool,
        &target.table,
        &common.bootstrap,
        &target.topic,
    )
    .await?)
}

fn resources(figures: &mut Vec<Figure>, relays: &Relays, cpu: f64, events: f64) {
    figures.push(Figure::new(
        "relay CPU per event",
        cpu / events.max(1.0) * 1e6,
        "µs",
    ));
    let rss = relays.peak_rss_mib();
    let peak = rss.iter().copied().fold(0.0, f64::max);
    figures.push(Figure::new(
        "relay peak RSS (largest instance)",
        peak,
        "MiB",
    ));
}

/// Prefill `rows`, start the relay, wait until no row is pending.
pub(crate) async fn drain(common: &Common, run: &str, rows: u64) -> anyhow::Result<Outcome> {
    let target = Target::create(common, run, "drain", true, &[]).await?;
    say(format!(
        "drain: prefilling {rows} rows into {}",
        target.table.qualified()
    ));
    let took = target.prefill(rows).await?;
    say(format!(
        "drain: prefilled in {:.1} s (not timed); starting {} relay(s)",
        took.as_secs_f64(),
        common.relays
    ));
    let mut relays = Relays::start(common, &target, &common.log_dir())?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_say = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        relays.check_alive()?;
        let pending = target.pending().await?;
        if pending == 0 {
            break;
        }
        if last_say.elapsed() > Duration::from_secs(2) {
            say(format!("drain: {pending} pending"));
            last_say = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("drain: {pending} rows still pending after 30 minutes");
        }
    }
    let cpu = relays.cpu_seconds();
    let (first, last, delivered): (Option<DateTime<Utc>>, Option<DateTime<Utc>>, i64) =
        sqlx::query_as(&format!(
            "SELECT min(delivered_at), max(delivered_at), count(*) FROM {}",
            target.delivered()
        ))
        .fetch_one(&target.pool)
        .await?;
    let (first, last) = (
        first.context("nothing delivered")?,
        last.context("nothing delivered")?,
    );
    let wall = secs_between(relays.started, last);
    let mut figures = vec![
        Figure::rate(
            "drain events/s (relay start → last mark)",
            rows as f64 / wall,
        ),
        Figure::rate(
            "drain events/s (first → last mark)",
            rows as f64 / ((last - first).num_microseconds().unwrap_or(1) as f64 / 1e6).max(1e-3),
        ),
        Figure::new("drain time", wall, "s"),
    ];
    resources(&mut figures, &relays, cpu, delivered as f64);
    figures.extend(relays.batch_figures(wall).await);
    relays.stop()?;
    let report = order(common, &target).await?;
    let extra = json!({ "rows": rows, "delivered": delivered, "prefill_s": took.as_secs_f64() });
    common.cleanup(target).await;
    Ok(Outcome::new("drain", figures, Some(report), extra))
}

/// Knobs of the writers.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WriterArgs {
    /// Writer tasks, each with its own connection.
    #[arg(long, default_value_t = 4)]
    pub(crate) writers: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 100)]
    pub(crate) txn_rows: u64,
    /// Target rows/s over all writers; 0 = as fast as they can.
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) warmup: u64,
}

/// The writer tasks of [`sustained`]: `w.writers` lanes inserting `w.txn_rows`-row
/// transactions into `target` until `stop`.
struct Writers {
    committed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Writers {
    fn start(target: &Arc<Target>, w: &WriterArgs) -> Self {
        let next = Arc::new(AtomicU64::new(1));
        let committed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let lanes = w.writers;
        let tasks = (0..lanes)
            .map(|lane| {
                let (target, next, committed, stop) = (
                    target.clone(),
                    next.clone(),
                    committed.clone(),
                    stop.clone(),
                );
                let n = w.txn_rows;
                let period = (w.rate > 0)
                    .then(|| Duration::from_secs_f64(n as f64 * w.writers as f64 / w.rate as f64));
                tokio::spawn(async move {
                    let mut tick = period.map(tokio::time::interval);
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(t) = tick.as_mut() {
                            t.tick().await;
                        }
                        let first = next.fetch_add(n, Ordering::Relaxed);
                        target
                            .insert_lane(first, first + n - 1, lanes, lane)
                            .await?;
                        committed.fetch_add(n, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        Self {
            committed,
            stop,
            tasks,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}

/// The same writers on a table of their own with no relay running: what they can insert on this
/// box (the ceiling of a sustained run, whose writers share the box with the relay, Postgres's
/// claims and Kafka). Warm-up, then `seconds` measured.
async fn writers_alone(
    common: &Common,
    run: &str,
    w: &WriterArgs,
    seconds: u64,
) -> anyhow::Result<f64> {
    let target = Arc::new(Target::create(common, run, "writers", false, &[]).await?);
    say(format!(
        "ceiling: the sustained writers alone (no relay), {} s",
        w.warmup + seconds
    ));
    let writers = Writers::start(&target, w);
    tokio::time::sleep(Duration::from_secs(w.warmup)).await;
    let (c0, t0) = (writers.committed(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (writers.committed() - c0) as f64 / t0.elapsed().as_secs_f64();
    writers.stop().await?;
    let target = Arc::into_inner(target).context("writers still hold the target")?;
    common.cleanup(target).await;
    Ok(rate)
}

/// Writers insert while the relay runs.
pub(crate) async fn sustained(
    common: &Common,
    run: &str,
    w: &WriterArgs,
) -> anyhow::Result<Outcome> {
    if let Some(keys) = common.keys.0 {
        if keys % w.writers != 0 {
            say(format!(
                "sustained: warning: {keys} keys over {} writers: writers share keys, and rows of \
                 one key from concurrent transactions commit in an order their ids do not show \
                 (the order check may report it)",
                w.writers
            ));
        }
    }
    let alone = if common.no_ceilings {
        None
    } else {
        Some(writers_alone(common, run, w, w.duration.min(10)).await?)
    };
    let target = Arc::new(Target::create(common, run, "sustained", true, &[]).await?);
    let mut relays = Relays::start(common, &target, &common.log_dir())?;
    say(format!(
        "sustained: {} writers × {}-row transactions at {}; warm-up {} s, window {} s",
        w.writers,
        w.txn_rows,
        if w.rate == 0 {
            "max rate".to_string()
        } else {
            format!("{} rows/s", w.rate)
        },
        w.warmup,
        w.duration
    ));
    let writers = Writers::start(&target, w);
    tokio::time::sleep(Duration::from_secs(w.warmup)).await;
    relays.check_alive()?;
    let (c0, p0, cpu0, t0) = (
        writers.committed(),
        target.pending().await?,
        relays.cpu_seconds(),
        SystemTime::now(),
    );
    for s in 0..w.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        relays.check_alive()?;
        if s % 5 == 4 {
            say(format!(
                "sustained: {} s, {} rows written",
                s + 1,
                writers.committed() - c0
            ));
        }
    }
    let (c1, p1, cpu1, t1) = (
        writers.committed(),
        target.pending().await?,
        relays.cpu_seconds(),
        SystemTime::now(),
    );
    writers.stop().await?;
    let window = t1.duration_since(t0)?.as_secs_f64();
    let delivered: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE delivered_at >= $1 AND delivered_at < $2",
        target.delivered()
    ))
    .bind(DateTime::<Utc>::from(t0))
    .bind(DateTime::<Utc>::from(t1))
    .fetch_one(&target.pool)
    .await?;
    let written = (c1 - c0) as f64;
    let growth = p1 - p0;
    // Bounded: the backlog grew by less than 2 % of what was written (plus one round of batches).
    let slack = 0.02 * written
        + f64::from(
            common
                .batch_size
                .unwrap_or(outbox_relay::config::DEFAULT_BATCH_SIZE)
                * common.concurrency.unwrap_or(4)
                * common.relays,
        );
    let bounded = (growth as f64) <= slack;
    let mut figures = vec![
        Figure::rate("sustained delivered events/s", delivered as f64 / window),
        Figure::new("sustained writer rows/s", written / window, "rows/s"),
        Figure::new("sustained backlog at window start", p0 as f64, "rows"),
        Figure::new("sustained backlog at window end", p1 as f64, "rows"),
        Figure::new("sustained backlog growth", growth as f64 / window, "rows/s"),
        Figure::new(
            "sustained backlog bounded (1 yes, 0 no)",
            f64::from(u8::from(bounded)),
            "",
        ),
    ];
    if let Some(alone) = alone {
        figures.push(Figure::new(
            "ceiling the same writers alone (no relay)",
            alone,
            "rows/s",
        ));
        figures.push(Figure::new(
            "sustained delivered / writers alone",
            100.0 * delivered as f64 / window / alone,
            "%",
        ));
    }
    resources(&mut figures, &relays, cpu1 - cpu0, delivered as f64);
    say(format!(
        "sustained: stopping the relay ({} rows still pending)",
        target.pending().await?
    ));
    relays.stop()?;
    let mut report = order(common, &target).await?;
    // The writers outran the relay on purpose: the rows still pending are a backlog, not a
    // fault (they are reported as `pending`). Lost, reordered and mismatched still fail.
    report.allow.pending = true;
    let extra = json!({
        "writers": w.writers, "txn_rows": w.txn_rows, "target_rate": w.rate,
        "window_s": window, "delivered_in_window": delivered, "written_in_window": written,
        "backlog_bounded": bounded,
    });
    let target = Arc::into_inner(target).context("writers still hold the target")?;
    common.cleanup(target).await;
    Ok(Outcome::new("sustained", figures, Some(report), extra))
}

/// Single-row transactions at a fixed rate; commit → broker append and commit → mark.
pub(crate) async fn latency(common: &Common, run: &str, w: &WriterArgs) -> anyhow::Result<Outcome> {
    // LogAppendTime: the broker stamps each record when it appends it, which with one in-sync
    // replica is when it acknowledges it to the relay.
    let target = Arc::new(
        Target::create(
            common,
            run,
            "latency",
            true,
            &[("message.timestamp.type", "LogAppendTime")],
        )
        .await?,
    );
    let mut relays = Relays::start(common, &target, &common.log_dir())?;
    let rate = if w.rate == 0 { 1000 } else { w.rate };
    say(format!(
        "latency: {rate} single-row transactions/s from {} writers; warm-up {} s, window {} s",
        w.writers, w.warmup, w.duration
    ));
    let sql = format!("{} RETURNING id, event_id", target.insert_sql);
    let next = Arc::new(AtomicU64::new(1));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..w.writers {
        let (target, next, measuring, stop, sql) = (
            target.clone(),
            next.clone(),
            measuring.clone(),
            stop.clone(),
            sql.clone(),
        );
        let period = Duration::from_secs_f64(w.writers as f64 / rate as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut seen: Vec<(i64, Uuid, SystemTime)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let i = next.fetch_add(1, Ordering::Relaxed) as i64;
                // Row number i alone (the insert's `j * $4 + $5` with stride 1, offset 0).
                let (id, event_id): (i64, Uuid) = sqlx::query_as(&sql)
                    .bind(&target.topic)
                    .bind(i)
                    .bind(i)
                    .bind(1_i64)
                    .bind(0_i64)
                    .fetch_one(&target.pool)
                    .await?;
                let committed = SystemTime::now();
                if measuring.load(Ordering::Relaxed) {
                    seen.push((id, event_id, committed));
                }
            }
            anyhow::Ok(seen)
        }));
    }
    tokio::time::sleep(Duration::from_secs(w.warmup)).await;
    relays.check_alive()?;
    measuring.store(true, Ordering::Relaxed);
    let (cpu0, t0) = (relays.cpu_seconds(), Instant::now());
    for _ in 0..w.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        relays.check_alive()?;
    }
    measuring.store(false, Ordering::Relaxed);
    let (cpu1, window) = (relays.cpu_seconds(), t0.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await??);
    }
    // Wait until every measured row is marked.
    let ids: Vec<i64> = seen.iter().map(|s| s.0).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let marked: Vec<(i64, DateTime<Utc>)> = loop {
        let rows: Vec<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
            "SELECT id, delivered_at FROM {} WHERE id = ANY($1)",
            target.delivered()
        ))
        .bind(&ids)
        .fetch_all(&target.pool)
        .await?;
        if rows.len() == ids.len() && rows.iter().all(|r| r.1.is_some()) {
            break rows
                .into_iter()
                .map(|(id, at)| (id, at.unwrap_or_default()))
                .collect();
        }
        if Instant::now() > deadline {
            bail!("latency: measured rows still pending 60 s after the window");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut figures = Vec::new();
    resources(&mut figures, &relays, cpu1 - cpu0, seen.len() as f64);
    relays.stop()?;

    let commits: HashMap<i64, SystemTime> = seen.iter().map(|s| (s.0, s.2)).collect();
    let mut to_mark: Vec<f64> = marked
        .iter()
        .map(|(id, at)| secs_between(commits[id], *at) * 1e3)
        .collect();
    let appended = {
        let (bootstrap, topic) = (common.bootstrap.clone(), target.topic.clone());
        tokio::task::spawn_blocking(move || append_times(&bootstrap, &topic)).await??
    };
    let mut to_ack: Vec<f64> = seen
        .iter()
        .filter_map(|(_, event_id, committed)| {
            let ms = *appended.get(event_id)?;
            let commit_ms = committed
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()?
                .as_secs_f64()
                * 1e3;
            Some(ms as f64 - commit_ms)
        })
        .collect();
    let mut quantiles = serde_json::Map::new();
    for (label, values) in [("commit→ack", &mut to_ack), ("commit→marked", &mut to_mark)] {
        values.sort_by(f64::total_cmp);
        for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (1.0, "max")] {
            let v = quantile(values, q);
            figures.push(Figure::new(&format!("latency {label} {name}"), v, "ms"));
            quantiles.insert(format!("{label} {name}"), json!(v));
        }
    }
    figures.insert(
        0,
        Figure::new("latency writer rate", seen.len() as f64 / window, "rows/s"),
    );
    let report = order(common, &target).await?;
    let extra = json!({
        "target_rate": rate, "writers": w.writers, "measured_rows": seen.len(),
        "acks_found": to_ack.len(), "window_s": window,
        "ack_clock": "broker LogAppendTime (ms resolution)", "mark_clock": "delivered_at (clock_timestamp() of the mark)",
    });
    let target = Arc::into_inner(target).context("writers still hold the target")?;
    common.cleanup(target).await;
    Ok(Outcome::new("latency", figures, Some(report), extra))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// event_id → broker append time (ms since the epoch) of every record of the topic.
fn append_times(bootstrap: &str, topic: &str) -> anyhow::Result<HashMap<Uuid, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("outbox-bench-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let meta = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in meta.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            remaining.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut out = HashMap::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut idle = Instant::now();
    while !remaining.is_empty() {
        if idle.elapsed() > Duration::from_secs(30) {
            bail!("reading {topic}: no record for 30 s");
        }
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg?;
        idle = Instant::now();
        let id = msg.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "event_id")
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| Uuid::parse_str(s).ok())
        });
        if let (Some(id), Some(ms)) = (id, msg.timestamp().to_millis()) {
            out.entry(id).or_insert(ms);
        }
        if remaining
            .get(&msg.partition())
            .is_some_and(|&high| msg.offset() + 1 >= high)
        {
            remaining.remove(&msg.partition());
        }
    }
    Ok(out)
}
