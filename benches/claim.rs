//! Cost of the relay's claim on a large outbox: 1,000,000 rows, of which 900,000 delivered and
//! 100,000 pending over 500 keys, with a few parked rows holding their keys and a few rows
//! backing off after a failure (both make the claim skip their keys).
//!
//! Prints `EXPLAIN (ANALYZE, BUFFERS)` of the relay's own claim statement (batch 500), once as
//! a custom plan and once as the generic plan a prepared statement may switch to, then times 20
//! claims. Every claim runs in a transaction that is rolled back, so each one sees the same
//! table. The bench's schema is dropped at the end.
//!
//! Run: `cargo bench --bench claim` (Postgres from `scripts/stack up`, or
//! `OUTBOX_TEST_DATABASE_URL`).

use std::time::{Duration, Instant};

use outbox_relay::outbox::{migrate, Outbox, TableName};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

const DELIVERED: i64 = 900_000;
const PENDING: i64 = 100_000;
const KEYS: i64 = 500;
/// Keys held by a parked row, and keys whose oldest pending row backs off.
const HELD_KEYS: i64 = 5;
const BACKING_OFF_KEYS: i64 = 5;
const BATCH: u32 = 500;
const RUNS: usize = 20;

fn main() {
    // `cargo test --all-targets` runs bench targets too: build a million rows only for `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("claim bench: skipped (run it with `cargo bench --bench claim`)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = std::env::var("OUTBOX_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://outbox:outbox@127.0.0.1:5432/outbox".into());
        let schema = format!(
            "bench_claim_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let table = TableName::new(&schema, "outbox").unwrap();
        migrate(&url, &table).await.expect("migrate");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to Postgres (scripts/stack up)");
        let result = tokio::spawn(run(pool.clone(), table)).await;
        pool.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
            .await
            .expect("drop the bench schema");
        println!("schema {schema} dropped");
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}

async fn run(pool: PgPool, table: TableName) {
    let t = table.qualified();
    let filled = Instant::now();
    // Delivered history first (lowest ids), then the blockers, then the pending backlog.
    pool.execute(
        format!(
            "INSERT INTO {t} (topic, key, payload, status, delivered_at, kafka_partition, \
                              kafka_offset, created_at) \
             SELECT 'bench', 'k' || (i % {KEYS}), jsonb_build_object('n', i, 'kind', 'history'), \
                    'delivered', now(), (i % 6)::int, i, now() - interval '1 day' \
             FROM generate_series(1, {DELIVERED}) AS i"
        )
        .as_str(),
    )
    .await
    .unwrap();
    pool.execute(
        format!(
            "INSERT INTO {t} (topic, key, payload, status, attempts, last_error, holds_key) \
             SELECT 'bench', 'k' || i, '{{\"kind\": \"poison\"}}', 'parked', 1, \
                    'serialization: bench', true \
             FROM generate_series(0, {HELD_KEYS} - 1) AS i"
        )
        .as_str(),
    )
    .await
    .unwrap();
    pool.execute(
        format!(
            "INSERT INTO {t} (topic, key, payload, attempts, next_attempt_at, last_error) \
             SELECT 'bench', 'k' || i, '{{\"kind\": \"retrying\"}}', 3, now() + interval '1 hour', \
                    'kafka: bench timeout' \
             FROM generate_series({HELD_KEYS}, {HELD_KEYS} + {BACKING_OFF_KEYS} - 1) AS i"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let backlog = PENDING - BACKING_OFF_KEYS;
    pool.execute(
        format!(
            "INSERT INTO {t} (topic, key, payload) \
             SELECT 'bench', 'k' || (i % {KEYS}), jsonb_build_object('n', i, 'kind', 'new') \
             FROM generate_series(1, {backlog}) AS i"
        )
        .as_str(),
    )
    .await
    .unwrap();
    pool.execute(format!("VACUUM ANALYZE {t}").as_str())
        .await
        .unwrap();
    let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT status, count(*) FROM {t} GROUP BY status ORDER BY status"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let size: String = sqlx::query_scalar(&format!(
        "SELECT pg_size_pretty(pg_total_relation_size('{t}'))"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    println!(
        "outbox {t}: {counts:?}, {HELD_KEYS} keys held by parked rows, {BACKING_OFF_KEYS} keys \
         backing off; {size} with indexes; filled in {:?}",
        filled.elapsed()
    );

    let outbox = Outbox::with_pool(pool.clone(), table);
    for (label, mode) in [
        (
            "custom plan (what the first executions of a prepared statement use)",
            "auto",
        ),
        (
            "generic plan (what a prepared statement may switch to)",
            "force_generic_plan",
        ),
    ] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!("SET LOCAL plan_cache_mode = {mode}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS) {}",
            outbox.claim_sql()
        ))
        .bind(i64::from(BATCH))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        println!("\n== EXPLAIN (ANALYZE, BUFFERS) of the claim, batch {BATCH}, {label}:");
        for line in plan {
            println!("{line}");
        }
    }

    // The relay's path: the same prepared statement (sqlx caches it per connection), each
    // claim in its own transaction, rolled back.
    let mut took = Vec::with_capacity(RUNS);
    let mut claimed = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut tx = outbox.begin().await.unwrap();
        let start = Instant::now();
        let rows = outbox.claim(&mut tx, BATCH, &[]).await.unwrap().rows;
        took.push(start.elapsed());
        claimed.push(rows.len());
        tx.rollback().await.unwrap();
    }
    took.sort();
    let median = (took[RUNS / 2 - 1] + took[RUNS / 2]) / 2;
    let max = *took.last().unwrap();
    let min = took[0];
    println!(
        "\n{RUNS} claims of batch {BATCH} (rolled back): median {}, min {}, max {}; rows per \
         claim {}..={}",
        ms(median),
        ms(min),
        ms(max),
        claimed.iter().min().unwrap(),
        claimed.iter().max().unwrap(),
    );
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
