//! Produce errors injected with librdkafka's mock cluster: what the relay writes on the row
//! (attempts, last_error, next_attempt_at, status) for retriable errors, non-retriable errors,
//! authorization errors, and how its retry delays grow.
//!
//! The mock cluster is one in-process broker; the outbox is still real Postgres.

use std::time::Duration;

use outbox_relay::config::{Config, TopicConfig};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::harness::{
    assert_marks_in_key_order, read_records, set_property, RunningRelay, TestOutbox,
};

type Mock = MockCluster<'static, DefaultProducerContext>;

/// A mock broker holding this outbox's topic (1 partition), and a relay config pointing at it.
fn mock_for(outbox: &TestOutbox, topic: TopicConfig) -> (Mock, Config) {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(&outbox.topic, 1, 1).expect("mock topic");
    let mut config = outbox.config();
    config.kafka.bootstrap_servers = mock.bootstrap_servers();
    config.kafka.metadata_timeout_ms = 2_000;
    // Let the relay see each failure quickly: librdkafka retries a retriable error once, fast.
    set_property(&mut config, "message.send.max.retries", "1");
    set_property(&mut config, "retry.backoff.ms", "10");
    set_property(&mut config, "retry.backoff.max.ms", "10");
    set_property(&mut config, "linger.ms", "20");
    config.topics.insert(outbox.topic.clone(), topic);
    (mock, config)
}

fn produce_errors(mock: &Mock, errors: &[RDKafkaRespErr]) {
    mock.request_errors(RDKafkaApiKey::Produce, errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_errors_cost_attempts_then_the_row_is_delivered_before_later_rows_of_its_key() {
    let outbox = TestOutbox::new(1).await;
    let (mock, config) = mock_for(
        &outbox,
        TopicConfig {
            retry_base_ms: Some(100),
            retry_cap_ms: Some(1_000),
            max_attempts: Some(10),
            ..TopicConfig::default()
        },
    );
    outbox.install_history().await;
    let first = outbox
        .insert(
            &outbox.topic,
            Some("k"),
            serde_json::json!({"key": "k", "n": 0}),
        )
        .await;
    let later = outbox.insert_many(&outbox.topic, "k", 4).await;
    let others = outbox.insert_many(&outbox.topic, "other", 3).await;
    // Each relay attempt meets two of them (the send and librdkafka's one retry): two failed
    // attempts, then success.
    produce_errors(
        &mock,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4],
    );

    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(8, Duration::from_secs(30)).await;
    relay.stop().await;

    let head = outbox.row(first).await;
    let changes = outbox.history(first).await;
    println!(
        "row {first}: attempts {}, last_error {:?}",
        head.attempts, head.last_error
    );
    for c in &changes {
        println!(
            "  {} attempts={} error={:?}",
            c.status, c.attempts, c.last_error
        );
    }
    assert_eq!(head.status, "delivered");
    assert!(head.attempts >= 1, "the failures were counted: {head:?}");
    let failures: Vec<_> = changes.iter().filter(|c| c.status == "pending").collect();
    assert_eq!(
        failures.len() as i32,
        head.attempts,
        "one recorded failure per attempt"
    );
    for f in &failures {
        let e = f.last_error.as_deref().unwrap_or_default();
        assert!(
            e.contains("NotEnoughReplicas") || e.to_lowercase().contains("not enough"),
            "last_error names the error: {e}"
        );
    }
    let all = outbox.rows().await;
    assert_eq!(assert_marks_in_key_order(&all), 8);

    // The mock topic itself: each row exactly once, key k's rows in id order.
    let records = read_records(&mock.bootstrap_servers(), &outbox.topic);
    assert_eq!(records.len(), 8, "every row exactly once: {records:?}");
    let k_order: Vec<i64> = records
        .iter()
        .filter(|r| r.key_str() == Some("k"))
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    println!("key k in the mock topic, by offset: {k_order:?}; others {others:?}, later {later:?}");
    assert_eq!(k_order, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retriable_error_parks_the_row_at_once_with_a_readable_reason() {
    let outbox = TestOutbox::new(1).await;
    let (mock, config) = mock_for(&outbox, TopicConfig::default());
    let relay = RunningRelay::start(&config);
    let mut parked = Vec::new();
    for (key, error) in [
        ("invalid", RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD),
        (
            "too-large",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ),
    ] {
        produce_errors(&mock, &[error]);
        let id = outbox
            .insert(&outbox.topic, Some(key), serde_json::json!({"key": key}))
            .await;
        let r = outbox
            .wait_status(id, "parked", Duration::from_secs(60))
            .await;
        println!(
            "{error:?}: row {id} parked, attempts {}, reason {:?}",
            r.attempts, r.last_error
        );
        assert_eq!(r.attempts, 1, "parked at the first failure: {r:?}");
        assert!(r.holds_key, "hold-key is the default");
        parked.push(r);
    }
    assert!(
        parked[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("InvalidRecord"),
        "{parked:?}"
    );
    assert!(
        parked[1]
            .last_error
            .as_deref()
            .unwrap()
            .contains("MessageSizeTooLarge"),
        "{parked:?}"
    );

    // The producer is still usable: a later row of a parked key waits, other keys go. The row
    // of another key, inserted after the waiting one, is the sentinel: once it is delivered
    // (and the relay stopped), the waiting row was passed by.
    let waiting = outbox
        .insert(&outbox.topic, Some("invalid"), serde_json::json!({"n": 1}))
        .await;
    let fine = outbox
        .insert(&outbox.topic, Some("fine"), serde_json::json!({"n": 2}))
        .await;
    outbox
        .wait_status(fine, "delivered", Duration::from_secs(60))
        .await;
    relay.stop().await;
    assert_eq!(outbox.row(waiting).await.status, "pending");
    let records = read_records(&mock.bootstrap_servers(), &outbox.topic);
    assert_eq!(
        records.len(),
        1,
        "only the fine row reached the mock topic: {records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_topic_is_deferred_without_attempts_while_other_topics_flow_then_delivered_in_order(
) {
    crate::harness::init_logs();
    let outbox = TestOutbox::new(1).await;
    let (mock, mut config) = mock_for(&outbox, TopicConfig::default());
    let denied = format!("{}-denied", outbox.topic);
    mock.create_topic(&denied, 1, 1).expect("mock topic");
    // The broker answers metadata for the denied topic with TOPIC_AUTHORIZATION_FAILED:
    // librdkafka fails its records with that error.
    mock.topic_error(
        &denied,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    )
    .unwrap();
    set_property(&mut config, "topic.metadata.refresh.interval.ms", "200");
    outbox.install_history().await;
    let held = outbox.insert_many(&denied, "k", 3).await;

    let relay = RunningRelay::start(&config);
    // The denied topic's rows are deferred: pending, attempts 0, a reason, a later due time.
    outbox
        .wait_until(
            Duration::from_secs(30),
            "the denied rows are deferred",
            || async {
                let r = outbox.row(held[0]).await;
                r.last_error.is_some_and(|e| e.contains("deferred"))
            },
        )
        .await;
    // Meanwhile another topic flows: a sentinel inserted after the deferral is delivered, and
    // a later row of a deferred key is held back behind its head.
    let later_of_k = outbox
        .insert(&denied, Some("k"), serde_json::json!({"n": 4}))
        .await;
    let sentinel = outbox
        .insert(&outbox.topic, Some("s"), serde_json::json!({"n": 0}))
        .await;
    outbox
        .wait_status(sentinel, "delivered", Duration::from_secs(30))
        .await;
    let deferral_changes: Vec<usize> = {
        let mut v = Vec::new();
        for &id in &held {
            v.push(outbox.history(id).await.len());
        }
        v
    };
    for &id in held.iter().chain([later_of_k].iter()) {
        let r = outbox.row(id).await;
        assert_eq!(r.status, "pending", "not parked: {r:?}");
        assert_eq!(r.attempts, 0, "no attempt burned: {r:?}");
    }
    // No busy loop: deferrals double from 1 s, so a handful of updates per row, not hundreds.
    assert!(
        deferral_changes.iter().all(|&n| n <= 10),
        "a few deferrals per row, not a tight loop: {deferral_changes:?}"
    );
    let e = outbox.row(held[0]).await.last_error.unwrap_or_default();
    assert!(
        e.contains("TopicAuthorizationFailed") || e.to_lowercase().contains("authoriz"),
        "the reason names the refusal: {e}"
    );

    // The topic is allowed again: everything is delivered, key k in id order.
    mock.topic_error(&denied, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    outbox.wait_delivered(5, Duration::from_secs(60)).await;
    relay.stop().await;
    let all = outbox.rows().await;
    assert_eq!(assert_marks_in_key_order(&all), 5);
    for r in &all {
        assert_eq!(r.attempts, 0, "no attempt burned: {r:?}");
    }
    let records = read_records(&mock.bootstrap_servers(), &denied);
    let order: Vec<i64> = records
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, [1, 2, 3, 4], "key k in id order, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_double_within_equal_jitter_bounds_and_the_row_is_parked_after_max_attempts() {
    let outbox = TestOutbox::new(1).await;
    let (mock, mut config) = mock_for(
        &outbox,
        TopicConfig {
            retry_base_ms: Some(400),
            max_attempts: Some(3),
            ..TopicConfig::default()
        },
    );
    // Failures surface the way they do in production: librdkafka retries on its own until the
    // message times out (here after 1 s), then the relay sees the failure.
    config.kafka.properties.remove("message.send.max.retries");
    set_property(&mut config, "retry.backoff.ms", "50");
    set_property(&mut config, "retry.backoff.max.ms", "50");
    config.kafka.delivery_timeout_ms = 1000;
    outbox.install_history().await;
    produce_errors(
        &mock,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let id = outbox
        .insert(&outbox.topic, Some("k"), serde_json::json!({"n": 1}))
        .await;

    let relay = RunningRelay::start(&config);
    let parked = outbox
        .wait_status(id, "parked", Duration::from_secs(30))
        .await;
    relay.stop().await;
    mock.clear_request_errors(RDKafkaApiKey::Produce);

    let changes = outbox.history(id).await;
    let mut delays = Vec::new();
    for c in &changes {
        let delay = (c.next_attempt_at - c.at).num_milliseconds();
        println!(
            "attempts={} {} at {} next_attempt_at - failure = {delay} ms; {:?}",
            c.attempts,
            c.status,
            c.at.format("%H:%M:%S%.3f"),
            c.last_error
        );
        if c.status == "pending" {
            delays.push(delay);
        }
    }
    for w in changes.windows(2) {
        println!(
            "  between attempts {} and {}: {} ms",
            w[0].attempts,
            w[1].attempts,
            (w[1].at - w[0].at).num_milliseconds()
        );
    }
    assert_eq!(
        changes.len(),
        3,
        "two reschedules then the park: {changes:?}"
    );
    assert_eq!(delays.len(), 2);
    // Equal jitter: after failure n the delay is in [d/2, d] with d = 400 ms × 2^(n-1). A few ms
    // of slack for the gap between the relay's UPDATE and the trigger's clock.
    let slack = 15;
    assert!(
        (200 - slack..=400 + slack).contains(&delays[0]),
        "first delay {} ms",
        delays[0]
    );
    assert!(
        (400 - slack..=800 + slack).contains(&delays[1]),
        "second delay {} ms",
        delays[1]
    );
    println!("delay growth: ×{:.2}", delays[1] as f64 / delays[0] as f64);
    assert_eq!(parked.attempts, 3);
    let reason = parked.last_error.unwrap_or_default();
    println!("parked: {reason}");
    assert!(reason.starts_with("gave up after 3 attempts: "), "{reason}");
}

/// An out-of-order sequence number is fatal for librdkafka's idempotent producer: every later
/// record fails with `Fatal`. The relay must put a new producer in its place, not take it for an
/// outage forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_fatal_producer_error_the_relay_replaces_its_producer_and_delivers_in_order() {
    crate::harness::init_logs();
    let outbox = TestOutbox::new(1).await;
    let (mock, config) = mock_for(&outbox, TopicConfig::default());
    outbox.install_history().await;
    produce_errors(
        &mock,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let first = outbox
        .insert(
            &outbox.topic,
            Some("k"),
            serde_json::json!({"key": "k", "n": 0}),
        )
        .await;
    outbox.insert_many(&outbox.topic, "k", 3).await;
    outbox.insert_many(&outbox.topic, "j", 3).await;

    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(7, Duration::from_secs(60)).await;
    relay.stop().await;

    let head = outbox.row(first).await;
    println!(
        "row {first}: attempts {} changes {:?}",
        head.attempts,
        outbox
            .history(first)
            .await
            .iter()
            .map(|c| (&c.status, c.attempts, c.last_error.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        head.attempts <= 1,
        "the fatal error burned at most the attempt that met it"
    );
    assert_eq!(assert_marks_in_key_order(&outbox.rows().await), 7);
    let records = read_records(&mock.bootstrap_servers(), &outbox.topic);
    assert_eq!(records.len(), 7, "each row once");
}
