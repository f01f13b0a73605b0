//! Retention: delivered rows older than `retention.delivered_after` are deleted by one relay at
//! a time; pending and parked rows, and rows delivered recently, stay.

use std::time::{Duration, Instant};

use crate::harness::{
    http_get, kafka_bootstrap, log_dir, parse_scrape, wait_until, RelayProcess, TestOutbox,
};

const RETENTION: &str =
    "[retention]\ndelivered_after = \"7d\"\nbatch_size = 3\ninterval_ms = 300\n";

/// Inserts a row as it would be after its life: `status`, created and (for delivered rows)
/// delivered that many days ago, due `due_in_s` from now. Returns its id.
async fn aged_row(
    outbox: &TestOutbox,
    status: &str,
    created_days_ago: i32,
    delivered_days_ago: Option<i32>,
    due_in_s: i32,
) -> i64 {
    sqlx::query_scalar(&format!(
        "INSERT INTO {} (topic, key, payload, status, created_at, delivered_at, attempts, \
                         next_attempt_at, kafka_partition, kafka_offset) \
         VALUES ($1, 'aged', '{{}}', $2, now() - make_interval(days => $3), \
                 now() - make_interval(days => $4), CASE WHEN $5 > 0 THEN 1 ELSE 0 END, \
                 now() + make_interval(secs => $5), \
                 CASE WHEN $2 = 'delivered' THEN 0 END, CASE WHEN $2 = 'delivered' THEN 0 END) \
         RETURNING id",
        outbox.table()
    ))
    .bind(&outbox.topic)
    .bind(status)
    .bind(created_days_ago)
    .bind(delivered_days_ago)
    .bind(due_in_s)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

async fn exists(outbox: &TestOutbox, id: i64) -> bool {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1)",
        outbox.table()
    ))
    .bind(id)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

async fn scraped(address: &str, name: &str) -> f64 {
    let (_, text) = http_get(address, "/metrics").await;
    parse_scrape(&text).get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_delivered_rows_delivered_before_the_cutoff() {
    let outbox = TestOutbox::without_kafka().await;
    let mut old = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..4 {
        old.push(aged_row(&outbox, "delivered", 9, Some(8), 0).await);
        old.push(aged_row(&outbox, "delivered", 9, Some(8), 0).await);
        // Stepped over: parked, pending (backing off, so the relay leaves it alone), and a row
        // created long ago but delivered yesterday (a late replay): its delivery is recent.
        kept.push(aged_row(&outbox, "parked", 9, None, 0).await);
        kept.push(aged_row(&outbox, "pending", 9, None, 3_600).await);
        kept.push(aged_row(&outbox, "delivered", 9, Some(1), 0).await);
    }
    // The last old row: once it is gone, the pass went past every row above.
    let last = aged_row(&outbox, "delivered", 9, Some(8), 0).await;
    old.push(last);
    // A row created (and delivered) today ends the pass: nothing after it can be old.
    kept.push(aged_row(&outbox, "delivered", 0, Some(0), 0).await);
    let dir = log_dir("retention_only_old_delivered");
    let config = outbox.config_file_in(&dir, "relay", &kafka_bootstrap(), RETENTION);
    let mut relay = RelayProcess::spawn(&config, dir.join("relay.log"));
    let address = relay.http_address().await;
    wait_until(
        Duration::from_secs(60),
        "the last old delivered row deleted",
        || async { !exists(&outbox, last).await },
    )
    .await;
    for id in &old {
        assert!(!exists(&outbox, *id).await, "old delivered row {id} left");
    }
    for id in &kept {
        assert!(
            exists(&outbox, *id).await,
            "row {id} deleted: {:?}",
            outbox.row(*id).await
        );
    }
    let deleted = scraped(&address, "outbox_relay_retention_deleted_rows_total").await;
    assert_eq!(deleted, old.len() as f64, "the deletes show in the metrics");
    assert_eq!(
        scraped(&address, "outbox_relay_retention_leader").await,
        1.0
    );
    relay.assert_running();
}

/// Relays holding the retention lock, as Postgres sees them.
async fn lock_holders(outbox: &TestOutbox) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted \
           AND (l.classid::bigint << 32 | l.objid::bigint) \
               = (hashtextextended($1, 0) & x'ffffffffffffffff'::bigint)",
    )
    .bind(format!(
        "outbox-relay retention {}",
        outbox.table_name().qualified()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_clean_at_once_and_the_other_takes_over_when_the_cleaner_dies() {
    let outbox = TestOutbox::without_kafka().await;
    for _ in 0..20 {
        aged_row(&outbox, "delivered", 9, Some(8), 0).await;
    }
    let dir = log_dir("retention_two_relays");
    let config = outbox.config_file_in(&dir, "relay", &kafka_bootstrap(), RETENTION);
    let mut a = RelayProcess::spawn(&config, dir.join("a.log"));
    let mut b = RelayProcess::spawn(&config, dir.join("b.log"));
    let (addr_a, addr_b) = (a.http_address().await, b.http_address().await);
    wait_until(Duration::from_secs(60), "the old rows deleted", || async {
        outbox.count("delivered").await == 0
    })
    .await;
    // For a while: one cleaner, as the relays and Postgres see it.
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let leaders = scraped(&addr_a, "outbox_relay_retention_leader").await
            + scraped(&addr_b, "outbox_relay_retention_leader").await;
        assert_eq!(leaders, 1.0, "exactly one relay cleans");
        assert_eq!(lock_holders(&outbox).await, 1, "one session holds the lock");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted_a = scraped(&addr_a, "outbox_relay_retention_deleted_rows_total").await;
    let deleted_b = scraped(&addr_b, "outbox_relay_retention_deleted_rows_total").await;
    println!("{samples} samples; deleted by a: {deleted_a}, by b: {deleted_b}");
    assert_eq!(deleted_a + deleted_b, 20.0);
    assert!(
        deleted_a == 0.0 || deleted_b == 0.0,
        "only the leader deleted"
    );

    // The cleaner dies: the other takes the lock and cleans the next old rows.
    let (leader, survivor) = if deleted_a > 0.0 {
        (&mut a, &addr_b)
    } else {
        (&mut b, &addr_a)
    };
    leader.kill();
    for _ in 0..5 {
        aged_row(&outbox, "delivered", 9, Some(8), 0).await;
    }
    wait_until(Duration::from_secs(60), "the survivor cleaning", || async {
        outbox.count("delivered").await == 0
    })
    .await;
    assert_eq!(
        scraped(survivor, "outbox_relay_retention_leader").await,
        1.0
    );
    assert_eq!(
        scraped(survivor, "outbox_relay_retention_deleted_rows_total").await,
        5.0
    );
}
