//! The spine: committed rows reach Kafka intact and are marked where they landed.

use std::collections::HashSet;
use std::time::Duration;

use outbox_relay::relay::Relay;
use tokio_util::sync::CancellationToken;

use crate::harness::{
    consume_all, event_id_counts, relay_until_delivered, RunningRelay, TestOutbox,
};

#[tokio::test]
async fn committed_rows_are_delivered_intact_and_rolled_back_rows_never_appear() {
    let outbox = TestOutbox::new(3).await;
    let insert = format!(
        "INSERT INTO {} (topic, key, payload, headers) VALUES ($1, $2, $3, $4)",
        outbox.table()
    );
    // Committed: keyed and unkeyed rows, with headers, one overriding the default `source`.
    let mut tx = outbox.pool.begin().await.unwrap();
    let committed = [
        (
            Some("conv-1"),
            serde_json::json!({"type": "conversation_created", "n": 1}),
            serde_json::json!({"correlation_id": "corr-1"}),
        ),
        (
            Some("conv-1"),
            serde_json::json!({"type": "message_added", "nested": {"a": [1, 2, 3]}}),
            serde_json::json!({}),
        ),
        (
            None,
            serde_json::json!({"unkeyed": true, "text": "héllo ✓"}),
            serde_json::json!({"source": "billing"}),
        ),
    ];
    for (key, payload, headers) in &committed {
        sqlx::query(&insert)
            .bind(&outbox.topic)
            .bind(key)
            .bind(payload)
            .bind(headers)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    // Rolled back: must never be produced.
    let mut tx = outbox.pool.begin().await.unwrap();
    sqlx::query(&insert)
        .bind(&outbox.topic)
        .bind("ghost")
        .bind(serde_json::json!({"rolled_back": true}))
        .bind(serde_json::json!({}))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // Committed after the rollback: once it is delivered, the relay has claimed past the
    // rolled-back row's id.
    let relay = RunningRelay::start(&outbox.config());
    let sentinel = outbox.deliver_raw_sentinel().await;
    relay.stop().await;

    let records = consume_all(&outbox.topic).await;
    assert_eq!(
        records.len(),
        4,
        "three rows and the sentinel: {records:#?}"
    );
    assert!(records
        .iter()
        .all(|r| r.json().get("rolled_back").is_none()));
    let ids: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT event_id::text, payload::text FROM {} ORDER BY id",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(outbox.row(sentinel).await.event_id.to_string(), ids[3].0);
    for ((key, payload, headers), (event_id, _)) in committed.iter().zip(&ids) {
        let r = records
            .iter()
            .find(|r| r.event_id() == event_id)
            .unwrap_or_else(|| panic!("{event_id} not in Kafka"));
        assert_eq!(r.key_str(), *key);
        assert_eq!(&r.json(), payload);
        // event_id first, then the defaults (unless the row overrides them), then the row's.
        assert_eq!(r.headers[0].0, "event_id");
        let expected_source = headers
            .get("source")
            .and_then(|s| s.as_str())
            .unwrap_or("outbox-relay");
        assert_eq!(r.header("source"), Some(expected_source));
        assert_eq!(r.header("version"), Some("1.0.0"));
        for (name, value) in headers.as_object().unwrap() {
            assert_eq!(r.header(name), value.as_str(), "header {name}");
        }
        assert_eq!(r.headers.iter().filter(|(k, _)| k == "source").count(), 1);
    }
    // Same-key rows land in id order in their partition.
    let conv: Vec<_> = records
        .iter()
        .filter(|r| r.key_str() == Some("conv-1"))
        .collect();
    assert_eq!(conv[0].json()["type"], "conversation_created");
    assert!(conv[0].offset < conv[1].offset && conv[0].partition == conv[1].partition);
}

#[tokio::test]
async fn delivered_row_records_the_partition_and_offset_where_a_consumer_finds_it() {
    let outbox = TestOutbox::new(4).await;
    outbox.insert_rows(500, 37).await;
    relay_until_delivered(&outbox, 500).await;

    let positions = outbox.delivered_positions().await;
    let records = consume_all(&outbox.topic).await;
    assert_eq!(positions.len(), 500);
    assert_eq!(records.len(), 500);
    for r in &records {
        assert_eq!(
            positions.get(r.event_id()),
            Some(&(r.partition, r.offset)),
            "row {} recorded elsewhere than Kafka has it",
            r.event_id()
        );
    }
    let delivered_at_missing: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE delivered_at IS NULL OR last_error IS NOT NULL",
        outbox.table()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(delivered_at_missing, 0);
}

#[tokio::test]
async fn two_relays_on_one_table_deliver_every_row_once() {
    let outbox = TestOutbox::new(3).await;
    outbox.insert_rows(5_000, 50).await;
    let stop = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let relay = std::sync::Arc::new(Relay::new(&outbox.config()).unwrap());
            let handle = tokio::spawn({
                let (relay, stop) = (relay.clone(), stop.clone());
                async move { relay.run(stop).await }
            });
            (relay, handle)
        })
        .collect();
    outbox.wait_delivered(5_000, Duration::from_secs(90)).await;
    stop.cancel();
    let mut per_relay = Vec::new();
    for (relay, handle) in relays {
        handle.await.unwrap().unwrap();
        per_relay.push(
            relay
                .counters()
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    println!("rows delivered by each relay: {per_relay:?}");
    assert_eq!(
        per_relay.iter().sum::<u64>(),
        5_000,
        "a row was delivered twice or lost"
    );

    let records = consume_all(&outbox.topic).await;
    let counts = event_id_counts(&records);
    let produced_twice = counts.values().filter(|&&c| c > 1).count();
    assert_eq!(produced_twice, 0, "rows produced more than once");
    assert_eq!(counts.len(), 5_000);
    let in_db: HashSet<String> = outbox.delivered_positions().await.into_keys().collect();
    assert_eq!(in_db, counts.into_keys().collect::<HashSet<_>>());
}

#[tokio::test]
async fn trace_context_and_correlation_headers_reach_the_kafka_record_unchanged() {
    let outbox = TestOutbox::new(1).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = serde_json::json!({
        "traceparent": traceparent,
        "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "correlation_id": "corr-42",
    });
    sqlx::query(&format!(
        "INSERT INTO {} (topic, key, payload, headers) VALUES ($1, 'k', '{{}}', $2)",
        outbox.table()
    ))
    .bind(&outbox.topic)
    .bind(&headers)
    .execute(&outbox.pool)
    .await
    .unwrap();
    relay_until_delivered(&outbox, 1).await;

    let records = crate::harness::read_records(&outbox.bootstrap, &outbox.topic);
    assert_eq!(records.len(), 1);
    for name in ["traceparent", "tracestate", "correlation_id"] {
        let got = records[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        assert_eq!(got, headers[name].as_str(), "header {name}");
    }
}
