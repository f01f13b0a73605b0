//! Fault 3 of issue 8, end to end: numbers are never changed in flight. Rows whose payloads hold
//! 30-digit integers, 64-bit integers past 2^53 and decimals with more digits than an `f64`
//! carries are relayed on real Kafka through the registry double, and the records are decoded
//! (byte by byte, with apache_avro, and with confluent-kafka's own deserializers) and compared
//! digit by digit; a long out of range or a decimal with too many places is parked with a
//! reason naming the field, while a later sentinel row is delivered.
//!
//! Payloads are inserted as JSON *text* (`$3::jsonb`), so the test does not depend on how the
//! test itself parses numbers.

// `from_avro_datum` is deprecated in apache-avro 0.22; the one-call form keeps this short.
#![allow(deprecated)]

use std::time::Duration;

use outbox_relay::config::Format;
use outbox_relay_testkit::SchemaRegistryDouble;
use serde_json::{json, Value};

use crate::harness::{consume_all, decode_with_confluent, registry_config, topic, TestOutbox};
use crate::harness::{Record, RunningRelay};

const BIG: &str = "123456789012345678901234567890";

const AVRO_PAYMENT: &str = r#"{
  "type": "record", "name": "PaymentTaken", "namespace": "it.numbers",
  "fields": [
    {"name": "id", "type": "long"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 9}},
    {"name": "rate", "type": "double"},
    {"name": "meta", "type": "string", "outbox.json": true}
  ]
}"#;

const JSON_LEDGER: &str = r#"{
  "type": "object",
  "properties": {
    "big": {"type": "integer", "minimum": 123456789012345678901234567889},
    "price": {"type": "number"},
    "tiny": {"type": "number"}
  },
  "required": ["big"]
}"#;

const PROTO_COUNTER: &str = r#"syntax = "proto3";
package it.numbers;

message Counter {
  int64 signed = 1;
  uint64 unsigned = 2;
  double ratio = 3;
}
"#;

/// Inserts a row with `payload` given as JSON text on `topic`; returns its id.
async fn insert_text(outbox: &TestOutbox, topic: &str, key: &str, payload: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "INSERT INTO {} (topic, key, payload) VALUES ($1, $2, $3::jsonb) RETURNING id",
        outbox.table()
    ))
    .bind(topic)
    .bind(key)
    .bind(payload)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// The payload of row `id` as Postgres prints it (what the relay reads).
async fn stored_text(outbox: &TestOutbox, id: i64) -> String {
    sqlx::query_scalar(&format!(
        "SELECT payload::text FROM {} WHERE id = $1",
        outbox.table()
    ))
    .bind(id)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// Relays everything on the outbox's topic (as `format`, `schema` registered as its value
/// subject when given) until `delivered` rows are delivered and `parked` parked.
async fn relay(
    outbox: &TestOutbox,
    double: &SchemaRegistryDouble,
    format: Format,
    delivered: i64,
    parked: i64,
) {
    let mut config = registry_config(outbox, double);
    config.topics.insert(outbox.topic.clone(), topic(format));
    let relay = RunningRelay::start(&config);
    outbox
        .wait_counts(delivered, parked, Duration::from_secs(60))
        .await;
    relay.stop().await;
}

fn value_of(record: &Record) -> &[u8] {
    record.value.as_deref().expect("a value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_json_and_json_schema_records_carry_the_payloads_exact_text() {
    let double = SchemaRegistryDouble::start().await;
    let payload = format!(
        r#"{{"big": {BIG}, "price": 12345678901234567.89, "tiny": 0.1000000000000000055511151231257827}}"#
    );

    let raw = TestOutbox::new(1).await;
    let id = insert_text(&raw, &raw.topic, "k", &payload).await;
    relay(&raw, &double, Format::RawJson, 1, 0).await;
    let records = consume_all(&raw.topic).await;
    let sent = std::str::from_utf8(value_of(&records[0])).unwrap();
    assert_eq!(
        sent,
        stored_text(&raw, id).await,
        "raw-json sends the text as stored"
    );
    assert!(sent.contains(BIG) && sent.contains("0.1000000000000000055511151231257827"));

    let js = TestOutbox::new(1).await;
    double.register(&format!("{}-value", js.topic), "JSON", JSON_LEDGER);
    let id = insert_text(&js, &js.topic, "k", &payload).await;
    relay(&js, &double, Format::JsonSchema, 1, 0).await;
    let records = consume_all(&js.topic).await;
    let sent = std::str::from_utf8(&value_of(&records[0])[5..]).unwrap();
    assert_eq!(
        sent,
        stored_text(&js, id).await,
        "json-schema sends the text as stored"
    );
    assert!(sent.contains(BIG), "{sent}");
    let decoded = decode_with_confluent(&double.url(), &js.topic, "json-schema").await;
    assert_eq!(decoded.len(), 1, "{decoded:?}");
    // confluent-kafka's JSONDeserializer parses with Python's json: integers exactly.
    assert_eq!(decoded[0]["value"]["big"].to_string(), BIG, "{decoded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_keep_every_digit_of_longs_decimals_and_free_form_numbers() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let schema_id = double.register(&format!("{}-value", outbox.topic), "AVRO", AVRO_PAYMENT);
    let payload = format!(
        r#"{{"id": 9007199254740993, "amount": 12345678901234567890.123456789, "rate": 0.1,
            "meta": {{"big": {BIG}, "price": 1.50}}}}"#
    );
    insert_text(&outbox, &outbox.topic, "k", &payload).await;
    relay(&outbox, &double, Format::Avro, 1, 0).await;

    let records = consume_all(&outbox.topic).await;
    assert_eq!(records[0].schema_id(), schema_id);
    let schema = apache_avro::Schema::parse_str(AVRO_PAYMENT).unwrap();
    let datum =
        apache_avro::from_avro_datum(&schema, &mut &value_of(&records[0])[5..], None).unwrap();
    let apache_avro::types::Value::Record(fields) = datum else {
        panic!("a record: {datum:?}")
    };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(
        field("id"),
        apache_avro::types::Value::Long(9_007_199_254_740_993)
    );
    let apache_avro::types::Value::Decimal(amount) = field("amount") else {
        panic!("a decimal")
    };
    let bytes: Vec<u8> = (&amount).try_into().unwrap();
    let unscaled = bytes.iter().fold(0_i128, |n, b| (n << 8) | i128::from(*b));
    assert_eq!(unscaled, 12_345_678_901_234_567_890_123_456_789);
    let meta = format!(r#"{{"big":{BIG},"price":1.50}}"#);
    assert_eq!(field("meta"), apache_avro::types::Value::String(meta));

    // confluent-kafka's AvroDeserializer reads the same decimal (decode.py prints it as text).
    let decoded = decode_with_confluent(&double.url(), &outbox.topic, "avro").await;
    assert_eq!(
        decoded[0]["value"]["amount"],
        json!("12345678901234567890.123456789"),
        "{decoded:?}"
    );
    assert_eq!(decoded[0]["value"]["id"].to_string(), "9007199254740993");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_keep_64_bit_integers_exact_however_they_are_written() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    double.register(
        &format!("{}-value", outbox.topic),
        "PROTOBUF",
        PROTO_COUNTER,
    );
    let payload =
        r#"{"signed": 9007199254740993.0, "unsigned": 18446744073709551615, "ratio": 2.50}"#;
    insert_text(&outbox, &outbox.topic, "k", payload).await;
    relay(&outbox, &double, Format::Protobuf, 1, 0).await;

    let decoded = decode_with_confluent(&double.url(), &outbox.topic, "protobuf").await;
    assert_eq!(decoded.len(), 1, "{decoded:?}");
    // MessageToDict prints 64-bit integers as strings.
    let value: &Value = &decoded[0]["value"];
    assert_eq!(value["signed"], json!("9007199254740993"), "{value}");
    assert_eq!(value["unsigned"], json!("18446744073709551615"), "{value}");
    assert_eq!(value["ratio"], json!(2.5), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_a_field_cannot_hold_are_parked_naming_the_field_and_later_rows_flow() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    double.register(&format!("{}-value", outbox.topic), "AVRO", AVRO_PAYMENT);
    let long = insert_text(
        &outbox,
        &outbox.topic,
        "a",
        r#"{"id": 9223372036854775808, "amount": "1", "rate": 1, "meta": {}}"#,
    )
    .await;
    let decimal = insert_text(
        &outbox,
        &outbox.topic,
        "b",
        r#"{"id": 1, "amount": 0.1234567891, "rate": 1, "meta": {}}"#,
    )
    .await;
    let mut config = registry_config(&outbox, &double);
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::Avro));
    let relay = RunningRelay::start(&config);
    let topic_name = outbox.topic.clone();
    outbox
        .deliver_sentinel(
            &topic_name,
            json!({"id": 2, "amount": "2.5", "rate": 0.5, "meta": null}),
        )
        .await;
    relay.stop().await;

    let row = outbox.row(long).await;
    assert_eq!(row.status, "parked", "{row:?}");
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.contains("field `id`: 9223372036854775808 is out of range for a long"),
        "{reason}"
    );
    let row = outbox.row(decimal).await;
    assert_eq!(row.status, "parked", "{row:?}");
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.contains("field `amount`: `0.1234567891` has more than 9 decimal places")
            && reason.contains("decimal(38, 9)")
            && reason.contains("refusing to round"),
        "{reason}"
    );
    let records = consume_all(&outbox.topic).await;
    assert_eq!(records.len(), 1, "only the sentinel was produced");
}
