//! Schemas with Confluent schema references: the relay fetches what they reference (by
//! subject and version) and encodes with it; confluent-kafka's deserializers, which resolve the
//! references on their own, decode the records.

use std::time::Duration;

use outbox_relay::config::Format;
use outbox_relay_testkit::SchemaRegistryDouble;
use serde_json::{json, Value};

use crate::harness::TestOutbox;
use crate::harness::{decode_with_confluent, registry_config, topic, Row, RunningRelay};

/// Registers `money` under subject `money` and `priced` (referring to it as `name`) as the
/// topic's value schema, relays one row per payload, and returns the decoded records.
async fn relay_with_reference(
    format: Format,
    schema_type: &str,
    decode_format: &str,
    (name, money): (&str, &str),
    priced: &str,
    payloads: &[Value],
) -> (Vec<Value>, u32) {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let money_subject = format!("{}-money", outbox.topic);
    double.register(&money_subject, schema_type, money);
    let id = double.register_with_references(
        &format!("{}-value", outbox.topic),
        schema_type,
        priced,
        &[(name, &money_subject, 1)],
    );
    let mut config = registry_config(&outbox, &double);
    config.topics.insert(outbox.topic.clone(), topic(format));
    let rows: Vec<Row> = payloads
        .iter()
        .map(|p| Row::new(&outbox.topic, Some("k"), p.clone()))
        .collect();
    outbox.insert_all(&rows).await;
    let relay = RunningRelay::start(&config);
    outbox
        .wait_counts(rows.len() as i64, 0, Duration::from_secs(60))
        .await;
    relay.stop().await;
    let lines = decode_with_confluent(&double.url(), &outbox.topic, decode_format).await;
    (lines, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avro_schema_using_a_named_type_of_another_subject_is_relayed_and_decoded_by_confluent()
{
    let money = r#"{"type": "record", "name": "Money", "namespace": "it.refs",
                    "fields": [{"name": "cents", "type": "long"}]}"#;
    let priced = r#"{"type": "record", "name": "Priced", "namespace": "it.refs",
                     "fields": [{"name": "sku", "type": "string"},
                                {"name": "price", "type": "it.refs.Money"}]}"#;
    let payloads = [
        json!({"sku": "a-1", "price": {"cents": 1999}}),
        json!({"sku": "b-2", "price": {"cents": 5}}),
    ];
    let (lines, id) = relay_with_reference(
        Format::Avro,
        "AVRO",
        "avro",
        ("it.refs.Money", money),
        priced,
        &payloads,
    )
    .await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, payload) in lines.iter().zip(&payloads) {
        assert_eq!(line["schema_id"], json!(id), "{line}");
        assert_eq!(&line["value"], payload, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_schema_importing_another_subject_is_relayed_and_decoded_by_confluent() {
    let money = "syntax = \"proto3\";\npackage it.refs;\nmessage Money { int64 cents = 1; }\n";
    let priced = "syntax = \"proto3\";\npackage it.refs;\nimport \"it/refs/money.proto\";\n\
                  message Priced { string sku = 1; it.refs.Money price = 2; }\n";
    let payloads = [json!({"sku": "a-1", "price": {"cents": 1999}})];
    let (lines, id) = relay_with_reference(
        Format::Protobuf,
        "PROTOBUF",
        "protobuf",
        ("it/refs/money.proto", money),
        priced,
        &payloads,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["schema_id"], json!(id), "{}", lines[0]);
    // The proto3 JSON mapping prints int64 as a string.
    assert_eq!(
        lines[0]["value"],
        json!({"sku": "a-1", "price": {"cents": "1999"}}),
        "{}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_schema_referring_to_another_subject_by_ref_is_validated_relayed_and_decoded() {
    let money = r#"{"type": "object", "properties": {"cents": {"type": "integer"}},
                    "required": ["cents"], "additionalProperties": false}"#;
    let priced = r#"{"title": "Priced", "type": "object",
                     "properties": {"sku": {"type": "string"}, "price": {"$ref": "money.json"}},
                     "required": ["sku", "price"], "additionalProperties": false}"#;
    let payloads = [json!({"sku": "a-1", "price": {"cents": 1999}})];
    let (lines, id) = relay_with_reference(
        Format::JsonSchema,
        "JSON",
        "json-schema",
        ("money.json", money),
        priced,
        &payloads,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["schema_id"], json!(id), "{}", lines[0]);
    assert_eq!(lines[0]["value"], payloads[0], "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_the_registry_no_longer_serves_parks_the_row_with_the_registry_reason() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let money = r#"{"type": "record", "name": "Money", "namespace": "it.gone",
                    "fields": [{"name": "cents", "type": "long"}]}"#;
    let priced = r#"{"type": "record", "name": "Priced", "namespace": "it.gone",
                     "fields": [{"name": "price", "type": "it.gone.Money"}]}"#;
    let money_subject = format!("{}-money", outbox.topic);
    double.register(&money_subject, "AVRO", money);
    double.register_with_references(
        &format!("{}-value", outbox.topic),
        "AVRO",
        priced,
        &[("it.gone.Money", &money_subject, 1)],
    );
    // A self-contained subject for the sentinel row, which must still be delivered.
    double.register("it-gone-plain", "AVRO", money);
    let deleted = reqwest::Client::new()
        .delete(format!("{}/subjects/{money_subject}", double.url()))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let mut config = registry_config(&outbox, &double);
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::Avro));
    outbox
        .insert_all(&[
            Row::new(&outbox.topic, Some("a"), json!({"price": {"cents": 1}})),
            Row::new(&outbox.topic, Some("b"), json!({"cents": 2})).subject("it-gone-plain", None),
        ])
        .await;
    let relay = RunningRelay::start(&config);
    outbox.wait_counts(1, 1, Duration::from_secs(60)).await;
    relay.stop().await;
    let rows = outbox.rows().await;
    assert_eq!(
        (rows[0].status.as_str(), rows[1].status.as_str()),
        ("parked", "delivered")
    );
    let reason = rows[0].last_error.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "reference `it.gone.Money` (subject `{money_subject}` version 1)"
        )) && reason.contains("40401"),
        "{reason}"
    );
}
