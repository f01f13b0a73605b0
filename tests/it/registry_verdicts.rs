//! Issue 8, items 2 and 4: a registry answer about one row parks that row and nothing else (no
//! pause, no spin), subjects travel percent-encoded, and the schema-type check holds on the
//! cached path too.

use std::time::Duration;

use outbox_relay::config::Format;
use outbox_relay_testkit::SchemaRegistryDouble;
use serde_json::json;

use crate::harness::{consume_all, registry_config, topic, Row, RunningRelay};
use crate::harness::{create_topic, TestOutbox};

const AVRO: &str = r#"{"type": "record", "name": "N", "namespace": "it.verdicts",
  "fields": [{"name": "n", "type": "long"}]}"#;
const JSON: &str = r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_about_one_subject_parks_that_row_while_a_sentinel_behind_it_is_delivered() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let t = outbox.topic.clone();
    double.register(&format!("{t}-value"), "AVRO", AVRO);
    let mut config = registry_config(&outbox, &double);
    config.relay.concurrency = 1;
    config.registry.latest_ttl_ms = 3_600_000;
    config.topics.insert(t.clone(), topic(Format::Avro));
    let relay = RunningRelay::start(&config);
    // Warms the cache with the topic's subject, so that the sentinel needs no request.
    outbox
        .insert_all(&[Row::new(&t, Some("warm"), json!({"n": 1}))])
        .await;
    outbox.wait_counts(1, 0, Duration::from_secs(60)).await;

    // 405 was an "outage" before: the row stayed pending and the relay spun on it.
    double.fail_with(Some(405));
    let before = double.requests();
    outbox
        .insert_all(&[
            Row::new(&t, Some("bad"), json!({"n": 2})).subject("elsewhere", None),
            Row::new(&t, Some("sentinel"), json!({"n": 3})),
        ])
        .await;
    outbox.wait_counts(2, 1, Duration::from_secs(60)).await;
    let asked = double.requests() - before;
    relay.stop().await;

    let states = outbox.rows().await;
    let bad = &states[1];
    assert_eq!(bad.status, "parked", "{bad:?}");
    let reason = bad.last_error.as_deref().unwrap_or_default();
    assert!(
        reason.contains("`elsewhere`") && reason.contains("HTTP 405"),
        "{reason}"
    );
    assert_eq!(states[2].status, "delivered", "{:?}", states[2]);
    // One lookup for the parked row (a probe or two at most), not a busy loop.
    assert!(asked <= 3, "{asked} registry requests for one row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_holding_a_question_mark_and_a_slash_resolves_to_that_subject() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let t = outbox.topic.clone();
    double.register(
        "a",
        "AVRO",
        r#"{"type": "record", "name": "Other", "fields": []}"#,
    );
    let id = double.register("a?b/c", "AVRO", AVRO);
    let mut config = registry_config(&outbox, &double);
    config.topics.insert(t.clone(), topic(Format::Avro));
    outbox
        .insert_all(&[Row::new(&t, Some("k"), json!({"n": 7})).subject("a?b/c", None)])
        .await;
    let relay = RunningRelay::start(&config);
    outbox.wait_counts(1, 0, Duration::from_secs(60)).await;
    relay.stop().await;
    let records = consume_all(&t).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].schema_id(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_json_schema_id_is_refused_on_an_avro_topic_naming_the_schema_type() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let avro_topic = outbox.topic.clone();
    let json_topic = format!("{avro_topic}-json");
    create_topic(&json_topic, 1).await;
    double.register(&format!("{avro_topic}-value"), "AVRO", AVRO);
    let subject = format!("{avro_topic}-shared");
    double.register(&subject, "JSON", JSON);
    let mut config = registry_config(&outbox, &double);
    config.relay.concurrency = 1;
    config
        .topics
        .insert(avro_topic.clone(), topic(Format::Avro));
    config
        .topics
        .insert(json_topic.clone(), topic(Format::JsonSchema));
    let relay = RunningRelay::start(&config);
    outbox
        .insert_all(&[Row::new(&json_topic, Some("warm"), json!({"n": 1})).subject(&subject, None)])
        .await;
    outbox.wait_counts(1, 0, Duration::from_secs(60)).await;
    outbox
        .insert_all(&[
            Row::new(&avro_topic, Some("wrong"), json!({"n": 2})).subject(&subject, None),
            Row::new(&avro_topic, Some("sentinel"), json!({"n": 3})),
        ])
        .await;
    outbox.wait_counts(2, 1, Duration::from_secs(60)).await;
    relay.stop().await;
    let states = outbox.rows().await;
    assert_eq!(states[1].status, "parked", "{:?}", states[1]);
    let reason = states[1].last_error.as_deref().unwrap_or_default();
    assert!(
        reason.contains("is a JSON schema") && reason.contains("AVRO"),
        "{reason}"
    );
    assert_eq!(states[2].status, "delivered", "{:?}", states[2]);
    assert_eq!(consume_all(&avro_topic).await.len(), 1);
}
