//! Failure handling on the real broker: a transient failure that passes, poison rows of several
//! kinds (parked with reasons, their keys held or skipped per policy, released by operators),
//! dead letters, and head-of-line blocking.

use std::time::{Duration, Instant};

use crate::harness::{
    assert_marks_in_key_order, create_topic, create_topic_with, init_logs, kafka_bootstrap,
    read_records, set_property, RunningRelay, TestOutbox,
};
use outbox_relay::config::{Config, Format, OnParked, TopicConfig};
use outbox_relay::order_check;
use outbox_relay_testkit::SchemaRegistryDouble;

/// A topic with one partition and the given topic configs.
async fn create_topic_configured(name: &str, configs: &[(&str, &str)]) {
    create_topic_with(&kafka_bootstrap(), name, 1, configs).await;
}

/// A JSON payload whose text is about `bytes` long and does not compress.
fn big_payload(bytes: usize) -> serde_json::Value {
    let mut s = String::with_capacity(bytes);
    while s.len() < bytes {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    serde_json::json!({ "blob": s })
}

async fn pending_ids(outbox: &TestOutbox, ids: &[i64]) -> usize {
    let mut n = 0;
    for &id in ids {
        n += usize::from(outbox.row(id).await.status == "pending");
    }
    n
}

fn with_topic(mut config: Config, topic: &str, t: TopicConfig) -> Config {
    config.topics.insert(topic.to_owned(), t);
    config
}

/// The real transient failure: the topic does not exist yet (auto-creation is off), so
/// librdkafka fails the records after `message.timeout.ms`; once the topic is created, the rows
/// go on a later attempt.
///
/// (`min.insync.replicas = 2` on a replication-factor-1 topic does not fail on this broker:
/// Kafka 4.1 caps the effective min ISR at the replication factor, so acks=all succeeds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_and_the_row_is_delivered_once_before_later_rows_of_its_key()
{
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let topic = format!("{}-late", outbox.topic);
    let mut config = with_topic(
        outbox.config(),
        &topic,
        TopicConfig {
            retry_base_ms: Some(200),
            retry_cap_ms: Some(1_000),
            max_attempts: Some(50),
            ..TopicConfig::default()
        },
    );
    config.kafka.delivery_timeout_ms = 1500;
    outbox.install_history().await;
    let first = outbox
        .insert(&topic, Some("k"), serde_json::json!({"key": "k", "n": 0}))
        .await;
    outbox.insert_many(&topic, "k", 4).await;
    outbox.insert_many(&topic, "other", 3).await;

    let relay = RunningRelay::start(&config);
    outbox
        .wait_until(
            Duration::from_secs(60),
            "a first failed attempt",
            || async { outbox.row(first).await.attempts >= 1 },
        )
        .await;
    let failed = outbox.row(first).await;
    println!(
        "after the first failure: {} attempts {} {:?}",
        failed.status, failed.attempts, failed.last_error
    );
    assert_eq!(failed.status, "pending");
    assert_eq!(outbox.count("delivered").await, 0);
    create_topic(&topic, 1).await;
    outbox.wait_delivered(8, Duration::from_secs(30)).await;
    relay.stop().await;

    let head = outbox.row(first).await;
    let changes = outbox.history(first).await;
    println!("row {first}: attempts {}, changes:", head.attempts);
    for c in &changes {
        println!("  {} attempts={} {:?}", c.status, c.attempts, c.last_error);
    }
    assert!(head.attempts >= 1);
    assert!(changes
        .iter()
        .filter(|c| c.status == "pending")
        .all(|c| c.last_error.is_some()));
    assert_eq!(assert_marks_in_key_order(&outbox.rows().await), 8);
    let report = order_check::check(
        &outbox.pool,
        &outbox.table_name(),
        &kafka_bootstrap(),
        &topic,
    )
    .await
    .unwrap();
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (report.records, report.duplicates),
        (8, 0),
        "each row exactly once"
    );
}

/// The registry double's subject for the avro topic gets this schema in the second phase.
const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Counted","fields":[{"name":"key","type":"string"},{"name":"n","type":"int"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_rows_are_parked_with_reasons_while_other_keys_flow_and_held_keys_wait_until_released(
) {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let raw = outbox.topic.clone();
    let avro = format!("{raw}-avro");
    create_topic(&avro, 1).await;
    let registry = SchemaRegistryDouble::start().await;
    let mut config = with_topic(
        outbox.config(),
        &avro,
        TopicConfig {
            format: Some(Format::Avro),
            ..TopicConfig::default()
        },
    );
    config.registry.url = registry.url();
    let mut strict = config.clone();
    // librdkafka refuses records above this size when they are handed to it.
    set_property(&mut strict, "message.max.bytes", "10000");

    let big = outbox.insert(&raw, Some("big"), big_payload(20_000)).await;
    let big_waiting = outbox.insert_many(&raw, "big", 3).await;
    let unencodable = outbox
        .insert(&avro, Some("a"), serde_json::json!({"key": "a", "n": 0}))
        .await;
    let avro_waiting = outbox.insert_many(&avro, "a", 2).await;
    for k in ["g1", "g2", "g3"] {
        outbox.insert_many(&raw, k, 3).await;
    }

    let relay = RunningRelay::start(&strict);
    outbox.wait_delivered(9, Duration::from_secs(60)).await;
    let big_row = outbox
        .wait_status(big, "parked", Duration::from_secs(10))
        .await;
    let avro_row = outbox
        .wait_status(unencodable, "parked", Duration::from_secs(10))
        .await;
    // Claimed after both rows were parked: the relay passed the held rows since (and stopping
    // drains every batch in flight).
    outbox.deliver_raw_sentinel().await;
    relay.stop().await;
    println!(
        "too large:   attempts {} reason {:?}",
        big_row.attempts, big_row.last_error
    );
    println!(
        "unencodable: attempts {} reason {:?}",
        avro_row.attempts, avro_row.last_error
    );
    for r in [&big_row, &avro_row] {
        assert_eq!(r.attempts, 1);
        assert!(r.holds_key);
    }
    assert!(big_row
        .last_error
        .as_deref()
        .unwrap()
        .contains("MessageSizeTooLarge"));
    assert!(avro_row
        .last_error
        .as_deref()
        .unwrap()
        .contains(&format!("{avro}-value")));
    assert_eq!(
        pending_ids(&outbox, &big_waiting).await,
        3,
        "key big is held"
    );
    assert_eq!(
        pending_ids(&outbox, &avro_waiting).await,
        2,
        "key a is held"
    );
    assert_eq!(
        outbox.count("delivered").await,
        9 + 1,
        "every other key went through, and the sentinel"
    );
    assert_eq!(read_records(&kafka_bootstrap(), &raw).len(), 9 + 1);
    assert!(read_records(&kafka_bootstrap(), &avro).is_empty());
    let held = outbox
        .ops()
        .held_keys(&Default::default(), 10)
        .await
        .unwrap();
    println!("held keys: {held:?}");
    assert_eq!(
        held.iter()
            .map(|h| (h.key.as_str(), h.waiting))
            .collect::<Vec<_>>(),
        [("big", 3), ("a", 2)]
    );

    // The causes are fixed (the size limit lifted, the schema registered); the operator
    // releases both keys and everything goes, in id order.
    registry.register(&format!("{avro}-value"), "AVRO", AVRO_SCHEMA);
    for (topic, key) in [(&raw, "big"), (&avro, "a")] {
        let change = outbox.ops().release_key(topic, key, false).await.unwrap();
        println!("release-key {topic} {key}: {change:?}");
        assert_eq!(change.ids.len(), 1);
    }
    let relay = RunningRelay::start(&config);
    outbox
        .wait_delivered(10 + 4 + 3, Duration::from_secs(60))
        .await;
    relay.stop().await;
    assert_eq!(assert_marks_in_key_order(&outbox.rows().await), 17);
    for topic in [&raw, &avro] {
        let report = order_check::check(
            &outbox.pool,
            &outbox.table_name(),
            &kafka_bootstrap(),
            topic,
        )
        .await
        .unwrap();
        println!("{topic}: {report}");
        assert!(report.is_ok() && report.duplicates == 0, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_parked_skip_later_rows_of_the_key_are_delivered_while_the_poison_row_stays_parked()
{
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let mut config = with_topic(
        outbox.config(),
        &outbox.topic,
        TopicConfig {
            on_parked: Some(OnParked::Skip),
            ..TopicConfig::default()
        },
    );
    set_property(&mut config, "message.max.bytes", "10000");
    let poison = outbox
        .insert(&outbox.topic, Some("k"), big_payload(20_000))
        .await;
    let later = outbox.insert_many(&outbox.topic, "k", 3).await;

    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(3, Duration::from_secs(60)).await;
    relay.stop().await;
    let p = outbox.row(poison).await;
    println!(
        "poison row: {} holds_key {} reason {:?}",
        p.status, p.holds_key, p.last_error
    );
    assert_eq!((p.status.as_str(), p.holds_key), ("parked", false));
    let records = read_records(&kafka_bootstrap(), &outbox.topic);
    let ns: Vec<i64> = records
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    println!("key k in Kafka: {ns:?} (rows {later:?})");
    assert_eq!(ns, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_key_on_a_hold_key_topic_lets_the_waiting_rows_through_and_the_poison_row_stays_parked(
) {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let mut config = outbox.config();
    set_property(&mut config, "message.max.bytes", "10000");
    let poison = outbox
        .insert(&outbox.topic, Some("k"), big_payload(20_000))
        .await;
    let waiting = outbox.insert_many(&outbox.topic, "k", 3).await;

    let relay = RunningRelay::start(&config);
    let p = outbox
        .wait_status(poison, "parked", Duration::from_secs(60))
        .await;
    assert!(p.holds_key);
    outbox.deliver_raw_sentinel().await;
    relay.stop().await;
    assert_eq!(
        pending_ids(&outbox, &waiting).await,
        3,
        "held before skip-key"
    );
    let relay = RunningRelay::start(&config);
    let change = outbox
        .ops()
        .skip_key(&outbox.topic, "k", false)
        .await
        .unwrap();
    println!("skip-key: {change:?}");
    assert_eq!((change.ids.as_slice(), change.waiting), (&[poison][..], 3));
    outbox.wait_delivered(1 + 3, Duration::from_secs(60)).await;
    relay.stop().await;
    let p = outbox.row(poison).await;
    assert_eq!((p.status.as_str(), p.holds_key), ("parked", false));
    assert_eq!(assert_marks_in_key_order(&outbox.rows().await), 1 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_for_an_invalid_topic_name_is_parked_with_a_readable_reason() {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let mut config = outbox.config();
    // Safety net: if librdkafka only ever reports a timeout, don't wait the 300 s default.
    config.kafka.delivery_timeout_ms = 3000;
    // Migration 0004 refuses such a row at INSERT; one written before it must still be parked.
    let drop = "DROP CONSTRAINT outbox_topic_is_a_kafka_topic_name";
    sqlx::query(&format!("ALTER TABLE {} {drop}", outbox.table()))
        .execute(&outbox.pool)
        .await
        .unwrap();
    let bad = outbox
        .insert("bad topic!", Some("k"), serde_json::json!({"n": 1}))
        .await;
    let fine = outbox
        .insert(&outbox.topic, Some("k"), serde_json::json!({"n": 2}))
        .await;
    let started = Instant::now();
    let relay = RunningRelay::start(&config);
    let r = outbox
        .wait_status(bad, "parked", Duration::from_secs(60))
        .await;
    let parked_after = started.elapsed();
    outbox
        .wait_status(fine, "delivered", Duration::from_secs(60))
        .await;
    relay.stop().await;
    println!(
        "parked after {parked_after:?}: attempts {} reason {:?}",
        r.attempts, r.last_error
    );
    assert_eq!(
        r.attempts, 1,
        "parked at the first failure, not retried: {r:?}"
    );
    assert!(r.last_error.unwrap().contains("InvalidTopic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_row_is_copied_to_the_dead_letter_topic_with_its_reason_and_stays_parked() {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    // Kafka itself refuses the record: the topic takes at most 2,000 bytes per batch.
    let small = format!("{}-small", outbox.topic);
    let dlt = format!("{}-dlt", outbox.topic);
    let plain = format!("{}-plain", outbox.topic);
    create_topic_configured(&small, &[("max.message.bytes", "2000")]).await;
    create_topic_configured(&plain, &[("max.message.bytes", "2000")]).await;
    create_topic(&dlt, 1).await;
    let config = with_topic(
        outbox.config(),
        &small,
        TopicConfig {
            dead_letter_topic: Some(dlt.clone()),
            ..TopicConfig::default()
        },
    );
    let poison = outbox.insert(&small, Some("k"), big_payload(6_000)).await;
    // Both travel in the poison row's record batch, which Kafka refuses as a whole.
    let held = outbox
        .insert(&small, Some("k"), serde_json::json!({"n": 0}))
        .await;
    let fine = outbox
        .insert(&small, Some("other"), serde_json::json!({"n": 1}))
        .await;
    // Same failure on a topic without a dead-letter topic: parked, copied nowhere.
    let poison_plain = outbox.insert(&plain, Some("k"), big_payload(6_000)).await;

    let relay = RunningRelay::start(&config);
    let p = outbox
        .wait_status(poison, "parked", Duration::from_secs(60))
        .await;
    let pp = outbox
        .wait_status(poison_plain, "parked", Duration::from_secs(60))
        .await;
    outbox
        .wait_status(fine, "delivered", Duration::from_secs(60))
        .await;
    // Claimed after the parks: the held row was passed by since.
    outbox.deliver_raw_sentinel().await;
    let dead_lettered = relay
        .relay
        .counters()
        .dead_lettered
        .load(std::sync::atomic::Ordering::Relaxed);
    relay.stop().await;
    println!(
        "parked: {:?} / {:?}; dead-lettered: {dead_lettered}",
        p.last_error, pp.last_error
    );

    let copies = read_records(&kafka_bootstrap(), &dlt);
    assert_eq!(
        copies.len(),
        1,
        "one copy, of the row whose topic has a dead-letter topic"
    );
    let c = &copies[0];
    println!("dead-letter headers: {:?}", c.headers);
    let event_id: uuid::Uuid = sqlx::query_scalar(&format!(
        "SELECT event_id FROM {} WHERE id = $1",
        outbox.table()
    ))
    .bind(poison)
    .fetch_one(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(c.header("event_id"), Some(event_id.to_string().as_str()));
    assert_eq!(c.header("outbox.topic"), Some(small.as_str()));
    assert_eq!(c.header("outbox.id"), Some(poison.to_string().as_str()));
    assert_eq!(c.header("outbox.error"), p.last_error.as_deref());
    assert_eq!(c.header("outbox.attempts"), Some("1"));
    assert_eq!(c.key_str(), Some("k"));
    assert_eq!(c.json(), big_payload_of(&outbox, poison).await);
    assert_eq!(dead_lettered, 1);
    assert_eq!(outbox.row(poison).await.status, "parked", "stays parked");
    assert_eq!(
        outbox.row(held).await.status,
        "pending",
        "held behind the poison row"
    );
    assert_eq!(
        read_records(&kafka_bootstrap(), &small).len(),
        1,
        "only the fine row"
    );
    assert!(read_records(&kafka_bootstrap(), &plain).is_empty());
}

async fn big_payload_of(outbox: &TestOutbox, id: i64) -> serde_json::Value {
    sqlx::query_scalar(&format!(
        "SELECT payload FROM {} WHERE id = $1",
        outbox.table()
    ))
    .bind(id)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_a_parked_row_or_backing_off_does_not_block_other_keys() {
    init_logs();
    let outbox = TestOutbox::new(3).await;
    let mut config = outbox.config();
    set_property(&mut config, "message.max.bytes", "10000");
    // In id order: a poison row and 1,000 rows of its key; a row backing off for an hour and
    // 500 rows of its key; only then 1,000 rows of 50 other keys. Batches of 200 would be
    // filled with blocked rows if the claim applied the key rules after its LIMIT.
    let poison = outbox
        .insert(&outbox.topic, Some("stuck"), big_payload(20_000))
        .await;
    let stuck = outbox.insert_many(&outbox.topic, "stuck", 1_000).await;
    let slow = outbox
        .insert(&outbox.topic, Some("slow"), serde_json::json!({"n": 0}))
        .await;
    sqlx::query(&format!(
        "UPDATE {} SET attempts = 1, next_attempt_at = now() + interval '1 hour', \
         last_error = 'test: backing off' WHERE id = $1",
        outbox.table()
    ))
    .bind(slow)
    .execute(&outbox.pool)
    .await
    .unwrap();
    let slow_waiting = outbox.insert_many(&outbox.topic, "slow", 500).await;
    sqlx::query(&format!(
        "INSERT INTO {} (topic, key, payload) \
         SELECT $1, 'o' || (i % 50), jsonb_build_object('n', i) FROM generate_series(1, 1000) i",
        outbox.table()
    ))
    .bind(&outbox.topic)
    .execute(&outbox.pool)
    .await
    .unwrap();

    let started = Instant::now();
    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;
    let took = started.elapsed();
    outbox
        .wait_status(poison, "parked", Duration::from_secs(60))
        .await;
    // Claimed after the poison row was parked: the blocked rows were passed by since.
    outbox.deliver_raw_sentinel().await;
    relay.stop().await;
    println!("1,000 rows of other keys delivered in {took:?} behind 1,501 blocked rows");
    assert_eq!(outbox.count("delivered").await, 1_000 + 1);
    assert_eq!(pending_ids(&outbox, &stuck[..50]).await, 50);
    let still_pending: i64 = outbox.count("pending").await;
    assert_eq!(
        still_pending,
        1_000 + 1 + 500,
        "held and backing-off keys stay pending"
    );
    assert_eq!(
        outbox.row(slow).await.attempts,
        1,
        "the backing-off row was not tried early"
    );
    let _ = slow_waiting;
    assert_eq!(assert_marks_in_key_order(&outbox.rows().await), 1_000 + 1);
}
