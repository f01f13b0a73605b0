//! What the box can physically do, measured in the same run: the relay's SQL without Kafka
//! (its claim + its completion statement, in both `relay.on_delivered` modes: mark, and
//! delete-and-log), and Kafka's own producer-perf tool.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use outbox_relay::config::{OnDelivered, DEFAULT_BATCH_SIZE};
use outbox_relay::outbox::{Outbox, RELAY_SESSION};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::workload::{payload_expr, Target};
use crate::{say, Common, Figure, Outcome};

/// Claim (the relay's own statement) + complete in batches on one connection, until empty.
async fn sql_rate(
    common: &Common,
    run: &str,
    name: &str,
    batch: u32,
    mode: OnDelivered,
) -> anyhow::Result<f64> {
    let target = Target::create(common, run, name, false, &[]).await?;
    let rows = common.sql_ceiling_rows;
    say(format!(
        "ceiling: SQL claim + {} (batch {batch}): prefilling {rows} rows",
        mode_name(mode)
    ));
    target.prefill(rows).await?;
    // The relay's own session settings (no JIT, asynchronous commit), on one connection.
    let options = common
        .database_url
        .parse::<PgConnectOptions>()?
        .options(RELAY_SESSION.iter().copied());
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let outbox = Outbox::with_pool(pool, target.table.clone()).on_delivered(mode);
    let complete = outbox.completion_sql().to_owned();
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        let mut tx = outbox.begin().await?;
        let claimed = outbox.claim(&mut tx, batch, &[]).await?.rows;
        if claimed.is_empty() {
            tx.commit().await?;
            break;
        }
        let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
        let parts: Vec<i32> = ids
            .iter()
            .map(|i| (i % i64::from(common.partitions)) as i32)
            .collect();
        let n = sqlx::query(&complete)
            .bind(&ids)
            .bind(parts)
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        done += n;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    if done != rows {
        bail!("SQL ceiling completed {done} of {rows} rows");
    }
    common.cleanup(target).await;
    Ok(rate)
}

/// `org.apache.kafka.tools.ProducerPerformance` with the relay's producer settings, on records
/// of the bench's own payloads (no key).
async fn producer_perf(common: &Common, run: &str) -> anyhow::Result<(f64, String)> {
    let topic = format!("{run}.perf");
    crate::workload::create_topic(&common.bootstrap, &topic, common.partitions, &[]).await?;
    let pool = sqlx::PgPool::connect(&common.database_url).await?;
    let payloads: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT ({})::text FROM generate_series(1, 1000) AS i",
        payload_expr(common.event_size)
    ))
    .fetch_all(&pool)
    .await?;
    let dir = common.log_dir();
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{run}-payloads.txt"));
    std::fs::write(&file, payloads.join("\n"))?;
    say(format!(
        "ceiling: Kafka ProducerPerformance, {} records (it times its sends, not the JVM start)",
        common.perf_records
    ));
    let stack = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack");
    let out = tokio::task::spawn_blocking({
        let (file, topic, bootstrap, n) = (
            file.clone(),
            topic.clone(),
            common.bootstrap.clone(),
            common.perf_records,
        );
        move || {
            Command::new(stack)
                .args([
                    "kafka-java",
                    "org.apache.kafka.tools.ProducerPerformance",
                    "--topic",
                    &topic,
                ])
                .args([
                    "--num-records",
                    &n.to_string(),
                    "--throughput",
                    "-1",
                    "--payload-file",
                ])
                .arg(&file)
                .args([
                    "--producer-props",
                    &format!("bootstrap.servers={bootstrap}"),
                ])
                .args([
                    "acks=all",
                    "enable.idempotence=true",
                    "compression.type=lz4",
                    "linger.ms=5",
                ])
                .output()
        }
    })
    .await??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_file(&file);
    crate::workload::delete_topic(&common.bootstrap, &topic, common.keep).await;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("records/sec"))
        .with_context(|| {
            format!(
                "ProducerPerformance printed no summary:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?
        .to_owned();
    let rate: f64 = line
        .split(',')
        .nth(1)
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read the rate in {line:?}"))?;
    Ok((rate, line))
}

pub(crate) async fn ceilings(common: &Common, run: &str) -> anyhow::Result<Outcome> {
    let batch = common.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    let mark = sql_rate(common, run, "sqlmark", batch, OnDelivered::Mark).await?;
    let delete = sql_rate(common, run, "sqldelete", batch, OnDelivered::Delete).await?;
    let (sql, other) = match common.on_delivered {
        OnDelivered::Mark => (mark, delete),
        OnDelivered::Delete => (delete, mark),
    };
    let (perf, line) = producer_perf(common, run).await?;
    let figures = vec![
        Figure::new(
            &format!(
                "ceiling SQL claim + {} (batch {batch})",
                mode_name(common.on_delivered)
            ),
            sql,
            "rows/s",
        ),
        Figure::new(
            &format!(
                "reference SQL claim + {} (batch {batch})",
                mode_name(match common.on_delivered {
                    OnDelivered::Mark => OnDelivered::Delete,
                    OnDelivered::Delete => OnDelivered::Mark,
                })
            ),
            other,
            "rows/s",
        ),
        Figure::new(
            "ceiling Kafka producer-perf (acks=all, idempotent, lz4)",
            perf,
            "rec/s",
        ),
    ];
    let extra = json!({
        "sql_rows": common.sql_ceiling_rows, "sql_batch": batch, "sql_lanes": 1,
        "perf_records": common.perf_records, "perf_summary": line,
        "lower": sql.min(perf),
    });
    Ok(Outcome::new("ceilings", figures, None, extra))
}

/// `mark`, or `delete + log`: the relay's completion statement in that mode.
fn mode_name(mode: OnDelivered) -> &'static str {
    match mode {
        OnDelivered::Mark => "mark",
        OnDelivered::Delete => "delete + log",
    }
}
