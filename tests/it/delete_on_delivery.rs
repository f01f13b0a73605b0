//! `relay.on_delivered = "delete"`: a delivered row is deleted from the outbox and its
//! coordinates appended to the delivery log, in the same transaction; `check-order` reads the
//! log.

use std::collections::HashMap;
use std::time::Duration;

use outbox_relay::config::OnDelivered;
use uuid::Uuid;

use crate::harness::{read_records, RunningRelay, TestOutbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_deleted_and_logged_where_kafka_put_them_and_the_order_check_reads_the_log(
) {
    let outbox = TestOutbox::new(3).await;
    outbox.insert_rows(300, 7).await;
    let mut config = outbox.config();
    config.relay.on_delivered = OnDelivered::Delete;
    let relay = RunningRelay::start(&config);
    outbox.wait_no_pending(Duration::from_secs(60)).await;
    relay.stop().await;

    let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", outbox.table()))
        .fetch_one(&outbox.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every delivered row is deleted from the outbox");

    let log: Vec<(Uuid, String, Option<String>, i32, i64)> = sqlx::query_as(&format!(
        "SELECT event_id, topic, key, kafka_partition, kafka_offset FROM \"{}\".outbox_delivered",
        outbox.schema
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(log.len(), 300, "one log entry per delivered row");
    // Each entry names the record Kafka holds: same event_id at that partition and offset.
    let in_kafka: HashMap<(i32, i64), String> = read_records(&outbox.bootstrap, &outbox.topic)
        .into_iter()
        .map(|r| {
            let event_id = r
                .headers
                .iter()
                .find(|(k, _)| k == "event_id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            ((r.partition, r.offset), event_id)
        })
        .collect();
    for (event_id, topic, key, partition, offset) in &log {
        assert_eq!(topic, &outbox.topic);
        assert!(key.is_some());
        assert_eq!(
            in_kafka.get(&(*partition, *offset)),
            Some(&event_id.to_string()),
            "log entry {event_id} at {partition}/{offset}"
        );
    }

    let report = outbox.check_order().await;
    assert!(report.problems().is_empty(), "{report}");
    assert_eq!(report.distinct_event_ids, 300, "{report}");
}
