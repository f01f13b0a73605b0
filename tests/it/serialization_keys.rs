//! Registry-serialized keys (`key_format = "registry"`): the key goes through the latest schema
//! of `{topic}-key`, and confluent-kafka's own deserializer reads it back.

use std::time::Duration;

use outbox_relay::config::{Format, KeyFormat, TopicConfig};
use outbox_relay_testkit::SchemaRegistryDouble;
use serde_json::json;

use crate::harness::{
    consume_all, decode_with_confluent_keys, registry_config, Row, RunningRelay, TestOutbox,
};

const VALUE: &str = r#"{"type": "record", "name": "Keyed", "namespace": "it.keys",
  "fields": [{"name": "n", "type": "long"}]}"#;
const KEY_RECORD: &str = r#"{"type": "record", "name": "OrderKey", "namespace": "it.keys",
  "fields": [{"name": "region", "type": "string"}, {"name": "order", "type": "long"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_keys_are_framed_with_the_key_subjects_schema_and_decode_with_confluent() {
    let outbox = TestOutbox::new(2).await;
    let double = SchemaRegistryDouble::start().await;
    double.register(&format!("{}-value", outbox.topic), "AVRO", VALUE);
    let key_id = double.register(&format!("{}-key", outbox.topic), "AVRO", "\"string\"");
    let mut config = registry_config(&outbox, &double);
    config.topics.insert(
        outbox.topic.clone(),
        TopicConfig {
            format: Some(Format::Avro),
            key_format: Some(KeyFormat::Registry),
            ..TopicConfig::default()
        },
    );
    let rows: Vec<Row> = (0..6)
        .map(|n| {
            Row::new(
                &outbox.topic,
                Some(&format!("order-{}", n % 3)),
                json!({"n": n}),
            )
        })
        .collect();
    outbox.insert_all(&rows).await;
    let relay = RunningRelay::start(&config);
    outbox.wait_counts(6, 0, Duration::from_secs(60)).await;
    relay.stop().await;

    for record in consume_all(&outbox.topic).await {
        let key = record.key.as_deref().expect("a key");
        assert_eq!(key[0], 0, "magic byte");
        assert_eq!(u32::from_be_bytes([key[1], key[2], key[3], key[4]]), key_id);
    }
    let mut keys: Vec<String> =
        decode_with_confluent_keys(&double.url(), &outbox.topic, "avro", "avro")
            .await
            .iter()
            .map(|line| line["key"].as_str().expect("decoded string key").to_owned())
            .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["order-0", "order-0", "order-1", "order-1", "order-2", "order-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_fits_no_key_schema_is_parked_and_a_json_key_fits_a_record_key_schema() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    double.register(&format!("{}-value", outbox.topic), "AVRO", VALUE);
    double.register(&format!("{}-key", outbox.topic), "AVRO", KEY_RECORD);
    let mut config = registry_config(&outbox, &double);
    config.topics.insert(
        outbox.topic.clone(),
        TopicConfig {
            format: Some(Format::Avro),
            key_format: Some(KeyFormat::Registry),
            ..TopicConfig::default()
        },
    );
    outbox
        .insert_all(&[
            Row::new(
                &outbox.topic,
                Some(r#"{"region": "eu", "order": 7}"#),
                json!({"n": 1}),
            ),
            Row::new(&outbox.topic, Some("plain-text-key"), json!({"n": 2})),
        ])
        .await;
    let relay = RunningRelay::start(&config);
    outbox.wait_counts(1, 1, Duration::from_secs(60)).await;
    relay.stop().await;

    let states = outbox.rows().await;
    assert_eq!(states[0].status, "delivered", "{states:#?}");
    assert_eq!(states[1].status, "parked", "{states:#?}");
    let reason = states[1].last_error.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!("{}-key", outbox.topic)),
        "the reason names the key subject: {reason}"
    );
    let decoded = decode_with_confluent_keys(&double.url(), &outbox.topic, "avro", "avro").await;
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0]["key"], json!({"region": "eu", "order": 7}));
}
