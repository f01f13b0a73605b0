//! Operators' commands on parked rows, and the order checker, on real Postgres and Kafka.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outbox_relay::order_check;
use outbox_relay::outbox::Selector;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use uuid::Uuid;

use crate::harness::{consume_all, kafka_bootstrap, relay_until_delivered, TestOutbox};

/// Parks one row the way the relay would.
async fn park(outbox: &TestOutbox, id: i64, error: &str, attempts: i32, holds_key: bool) {
    let done = sqlx::query(&format!(
        "UPDATE {} SET status = 'parked', last_error = $2, attempts = $3, holds_key = $4 \
         WHERE id = $1",
        outbox.table()
    ))
    .bind(id)
    .bind(error)
    .bind(attempts)
    .bind(holds_key)
    .execute(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1, "row {id} exists");
}

/// Every column of every row, for "nothing changed" comparisons.
async fn snapshot(outbox: &TestOutbox) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "SELECT row_to_json(o)::text FROM {} o ORDER BY id",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` against this outbox.
fn cli(config: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.arg("--config").arg(config).args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OUTBOX_RELAY")) {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Audit {
    status: String,
    attempts: i32,
    holds_key: bool,
    replay_count: i32,
    replayed: bool,
    due: bool,
    last_error: Option<String>,
    event_id: Uuid,
}

async fn audit(outbox: &TestOutbox, id: i64) -> Audit {
    sqlx::query_as(&format!(
        "SELECT status, attempts, holds_key, replay_count, last_replayed_at IS NOT NULL AS replayed, \
                next_attempt_at <= now() AS due, last_error, event_id \
         FROM {} WHERE id = $1",
        outbox.table()
    ))
    .bind(id)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn replayed_parked_rows_are_delivered_with_the_same_event_id_and_audit_fields() {
    let outbox = TestOutbox::new(2).await;
    outbox.insert_rows(3, 3).await;
    park(&outbox, 2, "Message size too large", 4, true).await;
    let before = audit(&outbox, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");

    let run = cli(&config, &["replay", "--id", "2"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("replayed 1 row"), "{}", run.stdout);
    assert!(run.stdout.contains("ids 2"), "{}", run.stdout);

    let after = audit(&outbox, 2).await;
    assert_eq!(after.status, "pending");
    assert_eq!(after.attempts, 0);
    assert!(!after.holds_key);
    assert_eq!(after.replay_count, 1);
    assert!(after.replayed && after.due);
    assert_eq!(
        after.last_error.as_deref(),
        Some("Message size too large"),
        "the reason stays as history"
    );
    assert_eq!(after.event_id, before.event_id);

    relay_until_delivered(&outbox, 3).await;
    let records = consume_all(&outbox.topic).await;
    let event_id = before.event_id.to_string();
    let copies = records.iter().filter(|r| r.event_id() == event_id).count();
    assert_eq!(copies, 1, "{records:#?}");
    assert_eq!(audit(&outbox, 2).await.replay_count, 1);

    // Replaying again finds nothing parked.
    let run = cli(&config, &["replay", "--id", "2"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("no parked row matches"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn dry_run_replay_changes_nothing() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(6, 2).await;
    park(&outbox, 1, "schema mismatch", 1, true).await;
    park(&outbox, 4, "schema mismatch", 2, false).await;
    let before = snapshot(&outbox).await;
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");

    let topic = outbox.topic.as_str();
    let run = cli(&config, &["replay", "--topic", topic, "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("would replay 2 rows") && run.stdout.contains("ids 1, 4"),
        "{}",
        run.stdout
    );
    let run = cli(
        &config,
        &["release-key", "--topic", topic, "--key", "k1", "--dry-run"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("would release"), "{}", run.stdout);
    let run = cli(
        &config,
        &["skip-key", "--topic", topic, "--key", "k1", "--dry-run"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("would skip"), "{}", run.stdout);

    let ops = outbox.ops();
    let all = Selector::default();
    assert_eq!(ops.replay(&all, true, true).await.unwrap(), vec![1, 4]);
    assert_eq!(
        ops.release_key(topic, "k1", true).await.unwrap().ids,
        vec![1]
    );
    assert_eq!(snapshot(&outbox).await, before, "a dry run wrote something");

    // The real run changes exactly what the dry run announced.
    assert_eq!(ops.replay(&all, true, false).await.unwrap(), vec![1, 4]);
    assert_ne!(snapshot(&outbox).await, before);
}

#[tokio::test]
async fn bad_selectors_exit_non_zero_with_a_clear_message() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(2, 1).await;
    park(&outbox, 1, "boom", 1, false).await;
    let before = snapshot(&outbox).await;
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");

    let cases: &[(&[&str], &str)] = &[
        (&["replay"], "no selector given"),
        (&["replay", "--key", "k0"], "--key needs --topic"),
        (&["parked", "--key", "k0"], "--key needs --topic"),
        (&["replay", "--created-from", "yesterday"], "RFC 3339"),
        (
            &[
                "replay",
                "--created-from",
                "2025-02-01T00:00:00Z",
                "--created-to",
                "2025-01-01T00:00:00Z",
            ],
            "is after --created-to",
        ),
        (&["replay", "--ids", "1,x"], "invalid value"),
        (
            &["replay", "--error-contains", ""],
            "--error-contains is empty",
        ),
        (&["release-key", "--topic", "t"], "--key"),
    ];
    for (args, message) in cases {
        let run = cli(&config, args);
        assert_eq!(run.code, Some(2), "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(message),
            "{args:?}: expected {message:?} in: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("Error {"),
            "Debug output: {}",
            run.stderr
        );
    }
    assert_eq!(snapshot(&outbox).await, before);

    // Matching nothing is not an error.
    let run = cli(&config, &["replay", "--topic", "no-such-topic"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "no parked row matches");
    let run = cli(
        &config,
        &["skip-key", "--topic", &outbox.topic, "--key", "k9"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("no parked row holds key"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn parked_lists_counts_by_reason_and_held_keys() {
    let outbox = TestOutbox::new(1).await;
    // ids 1..15, key k(i % 5): k1 = 1, 6, 11; k2 = 2, 7, 12; k3 = 3, 8, 13.
    outbox.insert_rows(15, 5).await;
    let too_large = "Message size too large: 2000000 bytes";
    let long = format!("serialization failed: {}", "x".repeat(300));
    park(&outbox, 1, too_large, 3, true).await;
    park(&outbox, 6, too_large, 1, true).await;
    park(&outbox, 2, "schema mismatch", 1, false).await;
    park(&outbox, 3, &long, 2, true).await;

    let ops = outbox.ops();
    let all = Selector::default();
    let (rows, total) = ops.list(&all, 50).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 6]
    );
    assert_eq!(rows[0].attempts, 3);
    assert!(rows[0].holds_key && !rows[1].holds_key);
    assert_eq!(rows[0].key.as_deref(), Some("k1"));

    let mut reasons: Vec<(String, i64)> = ops
        .counts_by_reason(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.reason, r.rows))
        .collect();
    assert_eq!(reasons[0], (too_large.to_owned(), 2), "most frequent first");
    reasons.sort();
    assert_eq!(reasons.len(), 3);
    assert_eq!(reasons[1], ("schema mismatch".to_owned(), 1));
    assert_eq!(reasons[2].1, 1);
    assert_eq!(reasons[2].0.chars().count(), 120, "reasons are cut");
    assert!(long.starts_with(&reasons[2].0));

    let held = ops.held_keys(&all, 50).await.unwrap();
    let held: Vec<(&str, Vec<i64>, i64)> = held
        .iter()
        .map(|h| (h.key.as_str(), h.holding_ids.clone(), h.waiting))
        .collect();
    assert_eq!(held, vec![("k1", vec![1, 6], 1), ("k3", vec![3], 2)]);

    // Filters: case-insensitive error text, limit, time window.
    let large = Selector {
        error_contains: Some("TOO LARGE".into()),
        ..Selector::default()
    };
    let (rows, total) = ops.list(&large, 1).await.unwrap();
    assert_eq!((rows.len(), total), (1, 2));
    let future = Selector {
        created_from: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..Selector::default()
    };
    assert_eq!(ops.list(&future, 50).await.unwrap().1, 0);

    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let run = cli(&config, &["parked"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    println!("{}", run.stdout);
    for expected in [
        "parked rows matching: 4",
        "by reason:",
        "held keys",
        too_large,
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} in {}",
            run.stdout
        );
    }
    let run = cli(&config, &["parked", "--json", "--topic", &outbox.topic]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["total"], 4);
    assert_eq!(json["rows"].as_array().unwrap().len(), 4);
    assert_eq!(
        json["held_keys"][0]["holding_ids"],
        serde_json::json!([1, 6])
    );
    assert_eq!(json["held_keys"][1]["waiting"], 2);
}

/// The relay's rule, in SQL: is a pending row held back by a parked row of its key?
async fn held_back(outbox: &TestOutbox, id: i64) -> bool {
    let t = outbox.table();
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {t} p JOIN {t} r ON p.topic = r.topic AND p.key = r.key \
         WHERE r.id = $1 AND p.status = 'parked' AND p.holds_key AND p.id < r.id)"
    ))
    .bind(id)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn skip_key_releases_waiting_rows_and_keeps_the_parked_row() {
    let outbox = TestOutbox::new(1).await;
    // ids 1..6, k1 = 1, 3, 5; k0 = 2, 4, 6.
    outbox.insert_rows(6, 2).await;
    park(&outbox, 1, "record too large", 2, true).await;
    assert!(held_back(&outbox, 3).await && held_back(&outbox, 5).await);

    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let run = cli(
        &config,
        &["skip-key", "--topic", &outbox.topic, "--key", "k1"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("skipped key \"k1\"") && run.stdout.contains("now free to flow: 2"),
        "{}",
        run.stdout
    );

    let row = audit(&outbox, 1).await;
    assert_eq!(row.status, "parked");
    assert!(!row.holds_key);
    assert_eq!(row.replay_count, 0);
    assert_eq!(row.last_error.as_deref(), Some("record too large"));
    assert!(!held_back(&outbox, 3).await && !held_back(&outbox, 5).await);
    assert_eq!(outbox.count("pending").await, 5);
    let ops = outbox.ops();
    assert!(ops
        .held_keys(&Selector::default(), 50)
        .await
        .unwrap()
        .is_empty());
    // Skipping again finds nothing to skip; the row can still be replayed later.
    assert!(ops
        .skip_key(&outbox.topic, "k1", false)
        .await
        .unwrap()
        .ids
        .is_empty());
    let later = Selector {
        ids: vec![1],
        ..Selector::default()
    };
    assert_eq!(ops.replay(&later, false, false).await.unwrap(), vec![1]);
}

#[tokio::test]
async fn release_key_replays_the_holding_row() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(6, 2).await;
    park(&outbox, 1, "record too large", 7, true).await;
    park(&outbox, 2, "other key, not released", 1, true).await;
    let event_id = audit(&outbox, 1).await.event_id;

    let ops = outbox.ops();
    let change = ops.release_key(&outbox.topic, "k1", false).await.unwrap();
    assert_eq!(change.ids, vec![1]);
    assert_eq!(change.waiting, 2);

    let row = audit(&outbox, 1).await;
    assert_eq!(row.status, "pending");
    assert_eq!((row.attempts, row.replay_count), (0, 1));
    assert!(!row.holds_key && row.replayed && row.due);
    assert_eq!(row.event_id, event_id);
    assert!(!held_back(&outbox, 3).await);
    // The other key is still held.
    assert_eq!(audit(&outbox, 2).await.status, "parked");
    assert!(held_back(&outbox, 4).await);
    // The released row is now the head of its key: lowest pending id of k1.
    let head: i64 = sqlx::query_scalar(&format!(
        "SELECT min(id) FROM {} WHERE status = 'pending' AND key = 'k1'",
        outbox.table()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(head, 1);

    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let run = cli(
        &config,
        &["release-key", "--topic", &outbox.topic, "--key", "k0"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("released key \"k0\"") && run.stdout.contains("ids 2"),
        "{}",
        run.stdout
    );
    assert_eq!(outbox.count("parked").await, 0);
}

/// Produces records with an `event_id` header onto partition 0, one at a time, in order.
async fn produce(topic: &str, records: &[(&str, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, event_id) in records {
        let headers = OwnedHeaders::new().insert(Header {
            key: "event_id",
            value: Some(event_id.as_str()),
        });
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(0)
                    .key(*key)
                    .payload("opaque bytes, not JSON \u{0}")
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test]
async fn order_checker_counts_lost_duplicated_and_reordered_records() {
    let outbox = TestOutbox::new(2).await;
    // ids 1..8; key k(i % 2): k1 = 1, 3, 5, 7; k0 = 2, 4, 6, 8.
    outbox.insert_rows(8, 2).await;
    let t = outbox.table();
    sqlx::query(&format!(
        "UPDATE {t} SET status = 'delivered' WHERE id <= 6"
    ))
    .execute(&outbox.pool)
    .await
    .unwrap();
    park(&outbox, 8, "too large", 1, true).await; // 7 stays pending
    let event_ids: Vec<String> =
        sqlx::query_scalar(&format!("SELECT event_id::text FROM {t} ORDER BY id"))
            .fetch_all(&outbox.pool)
            .await
            .unwrap();
    let e = |id: usize| event_ids[id - 1].clone();
    // k1: 1, 5, 3 (out of order); k0: 2, 4, then 2 again (a duplicate, not a reorder);
    // 6 delivered but never produced (lost); one record the outbox never had (unknown).
    produce(
        &outbox.topic,
        &[
            ("k1", e(1)),
            ("k0", e(2)),
            ("k1", e(5)),
            ("k1", e(3)),
            ("k0", e(4)),
            ("k0", e(2)),
            ("k9", Uuid::new_v4().to_string()),
        ],
    )
    .await;

    let report = order_check::check(
        &outbox.pool,
        &outbox.table_name(),
        &kafka_bootstrap(),
        &outbox.topic,
    )
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.records, 7);
    assert_eq!(report.distinct_event_ids, 6);
    assert_eq!(report.duplicates, 1);
    assert_eq!((report.lost, report.lost_ids.clone()), (1, vec![6]));
    assert_eq!(report.reordered, 1);
    assert!(
        report.reordered_examples[0].contains("\"k1\"")
            && report.reordered_examples[0].contains("id 3 at offset 3 after id 5"),
        "{:?}",
        report.reordered_examples
    );
    assert_eq!(report.unknown, 1);
    assert_eq!((report.pending, report.parked), (1, 1));
    assert!(!report.is_ok());

    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let run = cli(&config, &["check-order", "--topic", &outbox.topic]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    let run = cli(
        &config,
        &["check-order", "--topic", &outbox.topic, "--json"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["lost_ids"], serde_json::json!([6]));

    // A clean run: the real relay over several partitions.
    let clean = TestOutbox::new(3).await;
    clean.insert_rows(300, 17).await;
    relay_until_delivered(&clean, 300).await;
    let report = order_check::check(
        &clean.pool,
        &clean.table_name(),
        &kafka_bootstrap(),
        &clean.topic,
    )
    .await
    .unwrap();
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.distinct_event_ids), (300, 300));
    assert_eq!((report.lost, report.unknown, report.pending), (0, 0, 0));
    let dir = tempfile::tempdir().unwrap();
    let config = clean.config_file(&dir, &kafka_bootstrap(), "");
    let run = cli(&config, &["check-order", "--topic", &clean.topic]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("verdict:    OK"), "{}", run.stdout);
    assert_eq!(consume_all(&clean.topic).await.len(), 300);
}

#[tokio::test]
async fn concurrent_replays_change_each_parked_row_once() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(400, 10).await;
    sqlx::query(&format!(
        "UPDATE {} SET status = 'parked', last_error = 'boom', holds_key = (id % 2 = 0)",
        outbox.table()
    ))
    .execute(&outbox.pool)
    .await
    .unwrap();
    let ops = outbox.ops();
    let all = Selector::default();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (ops, all) = (ops.clone(), all.clone());
            tokio::spawn(async move { ops.replay(&all, true, false).await.unwrap() })
        })
        .collect();
    let mut replayed = Vec::new();
    for run in runs {
        replayed.extend(run.await.unwrap());
    }
    replayed.sort_unstable();
    assert_eq!(replayed, (1..=400).collect::<Vec<i64>>(), "each row once");
    let counts: Vec<(i32, i64)> = sqlx::query_as(&format!(
        "SELECT replay_count, count(*) FROM {} GROUP BY 1",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(counts, vec![(1, 400)]);
}
