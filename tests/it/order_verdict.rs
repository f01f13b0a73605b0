//! `check-order` says OK only when it should: rows never sent, and rows whose stored
//! (partition, offset) holds another record, fail it; a clean run passes.

use std::process::Command;

use outbox_relay::order_check::{self, OrderReport};
use outbox_relay::outbox::TableName;

use crate::harness::{kafka_bootstrap, relay_until_delivered, TestOutbox};

async fn report(outbox: &TestOutbox) -> OrderReport {
    let table = TableName::new(&outbox.schema, "outbox").unwrap();
    order_check::check(&outbox.pool, &table, &kafka_bootstrap(), &outbox.topic)
        .await
        .unwrap()
}

/// `check-order --topic <topic> <extra>`: exit code and stdout.
fn cli(outbox: &TestOutbox, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let out = Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["--config", config.to_str().unwrap(), "check-order"])
        .args(["--topic", &outbox.topic])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn a_clean_run_is_ok_and_a_row_left_pending_fails_the_check_unless_allowed() {
    let outbox = TestOutbox::new(2).await;
    outbox.insert_rows(50, 7).await;
    relay_until_delivered(&outbox, 50).await;
    let clean = report(&outbox).await;
    assert!(clean.is_ok(), "{clean}");
    assert_eq!((clean.records, clean.mismatched), (50, 0));
    let (code, text) = cli(&outbox, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("verdict:    OK"), "{text}");

    // A row that never reached Kafka (as if stuck, its record never produced).
    outbox.insert_rows(1, 1).await;
    let stuck = report(&outbox).await;
    assert_eq!((stuck.pending, stuck.lost), (1, 0));
    assert!(!stuck.is_ok(), "{stuck}");
    let (code, text) = cli(&outbox, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED (pending 1)"), "{text}");
    let (code, text) = cli(&outbox, &["--allow-pending"]);
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn a_row_whose_stored_offset_points_at_another_record_fails_the_check() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(3, 1).await;
    relay_until_delivered(&outbox, 3).await;
    let first: i64 = sqlx::query_scalar(&format!("SELECT min(id) FROM {}", outbox.table()))
        .fetch_one(&outbox.pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE {} SET kafka_offset = kafka_offset + 1 WHERE id = $1",
        outbox.table()
    ))
    .bind(first)
    .execute(&outbox.pool)
    .await
    .unwrap();
    let r = report(&outbox).await;
    assert_eq!(
        (r.mismatched, r.mismatched_ids.clone()),
        (1, vec![first]),
        "{r}"
    );
    assert_eq!(r.lost, 0);
    assert!(!r.is_ok(), "{r}");
    let (code, text) = cli(
        &outbox,
        &["--allow-pending", "--allow-parked", "--allow-unknown"],
    );
    assert_eq!(code, Some(1), "no flag allows a mismatch:\n{text}");
    assert!(text.contains("mismatched: 1"), "{text}");
}
